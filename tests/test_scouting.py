"""The scout policy's planning and judging, without media: where to look, and what is judged manipulated."""
from __future__ import annotations

import numpy as np
import pytest

from bench.coverage import coverage, largest_gap, looked_at
from models.aggregation import TrackFaces, clip_scores
from models.scouting import (
    CONTEXT,
    SCOUTED,
    ClipSpan,
    ScoutFrame,
    batches,
    dense_clip_count,
    place_clips,
    scout_positions,
)
from models.segments import Segment, clock, describe_segments, find_segments, scout_stretches, video_score
from transforms.elements import OK, ExtractedMedia, FaceScore, FaceTrackCrops, MediaInfo, ScoredMedia


@pytest.mark.parametrize("fps, gop", [(24, 250), (25, 50), (30, 300), (25, 12), (29.97, 0)])
def test_scout_frames_cover_the_whole_video_at_most_a_step_apart(fps, gop):
    frames = int(600 * fps)  # ten minutes
    keys = list(range(0, frames, gop)) if gop else None
    picks = scout_positions(frames, fps, 2.0, keys)
    gaps = np.diff([-0.0] + [p / fps for p in picks] + [(frames - 1) / fps])
    assert picks == sorted(set(picks)) and gaps[1:-1].max() <= 2.0 + 1e-9 and gaps[1:-1].min() >= 1.0 - 1 / fps
    assert picks[0] / fps <= 1.0 and (frames - 1 - picks[-1]) / fps <= 1.0
    assert len(picks) <= 1.05 * 600 / 2.0 + 2  # linear in the duration: about one frame per step
    if gop and gop / fps <= 2.0:  # keyframes at most a step apart: scouting decodes keyframes only
        assert set(picks) <= set(keys) | {frames - 1}


def test_a_stretch_between_two_distant_keyframes_is_still_scouted():
    # keyframes every 10 s: a 5-s stretch between two of them holds two scout frames
    picks = np.array(scout_positions(1800, 24, 2.0, list(range(0, 1800, 240))))
    for start in np.arange(0, 70, 0.5):
        inside = ((picks >= start * 24) & (picks < (start + 5) * 24)).sum()
        assert inside >= 2, start


def test_dense_clips_go_to_the_highest_scores_spread_apart_with_context():
    scored = [(1056, 0.9), (1104, 0.8), (1152, 0.85), (480, 0.3), (240, 0.1)]
    clips = place_clips(1800, 25, 4, scored, context=1, min_gap=120, keyframes=list(range(0, 1800, 250)))
    assert len(clips) == 4 and [c.start for c in clips] == sorted(c.start for c in clips)
    scouted = [c for c in clips if c.placed == SCOUTED]
    assert len(scouted) == 3 and [c.placed for c in clips].count(CONTEXT) == 1
    # the best scout frame is inside a clip; its neighbours within min_gap do not take more clips
    assert any(1056 in c.indices for c in scouted) and not any(1104 in c.indices or 1152 in c.indices
                                                               for c in clips)
    assert any(480 in c.indices for c in scouted) and any(240 in c.indices for c in scouted)
    for a, b in zip(clips, clips[1:]):
        assert a.indices[-1] < b.start  # never overlap
    # a scouted clip starts on a keyframe when one lets it still hold its scout frame
    assert any(c.start == 250 and 260 in c.indices
               for c in place_clips(1800, 25, 1, [(260, 0.9)], context=0, min_gap=120, keyframes=[0, 250]))
    # nothing scored (no face on any scout frame): evenly spread clips, as the clips policy places them
    even = place_clips(1800, 25, 4, [], context=1, min_gap=120)
    assert [c.start for c in even] == [0, 592, 1183, 1775] and {c.placed for c in even} == {"even"}
    # one clip: it goes to the best scout frame; a video shorter than a clip is one clip
    assert place_clips(1800, 25, 1, scored, context=1, min_gap=120)[0].placed == SCOUTED
    assert place_clips(20, 25, 4, scored, context=1, min_gap=120)[0].indices == tuple(range(20))
    assert dense_clip_count(75, 5.0, 4) == 4 and dense_clip_count(3, 5.0, 4) == 1
    assert batches(list(range(60)), 25) == [list(range(25)), list(range(25, 50)), list(range(50, 60))]


def test_one_suspicious_frame_alone_makes_no_segment():
    times = list(np.arange(0.0, 600.0, 2.0))
    scores = [0.2] * len(times)
    scores[100] = 0.97  # one frame fools the frame model at 3:20
    clips = [(199.5, 200.5, 0.1), (10.0, 11.0, 0.15)]  # the dense clip there says real
    assert scout_stretches(times, scores, 0.5, 600.0) == [(199.0, 201.0)]
    assert find_segments(times, scores, clips, 0.5, 600.0) == []
    assert video_score(0.15, []) == 0.15


def test_a_confirmed_stretch_is_a_segment_and_raises_the_score():
    times = [40.0, 42.0, 44.0, 46.0, 48.0, 50.0]
    scores = [0.1, 0.2, 0.9, None, 0.8, 0.1]  # no face judged at 46 s: the run goes on
    segments = find_segments(times, scores, [(43.5, 44.5, 0.9), (10.0, 11.0, 0.1)], 0.5, 75.0)
    assert segments == [Segment(43.0, 49.0, 0.9)]
    assert video_score(0.3, segments) == 0.9  # a mean over tracks no longer dilutes the stretch
    assert describe_segments(segments) == "manipulated 0:43-0:49 (0.90)"
    assert describe_segments([{"start_s": 3725.0, "end_s": 3731.0, "score": 0.5}]) == \
        "manipulated 1:02:05-1:02:11 (0.50)"
    assert clock(59.6) == "1:00" and describe_segments([]) == ""
    # a dense clip that scores fake stands alone, even where no scout frame pointed
    assert find_segments(times, [0.1] * 6, [(20.0, 21.0, 0.7)], 0.5, 75.0) == [Segment(20.0, 21.0, 0.7)]
    # stretches at the ends reach the ends; overlapping segments merge
    merged = find_segments([0.0, 2.0, 4.0], [0.9, 0.9, 0.2], [(0.0, 1.0, 0.8), (2.5, 3.5, 0.95)], 0.5, 5.0)
    assert merged == [Segment(0.0, 3.5, 0.95)]


def test_each_clip_is_scored_as_the_input_is():
    tracks = [TrackFaces(np.array(p), np.tile([0, 0, 10, 10], (len(p), 1)), np.arange(len(p)))
              for p in ([0.1, 0.3], [0.9, 0.7], [0.4, 0.6])]
    assert clip_scores("mean", tracks, [0, 1, 1], "max") == pytest.approx({0: 0.2, 1: 0.8})
    assert clip_scores("mean", tracks, [0, 1, 1], "mean") == pytest.approx({0: 0.2, 1: 0.65})
    assert clip_scores("bilstm", tracks, [0, 1, 1], "max", [0.3, 0.2, 0.6]) == pytest.approx({0: 0.3, 1: 0.6})


def _scored_video(scout_scores, clip_probabilities):
    """A 60-s video scouted every 2 s, with one one-face track per dense clip at 10 s, 30 s, 50 s."""
    scouts = tuple(
        ScoutFrame(int(t * 25), t, np.array([[0, 0, 100, 100]], np.float32), np.array([0.99], np.float32),
                   np.array([p], np.float32))
        for t, p in zip(np.arange(0.0, 60.0, 2.0), scout_scores)
    )
    clips = tuple(ClipSpan(t, t + 1.0, SCOUTED) for t in (10.0, 30.0, 50.0))
    box = np.tile(np.float32([0, 0, 100, 100]), (25, 1))
    tracks = tuple(
        FaceTrackCrops(k, k, tuple(range(int(c.start_s * 25), int(c.start_s * 25) + 25)),
                       tuple(c.start_s + i / 25 for i in range(25)), box, np.ones(25, np.float32), None)
        for k, c in enumerate(clips)
    )
    info = MediaInfo("v.mp4", "video", duration_s=60.0, fps=25.0)
    item = ExtractedMedia(info, OK, None, 105, 75, tracks, sampling="scout", scouts=scouts, clips=clips)
    scores = tuple(tuple(FaceScore(p, np.zeros(4, np.float32), "cpu") for _ in range(25)) for p in clip_probabilities)
    return ScoredMedia(item, scores)


@pytest.mark.parametrize("strategy", ["max", "mean"])
def test_verdicts_take_the_segments_into_account(strategy):
    from transforms.aggregate import AggregateVerdictsFn
    from transforms.verdicts import VERDICT_SCHEMA, RunInfo

    import pyarrow as pa

    fn = AggregateVerdictsFn(None, strategy, RunInfo("s", "m", None, "0", threshold=0.5), aggregator="mean")
    fn.setup()
    # scout frames at 28-32 s look fake and the dense clip at 30 s confirms it
    fake = fn._judge(_scored_video([0.1] * 14 + [0.8, 0.9, 0.7] + [0.1] * 13, [0.1, 0.9, 0.2]))
    assert fake["label"] == "fake" and fake["score"] == pytest.approx(0.9)
    assert fake["segments"] == [{"start_s": 27.0, "end_s": 33.0, "score": pytest.approx(0.9)}]
    assert [c["score"] for c in fake["clips"]] == pytest.approx([0.1, 0.9, 0.2])
    assert fake["sampling_policy"] == "scout" and len(fake["timeline"]) == 30
    assert fake["timeline"][15]["score"] == pytest.approx(0.9) and len(fake["timeline"][15]["faces"]) == 1
    # one frame fools the frame model at 30 s, but the dense clip there says real: real
    real = fn._judge(_scored_video([0.1] * 15 + [0.95] + [0.1] * 14, [0.1, 0.2, 0.1]))
    assert real["label"] == "real" and real["segments"] == [] and real["score"] < 0.5
    pa.Table.from_pylist([fake, real], schema=VERDICT_SCHEMA)  # the rows fit the documented schema


def test_coverage_counts_what_was_looked_at():
    row = {"fps": 25.0, "timeline": [{"timestamp": t} for t in np.arange(1.0, 60.0, 2.0)],
           "clips": [{"start_s": 10.0, "end_s": 11.0}]}
    times = looked_at(row)
    assert len(times) == 30 + 25
    assert coverage(times, 60.0) == pytest.approx(1.0) and largest_gap(times, 60.0) == pytest.approx(2.0)
    assert coverage(times, 60.0, reach_s=0.5) == pytest.approx((30 * 1.0 + 1.0) / 60)
    clips_only = looked_at({"fps": 25.0, "clips": [{"start_s": 10.0, "end_s": 11.0}]})
    assert coverage(clips_only, 60.0) == pytest.approx(2.96 / 60, abs=1e-6)
    assert largest_gap(clips_only, 60.0) == pytest.approx(49.04)
