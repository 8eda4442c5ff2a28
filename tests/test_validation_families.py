"""The validation-only manipulation families (models/validation_families.py) and the frame stage's
validation on them: the config option, the stream's fake copies, and the per-manipulation AUCs."""
from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch

from models.align import align_face, face_template
from models.crops import CropSpec
from models.labels import FAKE_INDEX, REAL_INDEX
from models.validation_families import (
    COPY_PARTS,
    LIQUIFY_CENTRES,
    SIDES,
    VALIDATION_FAMILIES,
    apply_validation_family,
    copy_move_part,
    face_size,
    liquify_at,
    visibly_changed,
)
from transforms.settings import ConfigError

SIZE, MARGIN = 96, 0.25
TEMPLATE = face_template(SIZE, MARGIN)
FS = face_size(TEMPLATE)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    """Texture everywhere: any moved pixel shows."""
    return np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A real portrait, aligned as the face table's crops are."""
    from pipeline.synthetic.portraits import FaceSource

    portrait = FaceSource().portrait("lfw8", 110.0)
    return align_face(portrait.image, portrait.landmarks, SIZE, MARGIN)[0]


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 0


def _near(points, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    near = np.zeros((SIZE, SIZE), bool)
    for x, y in np.atleast_2d(points):
        near |= np.hypot(xs - x, ys - y) <= radius
    return near


def _cheeks() -> np.ndarray:
    """Where the cheek patches go: below each eye, towards the mouth corner, a little outwards."""
    return np.array([TEMPLATE[i] + 0.55 * (TEMPLATE[3 + i] - TEMPLATE[i]) + (0.03 * FS * (2 * i - 1), 0)
                     for i in range(2)])


@pytest.mark.parametrize("name", VALIDATION_FAMILIES)
def test_a_family_is_deterministic_for_a_seed_and_always_visible(name, face, noise):
    before = face.copy()
    for crop in (face, noise):
        outs = [apply_validation_family(name, crop, TEMPLATE, np.random.default_rng(seed)) for seed in range(12)]
        again = apply_validation_family(name, crop, TEMPLATE, np.random.default_rng(5))
        np.testing.assert_array_equal(outs[5], again)
        assert len({o.tobytes() for o in outs}) > 6  # the seed draws the edit
        for out in outs:
            assert out.dtype == np.uint8 and out.shape == crop.shape
            assert visibly_changed(crop, out) and not np.array_equal(out, crop)
    np.testing.assert_array_equal(face, before)  # the input is not edited in place


def test_copy_move_changes_only_the_eyes_or_cheeks(noise, face):
    # An eye's ellipse reaches 0.14 face sizes across, a cheek's 0.08, feathered by up to 4 x 0.015.
    parts = _near(TEMPLATE[:2], 0.21 * FS) | _near(_cheeks(), 0.15 * FS)
    for seed in range(20):
        for crop in (noise, face):
            changed = _changed(crop, apply_validation_family("copy_move", crop, TEMPLATE, np.random.default_rng(seed)))
            assert changed.any() and not changed[~parts].any()
            assert not changed[_near(TEMPLATE[2:], 0.02 * FS)].any()  # nose tip and mouth corners stay


@pytest.mark.parametrize("side", SIDES)
def test_copy_move_pastes_the_mirrored_other_side(side):
    # Level eyes on integer pixels: the mirror is x -> 2 * 48 - x, exact.
    points = np.array([[34, 40], [62, 40], [48, 56], [37, 72], [59, 72]], np.float32)
    size = face_size(points)
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = copy_move_part(crop, points, "eye", side, feather=0.005)
    target = points[SIDES.index(side)]
    core = _near(target, 0.07 * size)
    ys, xs = np.nonzero(core)
    np.testing.assert_allclose(out[ys, xs].astype(int), crop[ys, 96 - xs].astype(int), atol=1)
    changed = _changed(crop, out)
    assert not changed[~_near(target, 0.2 * size)].any()  # the other eye, nose and mouth stay
    assert changed[core].mean() > 0.9
    with pytest.raises(ValueError, match="part must be one of eye, cheek"):
        copy_move_part(crop, points, "nose", side, 0.01)


def test_liquify_changes_only_discs_around_the_eyes_or_nose(noise, face):
    discs = _near(TEMPLATE[:3], 0.25 * FS + 1)
    centres = set()
    for seed in range(24):
        for crop in (noise, face):
            changed = _changed(crop, apply_validation_family("liquify", crop, TEMPLATE, np.random.default_rng(seed)))
            assert changed.any() and not changed[~discs].any()
        centres.add(tuple(i for i in range(3) if changed[_near(TEMPLATE[i], 0.05 * FS)].any()))
    assert {(0,), (1,), (0, 1), (2,)} <= centres  # every centre drawn, alone (discs of up to 0.25 never meet)


@pytest.mark.parametrize("centre", LIQUIFY_CENTRES)
def test_liquify_bulge_enlarges_and_pinch_shrinks(centre):
    # A dark disc on every candidate centre, on a light background.
    crop = np.full((SIZE, SIZE, 3), 200, np.uint8)
    dark = _near(TEMPLATE[:3], 0.06 * FS)
    crop[dark] = 30
    targets = {"left_eye": [0], "right_eye": [1], "both_eyes": [0, 1], "nose": [2]}[centre]
    radius = 0.15  # the discs stay clear of the other parts' dark discs
    area = lambda img, i: int((img[..., 0] < 115)[_near(TEMPLATE[i], 0.11 * FS)].sum())  # noqa: E731
    bulged = liquify_at(crop, TEMPLATE, centre, radius, 0.5)
    pinched = liquify_at(crop, TEMPLATE, centre, radius, -0.5)
    for i in range(3):
        if i in targets:
            assert area(bulged, i) > 1.3 * area(crop, i) and area(pinched, i) < 0.8 * area(crop, i)
        else:
            assert area(bulged, i) == area(pinched, i) == area(crop, i)
    with pytest.raises(ValueError, match="strength"):
        liquify_at(crop, TEMPLATE, centre, radius, 1.0)


def test_unknown_names_and_bad_inputs_raise(noise):
    with pytest.raises(ValueError, match="valid names: copy_move, liquify"):
        apply_validation_family("graphics_swap", noise, TEMPLATE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        apply_validation_family("liquify", noise.astype(np.float32), TEMPLATE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="five"):
        apply_validation_family("copy_move", noise, TEMPLATE[:4], np.random.default_rng(0))
    flat = np.full_like(noise, 128)  # nothing to move: no edit could show
    for name in VALIDATION_FAMILIES:
        with pytest.raises(ValueError, match="too flat"):
            apply_validation_family(name, flat, TEMPLATE, np.random.default_rng(0))


# --- the training config --------------------------------------------------------------------


def test_config_takes_known_families_once():
    from pipeline.config import load_config
    from pipeline.train_config import TrainConfig

    assert load_config(TrainConfig, None, []).data.val_families == []
    config = load_config(TrainConfig, None, ["data.val_families=[liquify, copy_move]"])
    assert config.data.val_families == ["liquify", "copy_move"]
    for value, message in [("[copy_move, blur]", "'data.val_families' must be one of copy_move, liquify; "
                                                 "got 'blur'"),
                           ("[liquify, liquify]", "names a family twice"),
                           ("copy_move", "must be a list")]:
        with pytest.raises(ConfigError, match=message) as info:
            load_config(TrainConfig, None, [f"data.val_families={value}"])
        assert "\n" not in str(info.value)


def test_box_crops_cannot_take_validation_families(tmp_path):
    from pipeline.config import load_config
    from pipeline.crop_record import write_crop_spec
    from pipeline.train_config import TrainConfig
    from pipeline.train_data import face_table_crop

    write_crop_spec(str(tmp_path), CropSpec("box", 32))
    settings = [f"data.faces={tmp_path}", "model.input_size=32", "model.crop_policy=box", "augment.sbi_p=0"]
    assert face_table_crop(load_config(TrainConfig, None, settings)).policy == "box"
    with pytest.raises(ConfigError, match="set data.val_families=\\[\\]"):
        face_table_crop(load_config(TrainConfig, None, [*settings, "data.val_families=[liquify]"]))


# --- the frame stage ------------------------------------------------------------------------


def _items(tmp_path, families):
    from pipeline.config import load_config
    from pipeline.frame_validation import validation_set
    from pipeline.train_config import TrainConfig
    from pipeline.train_data import build_index
    from tests.test_streaming import write_faces

    faces = write_faces(tmp_path / "faces")
    index = build_index(faces, max_tracks_per_video=1)
    config = load_config(TrainConfig, None, [f"data.faces={faces}", "data.val_frames_per_track=2", "seed=7",
                                             f"data.val_families=[{','.join(families)}]"])
    return index, validation_set(config, index, CropSpec("aligned", 32))


def test_validation_items_are_every_crop_and_each_real_ones_family_copies(tmp_path):
    from pipeline.train_stream import FaceCrops, stream_loader
    from models.streaming import ShuffledStream

    index, items = _items(tmp_path, ["copy_move", "liquify"])
    real = index.targets(index.track_of(items.crops)) == REAL_INDEX
    assert 0 < real.sum() < len(items.crops)
    assert len(items) == len(items.crops) + 2 * real.sum()
    for k, name in enumerate(("copy_move", "liquify"), start=1):
        mine = items.variants == k
        assert sorted(items.numbers[mine]) == sorted(items.crops[real])
        assert set(items.labels[mine]) == {FAKE_INDEX}
        assert {items.manipulations[i] for i in np.flatnonzero(mine)} == {name}
    assert set(items.manipulations) == {"", "self_blend", "copy_move", "liquify"}

    def seen(rank: int, world: int, workers: int) -> dict:
        stream = ShuffledStream(FaceCrops(index, items.crops, families=items.source_families), batch_size=3,
                                seed=0, shuffle=False, rank=rank, world=world)
        out = {}
        for batch in stream_loader(stream, workers):
            for number, variant, pixels, target in zip(batch.index, batch.variant, batch.crops.numpy(),
                                                       batch.targets.numpy()):
                assert (int(number), int(variant)) not in out
                out[int(number), int(variant)] = (pixels, int(target))
        return out

    one = seen(0, 1, 0)
    keys = list(zip(items.numbers.tolist(), items.variants.tolist()))
    assert sorted(one) == keys
    label_of = dict(zip(keys, items.labels.tolist()))
    # Two ranks' shards, read by a loader worker, hold the same items, made alike (seeded per crop and family).
    shards = [seen(rank, 2, 1) for rank in range(2)]
    assert not set(shards[0]) & set(shards[1]) and {**shards[0], **shards[1]}.keys() == one.keys()
    for key, (pixels, target) in {**shards[0], **shards[1]}.items():
        np.testing.assert_array_equal(pixels, one[key][0])
        assert target == one[key][1] == label_of[key]
    for crop in items.crops[real]:
        assert not np.array_equal(one[int(crop), 0][0], one[int(crop), 1][0])
        assert not np.array_equal(one[int(crop), 1][0], one[int(crop), 2][0])


def test_auc_by_manipulation_ranks_each_fake_kind_against_all_reals(tmp_path):
    from pipeline.frame_validation import auc_by_manipulation

    _, items = _items(tmp_path, ["liquify"])
    names = np.array(items.manipulations, dtype=object)
    scores = np.where(items.labels == REAL_INDEX, 0.3, 0.0)
    scores[names == "self_blend"] = 0.9  # above every real
    scores[names == "liquify"] = 0.1  # below every real
    assert auc_by_manipulation(items, scores) == {"liquify": 0.0, "self_blend": 1.0}


class _PixelMean(torch.nn.Module):
    """A stand-in frame model: the fake logit is the crop's mean pixel, so each item's logit names its pixels."""

    def forward(self, x):
        mean = x.float().mean(dim=(1, 2, 3))
        return {"logits": torch.stack([torch.zeros_like(mean), mean], dim=1)}


class _ThreadRanks:
    """Ranks of a data-parallel group played by threads: ``gather`` exchanges values at a barrier."""

    def __init__(self, rank: int, world: int, shared: list, barrier: threading.Barrier):
        self.rank, self.world, self.shared, self.barrier = rank, world, shared, barrier
        self.device = torch.device("cpu")

    def gather(self, value):
        self.shared[self.rank] = value
        self.barrier.wait()
        out = list(self.shared)
        self.barrier.wait()
        return out


@pytest.mark.parametrize("world,workers,families", [(1, 0, ["copy_move", "liquify"]), (1, 1, ["copy_move", "liquify"]),
                                                    (2, 0, ["copy_move", "liquify"]), (2, 1, [])])
def test_validation_logits_come_back_in_item_order_with_the_family_copies(tmp_path, world, workers, families):
    from types import SimpleNamespace

    from models.preprocess import decode_crop
    from models.training import MixedPrecision
    from pipeline.frame_stage import validation_logits
    from pipeline.train_stream import family_seed

    index, items = _items(tmp_path, families)
    stage = SimpleNamespace(batch_size=3, workers=workers)
    shared, barrier, results = [None] * world, threading.Barrier(world), [None] * world

    def rank_main(rank: int) -> None:
        ranks = _ThreadRanks(rank, world, shared, barrier)
        results[rank] = validation_logits(_PixelMean(), index, items, lambda x: x,
                                           MixedPrecision(ranks.device, "fp32"), ranks, stage)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every rank holds every item's logit, in (crop, variant) order: the crop's own, or its family copy's.
    pngs = {}
    for unit in range(index.num_units):
        crops, rows = index.unit_rows(unit)
        for crop, png in zip(crops, index.read(unit, ["crop_png"]).column("crop_png").to_pylist()):
            pngs[int(crop)] = png
    expected = []
    for number, variant in zip(items.numbers, items.variants):
        img = decode_crop(pngs[int(number)])
        if variant:
            img = apply_validation_family(items.families[variant - 1], img, items.landmarks,
                                          np.random.default_rng(family_seed(7, int(number), int(variant))))
        expected.append(img.astype(np.float32).mean())
    for logits in results:
        assert logits.shape == (len(items), 2)
        np.testing.assert_allclose(logits[:, 1], expected, rtol=1e-5)
    # A crop missing from the gathered items is an error, not a silent gap.
    short = dataclasses.replace(items, numbers=items.numbers[1:], variants=items.variants[1:])
    with pytest.raises(RuntimeError, match="exactly once"):
        validation_logits(_PixelMean(), index, short, lambda x: x, MixedPrecision(torch.device("cpu"), "fp32"),
                           _ThreadRanks(0, 1, [None], threading.Barrier(1)), SimpleNamespace(batch_size=3, workers=0))


@pytest.mark.parametrize("workers", [0, 1])
def test_the_frame_record_reports_each_manipulations_auc(tmp_path, workers, one_torch_thread):
    from pipeline.config import load_config
    from pipeline.train import run_train
    from pipeline.train_config import TrainConfig
    from tests.test_streaming import _settings, write_faces

    faces = write_faces(tmp_path / "faces", videos=8, second_tracks=False)
    out = tmp_path / "train"
    run_train(load_config(TrainConfig, None, _settings(
        faces, out, "sequence.enabled=false", f"frame.workers={workers}", "data.val_families=[copy_move,liquify]")))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (frame,) = [line for line in lines if line["stage"] == "frame"]
    aucs = frame["val_auc_by_manipulation"]
    assert set(aucs) == {"self_blend", "copy_move", "liquify"}
    assert all(0.0 <= auc <= 1.0 for auc in aucs.values())
    # 4 validation videos of 4 crops, 2 chosen per track; the 2 real videos' crops once per family too.
    assert frame["val_items"] == 4 * 2 + 2 * 2 * 2
    assert frame["val_auc"] is not None and frame["val_log_loss"] > 0
    if workers == 0:  # bench.validation_auc scores the written checkpoint on the same items
        import contextlib
        import io

        from bench.validation_auc import main as validation_auc

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert validation_auc([str(out / "model.pt"), "--faces", str(faces),
                                   "--config", str(out / "config.yaml")]) == 0
        (line,) = [json.loads(text) for text in printed.getvalue().splitlines()]
        assert line["items"] == frame["val_items"]
        assert line["val_auc"] == pytest.approx(frame["val_auc"], abs=1e-3)
        for name, auc in aucs.items():
            assert line[name] == pytest.approx(auc, abs=1e-3)
