"""Tests of the held-out manipulation families (models/families/) and the
cross-manipulation evaluation set built from them (pipeline/synthetic/crossset.py)."""
from __future__ import annotations

import ast
import csv
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from models.align import estimate_similarity
from models.families.edits import ATTRIBUTE_INPAINT, EXPRESSION_REENACT
from models.families.mesh import face_mask, face_points, face_size, piecewise_affine_maps
from models.families.registry import apply_family, family_names, get_family
from models.families.swaps import GRAPHICS_SWAP, NEURAL_RENDER
from transforms.manifests import MANIFEST_COLUMNS
from pipeline.synthetic.crossset import generate_cross_set, held_out_identities
from pipeline.synthetic.portraits import FaceSource
from pipeline.synthetic.trainset import generate_training_set, identity_splits

ROOT = Path(__file__).resolve().parents[1]
TARGET, DONOR = "lfw8", "lfw20"  # both held-out test identities, of similar skin tone
CANVAS = 300  # the portrait sits in a larger noisy canvas, so "far from the face" exists


class Face:
    """A portrait pasted into a noisy canvas, with its landmarks in canvas pixels."""

    def __init__(self, faces: FaceSource, identity: str, face_px: float = 105.0):
        portrait = faces.portrait(identity, face_px)
        height, width = portrait.image.shape[:2]
        rng = np.random.default_rng(5)
        self.image = rng.integers(60, 200, (CANVAS, CANVAS, 3), dtype=np.uint8)
        top, left = (CANVAS - height) // 2, (CANVAS - width) // 2
        self.image[top:top + height, left:left + width] = portrait.image
        self.landmarks = portrait.landmarks + (left, top)


@pytest.fixture(scope="module")
def faces() -> FaceSource:
    return FaceSource()


@pytest.fixture(scope="module")
def target(faces: FaceSource) -> Face:
    return Face(faces, TARGET)


@pytest.fixture(scope="module")
def donor(faces: FaceSource) -> Face:
    return Face(faces, DONOR)


def _apply(name: str, target: Face, donor: Face, seed: int = 0):
    extra = (donor.image, donor.landmarks) if get_family(name).needs_donor else ()
    return apply_family(name, target.image, target.landmarks, np.random.default_rng(seed), *extra)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)


def _near(landmarks: np.ndarray, points: list[int], radius: float) -> np.ndarray:
    """Boolean canvas mask of pixels within ``radius`` of the given landmarks."""
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS]
    near = np.zeros((CANVAS, CANVAS), dtype=bool)
    for i in points:
        near |= np.hypot(xs - landmarks[i, 0], ys - landmarks[i, 1]) < radius
    return near


def test_registry_names_four_distinct_families():
    assert set(family_names()) == {GRAPHICS_SWAP, NEURAL_RENDER, EXPRESSION_REENACT, ATTRIBUTE_INPAINT}
    assert len({get_family(name).technique for name in family_names()}) == len(family_names())
    with pytest.raises(ValueError, match="graphics_swap"):
        get_family("self_blend")  # the training manipulation is not a held-out family


def test_swap_families_need_a_donor(target: Face):
    for name in (GRAPHICS_SWAP, NEURAL_RENDER):
        with pytest.raises(ValueError, match="donor"):
            apply_family(name, target.image, target.landmarks, np.random.default_rng(0))


@pytest.mark.parametrize("name", family_names())
def test_family_changes_the_face_and_nothing_far_from_it(name: str, target: Face, donor: Face):
    result = _apply(name, target, donor)
    assert result.image.shape == target.image.shape and result.image.dtype == np.uint8
    assert result.mask.shape == target.image.shape[:2] and result.mask.dtype == np.float32
    assert 0.0 <= result.mask.min() and result.mask.max() <= 1.0
    diff = _abs_diff(result.image, target.image)
    size = face_size(target.landmarks)
    centre = target.landmarks.mean(axis=0)
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS]
    far = np.hypot(xs - centre[0], ys - centre[1]) > size
    assert far.mean() > 0.3
    assert diff[far].max() == 0 and result.mask[far].max() == 0.0
    edited = result.mask > 0.5
    assert edited.any() and diff[edited].mean() > 3.0
    assert np.all(face_mask(target.image.shape[:2], target.landmarks)[edited]
                  | _near(target.landmarks, range(5), 0.6 * size)[edited])


@pytest.mark.parametrize("name", family_names())
def test_family_is_deterministic_from_the_seed(name: str, target: Face, donor: Face):
    first, again = _apply(name, target, donor, seed=3), _apply(name, target, donor, seed=3)
    assert np.array_equal(first.image, again.image) and first.params == again.params
    others = [_apply(name, target, donor, seed=s) for s in (4, 5)]
    assert any(not np.array_equal(first.image, other.image) for other in others)


def _nyquist_peak(image: np.ndarray, region: np.ndarray) -> float:
    """Power at the period-2 frequencies of the face's high-pass, over the median power."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    ys, xs = np.nonzero(cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)))
    height, width = (ys.max() - ys.min()) // 2 * 2, (xs.max() - xs.min()) // 2 * 2
    patch = gray[ys.min():ys.min() + height, xs.min():xs.min() + width]
    patch = patch - cv2.GaussianBlur(patch, (0, 0), 2.0)
    power = np.abs(np.fft.fft2(patch * np.outer(np.hanning(height), np.hanning(width)))) ** 2
    peak = max(power[height // 2, 0], power[0, width // 2], power[height // 2, width // 2])
    return float(peak / np.median(power))


def test_neural_render_leaves_periodic_upsampling_peaks(target: Face, donor: Face):
    region = face_mask(target.image.shape[:2], target.landmarks)
    real = _nyquist_peak(target.image, region)
    for seed in range(3):
        rendered = _nyquist_peak(_apply(NEURAL_RENDER, target, donor, seed).image, region)
        assert rendered > 100.0 and rendered > 20.0 * real, (seed, rendered, real)
    swapped = _nyquist_peak(_apply(GRAPHICS_SWAP, target, donor).image, region)
    assert swapped < 20.0 * max(real, 1.0)  # the peaks are the generator's, not any swap's


def _detail(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return gray - cv2.GaussianBlur(gray, (0, 0), 3.0)


def test_graphics_swap_face_follows_the_donor(target: Face, donor: Face):
    inside = cv2.erode(face_mask(target.image.shape[:2], target.landmarks).astype(np.uint8),
                       np.ones((5, 5), np.uint8)) > 0
    result = _apply(GRAPHICS_SWAP, target, donor).image
    # The donor brought into the target's pose two ways: the family's own mesh warp, and a
    # plain similarity on the five landmarks that owes nothing to the family's code.
    map_x, map_y, _ = piecewise_affine_maps(face_points(donor.landmarks), face_points(target.landmarks),
                                            target.image.shape[:2])
    meshed = cv2.remap(donor.image, map_x, map_y, cv2.INTER_LINEAR)
    similar = cv2.warpAffine(donor.image, estimate_similarity(donor.landmarks, target.landmarks),
                             (CANVAS, CANVAS))

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(_detail(a)[inside], _detail(b)[inside])[0, 1])

    to_target = corr(result, target.image)
    assert corr(result, meshed) > to_target + 0.3
    assert corr(result, similar) > to_target


def test_expression_reenact_moves_the_mouth_and_keeps_eyes_and_colour(target: Face, donor: Face):
    size = face_size(target.landmarks)
    points = face_points(target.landmarks)
    brows = _near(points, list(range(5, 11)), 0.05 * size)  # the mesh's brow points
    eyes, mouth = _near(points, [0, 1], 0.06 * size), _near(points, [3, 4], 0.12 * size)
    region = face_mask(target.image.shape[:2], target.landmarks)
    expressions = set()
    for seed in range(6):
        result = _apply(EXPRESSION_REENACT, target, donor, seed)
        expressions.add(result.params["expression"])
        diff = _abs_diff(result.image, target.image)
        assert diff[mouth].mean() > 4.0 and diff[brows].max() <= 2, result.params
        assert diff[eyes].mean() < 0.5 * diff[mouth].mean(), result.params  # a smile lifts the cheeks
        # Geometry moved, identity and colour did not (unlike the swap families).
        shift = result.image[region].mean(axis=0) - target.image[region].mean(axis=0)
        assert np.abs(shift).max() < 3.0
    assert expressions == {"smile", "jaw_drop"}


def test_attribute_inpaint_edits_only_the_chosen_part(target: Face, donor: Face):
    size = face_size(target.landmarks)
    parts = {"eyes": [0, 1], "mouth": [3, 4]}
    seen = set()
    for seed in range(8):
        result = _apply(ATTRIBUTE_INPAINT, target, donor, seed)
        part = result.params["part"]
        seen.add(part)
        diff = _abs_diff(result.image, target.image)
        around = _near(target.landmarks, parts[part], 0.3 * size)
        assert diff[~around].max() == 0, part
        assert diff[_near(target.landmarks, [2], 0.05 * size)].max() == 0  # the nose is untouched
        other = "mouth" if part == "eyes" else "eyes"
        assert diff[_near(target.landmarks, parts[other], 0.05 * size)].max() == 0
        # The part is re-synthesised, not moved or recoloured: its old detail is gone.
        inside = result.mask > 0.9
        assert inside.sum() > 50
        kept = np.corrcoef(_detail(result.image)[inside], _detail(target.image)[inside])[0, 1]
        assert kept < 0.5, (part, kept)
    assert seen == {"eyes", "mouth"}


# Where training starts: the job, its data and augmentation, and the training set's generator.
TRAINING_MODULES = ("pipeline.train", "models.training", "models.augment", "models.manipulate",
                    "models.blend_params", "pipeline.synthetic.trainset", "pipeline.synthetic.samples")
# The training manipulation's own code, which the families must not borrow.
TRAINING_MANIPULATION = ("models.manipulate", "models.blend_params", "models.augment", "models.face_mask")
FAMILIES = ("models.families", "pipeline.synthetic.crossset")


def _imports(module: str) -> set[str]:
    """Every module a source file names in an import statement (at any depth, lazy ones too)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _loaded_by(modules: tuple[str, ...]) -> set[str]:
    """Every project module that importing ``modules`` loads, in a fresh interpreter."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) + "print(' '.join(m for m in "
            "sys.modules if m.split('.')[0] in ('models', 'pipeline', 'transforms')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_training_modules_do_not_import_the_families():
    loaded = _loaded_by(TRAINING_MODULES)
    assert set(TRAINING_MODULES) <= loaded
    assert not [m for m in loaded if m.startswith(FAMILIES)]
    for module in sorted(loaded):  # lazy imports inside functions too
        assert not any(name.startswith(FAMILIES) for name in _imports(module)), module


def test_the_families_do_not_borrow_the_training_manipulation():
    loaded = _loaded_by(("models.families.registry",))
    family_modules = sorted(m for m in loaded if m.startswith("models.families"))
    assert len(family_modules) > 1  # the registry and the modules it draws on
    assert not [m for m in loaded if m.startswith(TRAINING_MANIPULATION)]
    for module in family_modules:
        assert not any(name.startswith(TRAINING_MANIPULATION) for name in _imports(module)), module


# The validation-only families (early stopping's extra fakes): a third mechanism, sharing code with neither side.
VALIDATION_FAMILIES = "models.validation_families"


def test_the_validation_families_share_no_code_with_training_or_test_manipulations():
    loaded = _loaded_by((VALIDATION_FAMILIES,))
    assert VALIDATION_FAMILIES in loaded
    borrowed = TRAINING_MANIPULATION + FAMILIES
    assert not [m for m in loaded if m.startswith(borrowed)]
    for module in sorted(m for m in loaded if m.startswith("models")):  # lazy imports too
        assert not any(name.startswith(borrowed) for name in _imports(module)), module
    # ... and neither the training manipulation nor the test families draw on them.
    for side in (TRAINING_MANIPULATION, ("models.families.registry", "pipeline.synthetic.crossset")):
        loaded = _loaded_by(side)
        assert VALIDATION_FAMILIES not in loaded
        for module in sorted(loaded):
            assert not any(name.startswith(VALIDATION_FAMILIES) for name in _imports(module)), module


def test_held_out_identities_are_the_training_sets_test_split(tmp_path: Path):
    made = generate_training_set(str(tmp_path), identities=8, seconds=0.2, train_videos=1)
    assert held_out_identities(identities=8) == sorted({i.group for i in made if i.split == "test"},
                                                       key=lambda who: int(who[3:]))
    held_out = held_out_identities()
    assert held_out == [who for who, split in identity_splits().items() if split == "test"]
    assert held_out_identities(split_seed=1) != held_out


@pytest.fixture(scope="module")
def cross_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out_dir = tmp_path_factory.mktemp("crossset")
    return out_dir, generate_cross_set(str(out_dir), seed=0, max_identities=2)


def test_cross_set_manifest_has_every_family_on_test_identities_only(cross_set):
    out_dir, items = cross_set
    with open(out_dir / "manifest.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert [(r["uri"], r["label"], r["manipulation"], r["group"]) for r in rows] == [
        (i.uri, i.label, i.manipulation, i.group) for i in items]
    assert {r["split"] for r in rows} == {"test"}
    splits = identity_splits()
    groups = {r["group"] for r in rows}
    assert len(groups) == 2 and all(splits[g] == "test" for g in groups)
    for group in groups:
        mine = [r for r in rows if r["group"] == group]
        assert sorted(r["manipulation"] for r in mine if r["label"] == "fake") == sorted(family_names())
        assert [r["manipulation"] for r in mine if r["label"] == "real"] == [""]
    assert sorted(os.listdir(out_dir)) == sorted(["manifest.csv"] + [Path(r["uri"]).name for r in rows])


def _decode(path: str) -> tuple[list[np.ndarray], float]:
    """All frames of an H.264 clip and its frame rate."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        return frames, float(stream.average_rate)


def test_cross_set_clips_play_and_mtcnn_finds_the_manipulated_faces(cross_set):
    from models.faces import FaceDetector

    _, items = cross_set
    detector = FaceDetector(min_face_size=40)
    for item in items:
        frames, fps = _decode(item.uri)
        assert len(frames) == round(2.0 * fps)
        if item.label == "fake":
            found = detector.detect(np.stack([frames[0], frames[-1]]))
            assert all(len(frame) >= 1 for frame in found), item.uri


def test_cross_set_is_deterministic_and_a_prefix_of_larger_sets(cross_set, tmp_path: Path):
    out_dir, items = cross_set
    again = generate_cross_set(str(tmp_path), seed=0, max_identities=1)
    assert [Path(i.uri).name for i in again] == [Path(i.uri).name for i in items[:len(again)]]
    for item in again:
        assert Path(item.uri).read_bytes() == (out_dir / Path(item.uri).name).read_bytes(), item.uri


def test_cli_samples_cross_manipulation(monkeypatch, tmp_path: Path, capsys):
    import pipeline.synthetic.crossset
    from pipeline.cli import main

    calls = []
    monkeypatch.setattr(pipeline.synthetic.crossset, "generate_cross_set",
                        lambda out_dir, **kw: calls.append((out_dir, kw)) or [])
    assert main(["samples", str(tmp_path), "--cross-manipulation", "--seed", "7",
                 "--test-identities", "3"]) == 0
    # The held-out identities follow the training set made with the same --seed and --identities.
    assert calls == [(str(tmp_path), {"seed": 7, "max_identities": 3, "split_seed": 7, "lfw_identities": 100})]
    assert main(["samples", str(tmp_path), "--test-identities", "3"]) == 2
    with pytest.raises(SystemExit):
        main(["samples", str(tmp_path), "--cross-manipulation", "--training-set"])
