"""Long videos: the manipulated minute is found, said where, and its untouched twin stays real.

The pair is generated (``bench.long_videos``): 75 s of a real 240p recording
at 24 fps with a keyframe every 250 frames, and a 6-s self-blend (one of the
sample archive's manipulated kinds) from 0:43 to 0:49, between the keyframes
at 0:41.7 and 0:52.1; and its untouched twin. The four evenly spaced clips of
the ``clips`` policy miss the stretch; the default ``scout`` policy must not.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import pytest

from bench.long_videos import make_long_pair
from models.crops import CropSpec
from models.faces import FaceDetector
from models.segments import describe_segments
from pipeline.cli import main
from pipeline.config import ScanConfig
from transforms.elements import MediaInput
from transforms.face_extractor import FaceExtractor
from transforms.sandbox import DecoderSandbox
from transforms.tables import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_long_pair(str(tmp_path_factory.mktemp("long")))


def _scan(pair, out, *overrides) -> dict[str, dict]:
    sets = [a for o in overrides for a in ("--set", o)]
    assert main(["scan", os.path.join(os.path.dirname(pair.fake), "manifest.csv"), "--output", str(out),
                 "--quiet", *sets]) == 0
    return {r["uri"]: r for r in read_table(str(out / "verdicts")).to_pylist()}


@pytest.fixture(scope="module")
def scout_scan(pair, tmp_path_factory):
    """The pair scanned as a new user scans it: the CLI, the default config and the bundled checkpoint."""
    out = tmp_path_factory.mktemp("scout_scan")
    return out, _scan(pair, out)


@pytest.fixture(scope="module")
def scout_rows(scout_scan):
    return scout_scan[1]


@pytest.fixture(scope="module")
def clip_rows(pair, tmp_path_factory):
    return _scan(pair, tmp_path_factory.mktemp("clip_scan"), "sampling.policy=clips")


def _overlaps(span, stretch) -> bool:
    return span[0] < stretch[1] and span[1] > stretch[0]


def test_the_pair_differs_only_inside_the_stretch_between_two_keyframes(pair):
    import decord

    fake, real = decord.VideoReader(pair.fake), decord.VideoReader(pair.real)
    assert len(fake) == len(real) == 75 * 24
    assert list(fake.get_key_indices()) == list(real.get_key_indices()) == list(pair.keyframes)
    first, end = pair.stretch_frames
    assert not any(first <= k < end for k in pair.keyframes)
    after = next(k for k in pair.keyframes if k > end)  # the encodings agree again from the next keyframe
    probe = [first - 30, first + 10, (first + end) // 2, after, after + 30]
    diff = np.abs(fake.get_batch(probe).asnumpy().astype(int) - real.get_batch(probe).asnumpy()).mean(axis=(1, 2, 3))
    assert diff[0] == diff[3] == diff[4] == 0 and diff[1] > 1 and diff[2] > 1


def test_the_manipulated_stretch_is_found_and_named(pair, scout_rows):
    row = scout_rows[pair.fake]
    assert row["status"] == "ok" and row["sampling_policy"] == "scout"
    assert row["label"] == "fake", (row["score"], row["threshold"])
    assert row["segments"] and all(s["score"] >= row["threshold"] for s in row["segments"])
    hits = [s for s in row["segments"] if _overlaps((s["start_s"], s["end_s"]), pair.stretch_s)]
    assert hits, (row["segments"], pair.stretch_s)
    assert all(_overlaps((s["start_s"], s["end_s"]), pair.stretch_s) for s in row["segments"])
    assert row["score"] == pytest.approx(max([t["score"] for t in row["tracks"]] + [s["score"] for s in hits]))
    # the whole video was scouted, at most 2 s apart, and a dense clip went into the stretch
    times = [t["timestamp"] for t in row["timeline"]]
    assert times[0] <= 1.0 and row["duration_s"] - times[-1] <= 1.0 and max(np.diff(times)) <= 2.0 + 1e-6
    assert any(c["placed"] == "scout" and _overlaps((c["start_s"], c["end_s"]), pair.stretch_s) for c in row["clips"])
    assert len(row["clips"]) == 4 and row["frames_sampled"] == len(times) + 4 * 25


def test_the_untouched_twin_stays_real(pair, scout_rows):
    row = scout_rows[pair.real]
    assert row["status"] == "ok" and row["label"] == "real" and row["segments"] == []
    assert row["score"] < row["threshold"]
    assert len(row["timeline"]) == len(scout_rows[pair.fake]["timeline"])  # looked at the same frames


def test_the_clip_policy_misses_the_stretch(pair, clip_rows):
    fake, real = clip_rows[pair.fake], clip_rows[pair.real]
    assert fake["sampling_policy"] == "clips" and fake["timeline"] == []
    assert not any(_overlaps((c["start_s"], c["end_s"]), pair.stretch_s) for c in fake["clips"])
    assert fake["label"] == real["label"] == "real" and fake["segments"] == []
    assert fake["score"] == pytest.approx(real["score"], abs=1e-6)  # no frame of the stretch was looked at


def test_the_report_draws_the_whole_video_and_names_the_segment(scout_scan, tmp_path):
    out, rows = scout_scan
    page_path, table = tmp_path / "report.html", tmp_path / "verdicts.csv"
    assert main(["report", str(out / "verdicts"), "--output", str(page_path), "--csv", str(table)]) == 0
    page = page_path.read_text(encoding="utf-8")
    assert page.count('alt="whole-video score timeline"') == 2
    (fake,) = [r for r in rows.values() if r["label"] == "fake"]
    named = describe_segments(fake["segments"])
    assert named.startswith("manipulated 0:4") and named in page and named in table.read_text(encoding="utf-8")


class _SpySandbox(DecoderSandbox):
    """A decoder sandbox that records what the worker holds and refuses to send whole frames."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held: list[list[int]] = []

    def read(self, indices):
        raise AssertionError("whole frames were asked for")

    def hold(self, indices):
        self.held.append(list(indices))
        return super().hold(indices)


def test_scouting_holds_bounded_batches_and_never_takes_whole_frames(pair):
    config = ScanConfig()
    faces = dataclasses.replace(config.faces, detect_size=320)
    sandbox = _SpySandbox(config.decode.timeout_s, config.decode.memory_mb)
    scored = []

    def scorer(crops):
        scored.append(len(crops))
        return np.full(len(crops), 0.1, np.float32)

    extractor = FaceExtractor(config.sampling, faces, FaceDetector(detect_size=320), CropSpec("aligned", 224),
                              config.decode, sandbox=sandbox, scorer=scorer)
    try:
        result = extractor.extract(MediaInput(pair.fake, "video"))
    finally:
        sandbox.shutdown()
    assert result.status == "ok" and result.sampling == "scout"
    scouted = sum(len(h) for h in sandbox.held[:-4])  # then the four dense clips
    assert scouted == len(result.scouts) >= 75 / 2 and len(sandbox.held) == -(-scouted // 25) + 4
    judged = sum(int(np.isfinite(f.probabilities).sum()) for f in result.scouts)
    assert sum(scored) == judged >= scouted - 2  # the one face on (nearly) every scout frame, scored there
    assert all(len(h) <= config.sampling.clip_len and h == sorted(h) for h in sandbox.held)
    assert {"scout_score", "decode", "detect", "align"} <= set(extractor.take_stage_seconds())


def test_extraction_without_a_checkpoint_samples_as_the_clip_policy(moving_face_video):
    """The training job's extraction has no frame model: ``scout`` samples exactly as ``clips`` did."""
    config = ScanConfig()
    assert config.sampling.policy == "scout"
    detector = FaceDetector(detect_size=320, min_face_size=40)
    results = []
    for sampling in (config.sampling, dataclasses.replace(config.sampling, policy="clips")):
        extractor = FaceExtractor(sampling, config.faces, detector, CropSpec("aligned", 224), config.decode)
        try:
            results.append(extractor.extract(MediaInput(str(moving_face_video), "video")))
        finally:
            extractor.sandbox.shutdown()
    default, clips = results
    assert default.sampling == clips.sampling == "clips" and default.scouts == ()
    assert [t.frame_indices for t in default.tracks] == [t.frame_indices for t in clips.tracks]
    assert default.frames_sampled == clips.frames_sampled
    np.testing.assert_array_equal(default.tracks[0].crops, clips.tracks[0].crops)


def test_scouting_leaves_the_dense_clips_their_share_of_the_decoder_budget(pair):
    """A video too long to scout whole within ``decode.timeout_s`` is judged on what was scouted, and says so."""
    config = ScanConfig()

    class SpentSandbox(DecoderSandbox):
        """In-process (the budget is not enforced), and its budget is spent as soon as the input opens."""

        @property
        def input_deadline(self) -> float:
            return time.monotonic()

    sandbox = SpentSandbox(timeout_s=1.0, isolate=False)
    extractor = FaceExtractor(config.sampling, config.faces, FaceDetector(detect_size=320), CropSpec("aligned", 224),
                              config.decode, sandbox=sandbox, scorer=lambda crops: np.full(len(crops), 0.1, np.float32))
    try:
        result = extractor.extract(MediaInput(pair.fake, "video"))
    finally:
        sandbox.shutdown()
    assert result.status == "ok" and len(result.scouts) == 25 and len(result.clips) == 4  # one batch, then clips
    (note,) = [w for w in result.info.warnings if w.startswith("scouting stopped after")]
    assert "25 of 39 scout frames" in note and "decode.timeout_s" in note
