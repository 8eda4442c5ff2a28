"""Training streams the face table: sharded, shuffled within a bounded buffer, seeded, resumable.

The stream itself runs over a small in-memory source (``models.streaming``); the
face-table side over Parquet tables with many row groups (``pipeline.train_data``,
``pipeline.train_stream``); the job interrupted mid-epoch and resumed, and in a
``gloo`` process group of two ranks on the CPU.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models.crops import CropSpec
from models.preprocess import decode_crop, encode_crop
from models.streaming import ShuffledStream, StreamTracker, resume_streams
from pipeline.train_data import build_index, epoch_crops, track_crops, validation_crops
from pipeline.train_stream import FaceCrops, stream_loader
from transforms.face_schema import FACE_SCHEMA


class Batch:
    def __init__(self, keys):
        self.keys = keys
        self.position = None


class Units:
    """A table of ``sizes[u]`` records in unit ``u``; counts what it reads."""

    def __init__(self, sizes):
        self.sizes = list(sizes)
        self.num_units = len(self.sizes)
        self.records_read = 0

    def count(self, unit):
        return self.sizes[unit]

    def read(self, unit):
        self.records_read += self.sizes[unit]
        return [(row, f"{unit}:{row}") for row in range(self.sizes[unit])]

    def batch(self, items):
        return Batch([payload for _, _, payload in items])


SIZES = [5, 0, 7, 3, 8, 1, 6, 4, 9, 2, 5, 6]  # uneven, one empty unit: some workers end before others
ALL = {f"{u}:{r}" for u, n in enumerate(SIZES) for r in range(n)}


def _stream(**kw):
    settings = {"batch_size": 4, "seed": 7, "epoch": 0, "buffer_size": 6, **kw}
    return ShuffledStream(Units(SIZES), **settings)


def _keys(loader, limit=None):
    return [b.keys for b in itertools.islice(loader, limit)]


@pytest.mark.parametrize("world,workers", [(1, 0), (1, 3), (2, 2), (3, 1)])
def test_shards_are_disjoint_and_complete_across_workers_and_ranks(world, workers):
    seen = Counter()
    for rank in range(world):
        stream = _stream(rank=rank, world=world)
        batches = _keys(stream_loader(stream, workers))
        assert len(batches) == stream.batches_per_rank(workers)[rank]
        seen.update(k for b in batches for k in b)
    assert set(seen) == ALL and set(seen.values()) == {1}
    # every unit goes to exactly one stream
    streams = world * max(workers, 1)
    shards = [set(_stream().shard(s, streams).tolist()) for s in range(streams)]
    assert sum(len(s) for s in shards) == len(set().union(*shards)) == len([n for n in SIZES if n])


def test_the_shuffle_buffer_bounds_what_a_stream_holds():
    source = Units(SIZES)
    stream = ShuffledStream(source, batch_size=4, seed=1, buffer_size=6)
    emitted = 0
    for batch in stream:
        emitted += len(batch.keys)
        held = source.records_read - emitted
        assert len(batch.position["buffer"]) <= 6
        # the buffer, the rest of the unit being read, and the next batch (made ahead to see the stream's end)
        assert held <= 6 + max(SIZES) + 4
    assert emitted == len(ALL)


def test_the_order_is_seeded_and_shuffled_across_units():
    first = [k for b in _stream() for k in b.keys]
    assert first == [k for b in _stream() for k in b.keys]  # same seed, same order
    assert first != [k for b in _stream(seed=8) for k in b.keys]
    assert first != [k for b in _stream(epoch=1) for k in b.keys]
    assert sorted(first) == sorted(ALL)
    assert len({k.split(":")[0] for k in first[:8]}) > 2  # the buffer mixes units
    plain = [k for b in _stream(shuffle=False) for k in b.keys]
    assert plain == sorted(ALL, key=lambda k: tuple(map(int, k.split(":"))))  # table order


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("stop", [1, 2, 5, 7])
def test_a_resumed_stream_continues_the_sequence(workers, stop, tmp_path):
    whole = _keys(stream_loader(_stream(), workers))
    tracker = StreamTracker(workers)
    for batch in itertools.islice(stream_loader(_stream(), workers), stop):
        tracker.update(batch)
    torch.save(tracker.state(), tmp_path / "position.pt")  # the position travels in state.pt
    state = torch.load(tmp_path / "position.pt", weights_only=True)
    positions, rotation = resume_streams(state, workers)
    rest = _keys(stream_loader(_stream(positions=positions, rotation=rotation), workers))
    assert whole[:stop] + rest == whole
    with pytest.raises(ValueError, match="worker"):
        resume_streams(state, max(workers, 1) + 1)


# --- the face table --------------------------------------------------------------------------


def write_faces(root, videos=16, frames=4, rows_per_group=4, size=32, files=2, second_tracks=True) -> str:
    """A face table of plain crops in several files of several row groups.

    Odd videos are validation, even ones training; fakes carry a red patch. With
    ``second_tracks``, videos ``i % 3 == 0`` have a second, shorter track.
    """
    from pipeline.crop_record import write_crop_spec

    rng = np.random.default_rng(0)
    rows = []
    for i in range(videos):
        split = "val" if i % 2 else "train"
        label = "fake" if (i // 2) % 2 else "real"
        for track in range(1 + (second_tracks and i % 3 == 0)):
            for frame in range(frames - track):
                pixels = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
                if label == "fake":
                    pixels[size // 4: -size // 4, size // 4: -size // 4, 0] = 250
                rows.append({
                    "video_id": f"v{i:02d}", "uri": f"/v{i}.mp4", "group": f"v{i}", "split": split,
                    "label": label, "manipulation": "self_blend" if label == "fake" else "", "track_id": track,
                    "clip_index": 0, "frame_index": 2 * frame, "timestamp": frame / 12.5,
                    "box": [10.0 * track, 5.0, 10.0 * track + 40, 45.0], "crop_png": encode_crop(pixels),
                    "crop_size": size})
    faces = root / "faces"
    faces.mkdir(parents=True)
    per_file = -(-len(rows) // files)
    for f in range(files):
        part = pa.Table.from_pylist(rows[f * per_file:(f + 1) * per_file], schema=FACE_SCHEMA)
        pq.write_table(part, str(faces / f"part-{f:05d}.parquet"), row_group_size=rows_per_group)
    (faces / "_SUCCESS").write_text("")
    write_crop_spec(str(root), CropSpec("aligned", size))
    return str(root)


def test_the_index_holds_every_crop_where_it_is(tmp_path):
    faces = write_faces(tmp_path)
    index = build_index(faces, max_tracks_per_video=1)
    assert index.num_units > 4 and index.num_crops == 16 * 4 + 6 * 3
    rows = pq.read_table(f"{faces}/faces").to_pylist()
    # every crop, by (video, track, frame), points at its own row
    for crop in range(index.num_crops):
        track = int(index.track_of(np.array([crop]))[0])
        unit = int(index.crop_unit[crop])
        row = index.read(unit, ["video_id", "track_id", "frame_index"]).to_pylist()[index.crop_row[crop]]
        assert (row["video_id"], row["track_id"], row["frame_index"]) == (
            index.videos[index.track_video[track]], index.track_id[track], index.crop_frame[crop])
    assert index.video_split == ["train"] * 8 + ["val"] * 8  # by split, then by id
    assert index.videos[:8] == sorted(index.videos[:8]) and index.videos[8:] == sorted(index.videos[8:])
    # each video keeps its longest track; calibration's tracks are all of them
    assert index.kept.sum() == 16 and len(index.tracks("val")) == 8 + 3
    summary = index.summary()
    assert summary["train"] == {"videos": 8, "tracks": 8, "crops": 32, "real": 4, "fake": 4, "fake:self_blend": 4}
    assert len({r["video_id"] for r in rows}) == 16
    assert index.manipulations("train") == {"self_blend"}


def test_face_crops_read_the_chosen_rows_and_sharded_loaders_cover_them(tmp_path):
    faces = write_faces(tmp_path)
    index = build_index(faces, max_tracks_per_video=1)
    crops = epoch_crops(index, 3, seed=0, epoch=0)
    assert len(crops) == 8 * 3 and np.all(np.diff(crops) > 0)
    assert not np.array_equal(crops, epoch_crops(index, 3, seed=0, epoch=1))  # a new draw each epoch
    table = pq.read_table(f"{faces}/faces").to_pylist()
    png_of = {(r["video_id"], r["track_id"], r["frame_index"]): r["crop_png"] for r in table}
    seen = []
    for rank in range(2):
        stream = ShuffledStream(FaceCrops(index, crops), batch_size=5, seed=3, buffer_size=4, rank=rank, world=2)
        for batch in stream_loader(stream, workers=2):
            seen += batch.index.tolist()
            for crop, pixels in zip(batch.index, batch.crops.numpy()):
                track = int(index.track_of(np.array([crop]))[0])
                key = (index.videos[index.track_video[track]], int(index.track_id[track]), int(index.crop_frame[crop]))
                np.testing.assert_array_equal(pixels, decode_crop(png_of[key]))
    assert sorted(seen) == crops.tolist()
    val = validation_crops(index, 2)
    assert len(val) == 8 * 2 and set(val) <= set(track_crops(index, index.tracks("val", kept_only=True)))


# --- the job: interrupted and resumed; two ranks ------------------------------------------------


def _settings(faces, out, *more):
    return [f"data.faces={faces}", f"output={out}", "model.input_size=32", "model.dropout=0.0", "device=cpu",
            "frame.epochs=1", "frame.batch_size=4", "frame.workers=0", "frame.lr=0.003", "data.frames_per_track=4",
            "data.val_frames_per_track=2", "data.max_tracks_per_video=1", "data.shuffle_buffer=6",
            "sequence.epochs=2", "sequence.hidden_dim=8", "augment.sbi_p=0", "augment.blur_p=0", "augment.jpeg_p=0",
            "augment.downscale_p=0", "augment.color_jitter_p=0", "seed=5", *more]


class Interrupted(Exception):
    pass


def _record_batches(monkeypatch, seen: list, stop_after=None):
    """Record the crops of every batch the frame loop trains on; raise after ``stop_after`` batches."""
    import models.training
    import pipeline.frame_stage as frame_stage

    real = models.training.train_frame_epoch

    def recording(model, batches, *args, **kw):
        def watched():
            for batch in batches:
                if stop_after is not None and len(seen) == stop_after:
                    raise Interrupted
                seen.append(batch.index.tolist())
                yield batch
        return real(model, watched(), *args, **kw)

    monkeypatch.setattr(frame_stage, "train_frame_epoch", recording)


def test_an_interrupted_run_resumes_where_its_samples_stopped(tmp_path, monkeypatch, one_torch_thread):
    from pipeline.config import load_config
    from pipeline.train import run_train
    from pipeline.train_config import TrainConfig

    faces = write_faces(tmp_path / "faces", videos=24)
    settings = ["frame.save_every_steps=2", "frame.workers=2", "frame.ema_decay=0.5"]
    whole: list = []
    _record_batches(monkeypatch, whole)
    run_train(load_config(TrainConfig, None, _settings(faces, tmp_path / "whole", *settings)))
    assert len(whole) >= 6  # 12 training videos x 4 crops, batches of 4

    first: list = []
    _record_batches(monkeypatch, first, stop_after=5)  # killed after 5 steps: the state is from step 4
    with pytest.raises(Interrupted):
        run_train(load_config(TrainConfig, None, _settings(faces, tmp_path / "cut", *settings)))
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert state["epoch"] == -1 and state["data"]["epoch"] == 0
    assert state["data"]["ranks"][0]["stream"]["steps"] == 4
    rest: list = []
    _record_batches(monkeypatch, rest)
    resumed = _settings(faces, tmp_path / "cut", *settings, f"resume={tmp_path / 'cut' / 'state.pt'}")
    run_train(load_config(TrainConfig, None, resumed))
    assert first[:4] + rest == whole  # the samples continue, they do not start again
    # ... and training with them: the resumed run ends with the uninterrupted run's weights
    ends = [torch.load(tmp_path / run / "state.pt", weights_only=True) for run in ("whole", "cut")]
    for key, value in ends[0]["model"].items():
        assert torch.allclose(value.float(), ends[1]["model"][key].float(), atol=1e-5), key
    lines = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    (frame,) = [l for l in lines if l["stage"] == "frame"]
    assert frame["train_steps"] == len(whole)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, faces: str, out: str, record: str) -> None:
    """One rank of a gloo process group, as torchrun would start it."""
    import pytest as _pytest

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import pipeline.train as train
    from pipeline.config import load_config
    from pipeline.train_config import TrainConfig

    seen: list = []
    patch = _pytest.MonkeyPatch()
    _record_batches(patch, seen)
    real_frames = train.train_frames

    def frames(*args, **kw):
        model, epoch, trained = real_frames(*args, **kw)
        digest = hashlib.sha256()
        for name, value in sorted(model.state_dict().items()):
            digest.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        with open(f"{record}/rank{rank}.json", "w") as f:
            json.dump({"batches": seen, "weights": digest.hexdigest()}, f)
        return model, epoch, trained

    patch.setattr(train, "train_frames", frames)
    train.run_train(load_config(TrainConfig, None, _settings(faces, out, "frame.epochs=2", "sequence.enabled=false")))


def test_two_ranks_train_on_disjoint_shards_in_one_gloo_group(tmp_path):
    import torch.multiprocessing as mp

    # 8 training videos of 4 crops in row groups of 4: each rank gets 4 row groups, 16 crops, 4 steps
    faces = write_faces(tmp_path / "faces", videos=16, second_tracks=False)
    out, record = tmp_path / "train", tmp_path / "record"
    record.mkdir()
    mp.spawn(_rank_main, args=(2, _free_port(), faces, str(out), str(record)), nprocs=2, join=True)
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    per_epoch = defaultdict(list)
    for r, got in enumerate(ranks):
        assert len(got["batches"]) == 2 * 4
        for epoch in range(2):
            per_epoch[epoch].append({c for b in got["batches"][epoch * 4:(epoch + 1) * 4] for c in b})
    index = build_index(faces, max_tracks_per_video=1)
    for epoch, (zero, one) in per_epoch.items():
        assert not zero & one  # disjoint shards ...
        assert sorted(zero | one) == epoch_crops(index, 4, seed=5, epoch=epoch).tolist()  # ... that cover the epoch
    # Different data on each rank, the same weights after every step: gradients were averaged.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert (out / "model.pt").exists() and (out / "state.pt").exists()
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["stage"] == "frame"] == [1, 2]  # rank 0 alone wrote them
    assert lines[-1]["stage"] == "calibration"


def test_a_resumed_run_continues_the_sequence_stage(tmp_path, monkeypatch, one_torch_thread):
    from models.checkpoint import load_checkpoint
    from pipeline.config import load_config
    from pipeline.train import run_train
    from pipeline.train_config import TrainConfig
    import pipeline.sequence_stage as sequence_stage

    faces = write_faces(tmp_path / "faces", videos=16)
    settings = ["sequence.epochs=4", "sequence.patience=10", "sequence.select_on_validation=false"]
    whole = load_checkpoint(run_train(load_config(TrainConfig, None, _settings(faces, tmp_path / "whole", *settings))))

    real, calls = sequence_stage.train_sequence_epoch, []

    def killed_in_epoch_three(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return real(*args, **kw)

    monkeypatch.setattr(sequence_stage, "train_sequence_epoch", killed_in_epoch_three)
    with pytest.raises(Interrupted):
        run_train(load_config(TrainConfig, None, _settings(faces, tmp_path / "cut", *settings)))
    monkeypatch.setattr(sequence_stage, "train_sequence_epoch", real)
    state = tmp_path / "cut" / "state.pt"
    resumed = load_checkpoint(run_train(load_config(TrainConfig, None, _settings(
        faces, tmp_path / "cut", *settings, f"resume={state}"))))
    lines = [json.loads(l) for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["stage"] == "frame"] == [1]  # the frame stage was done: not again
    assert [l["epoch"] for l in lines if l["stage"] == "sequence"] == [1, 2, 3, 4]  # 3 and 4 after the resume
    for key, value in whole.sequence_model.state_dict().items():
        assert torch.allclose(value, resumed.sequence_model.state_dict()[key], atol=1e-6), key
    assert resumed.card.threshold == pytest.approx(whole.card.threshold, rel=1e-5)
