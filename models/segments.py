"""Which stretches of a video are judged manipulated, and how they weigh on its score.

Two kinds of evidence meet here. Scout frames (``models.scouting``) cover the
whole video sparsely, each scored alone by the frame model; dense clips cover a
second at a time, scored as the checkpoint's aggregator says (the BiLSTM over
the track, the mean, the SBI rule). A single frame can fool the frame model, so
scout frames alone never make a segment:

1. A *stretch* is a run of consecutive scout frames whose score reaches the
   threshold (scout frames without a judged face neither break nor extend a run).
   It reaches half-way to the scout frames on either side of it.
2. A stretch becomes a *segment* when a dense clip overlapping it scores at or
   above the threshold: the clip confirms it. The segment spans the stretch
   and its confirming clips; its score is the best confirming clip's.
3. A dense clip at or above the threshold that no stretch holds is a segment by
   itself: the dense clips see what single frames may miss.

A video's score is the higher of its tracks' aggregate and its best segment's
score (:func:`video_score`): any segment makes the video fake, and a video whose
suspicious scout frames the dense clips do not confirm keeps its tracks' score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Segment:
    """A stretch of the video judged manipulated, in seconds from the start."""

    start_s: float
    end_s: float
    score: float


def scout_stretches(times: Sequence[float], scores: Sequence[Optional[float]], threshold: float,
                    duration_s: float) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of each run of scout frames scoring at least ``threshold`` (see the module).

    Args:
        times: Scout frame timestamps, in increasing order.
        scores: Their scores; ``None`` for a frame without a judged face.
        threshold: The verdict threshold.
        duration_s: The video's duration: the last stretch ends there at the latest.
    """
    if len(times) != len(scores):
        raise ValueError(f"{len(times)} scout times but {len(scores)} scores")
    stretches: list[tuple[float, float]] = []
    run: Optional[tuple[int, int]] = None  # first and last position of the current run
    for pos, score in enumerate(scores):
        if score is None:
            continue
        if score >= threshold:
            run = (run[0], pos) if run else (pos, pos)
            continue
        if run:
            stretches.append(_span(times, run, duration_s))
            run = None
    if run:
        stretches.append(_span(times, run, duration_s))
    return stretches


def _span(times: Sequence[float], run: tuple[int, int], duration_s: float) -> tuple[float, float]:
    first, last = run
    start = 0.0 if first == 0 else (times[first - 1] + times[first]) / 2
    end = duration_s if last == len(times) - 1 else (times[last] + times[last + 1]) / 2
    return start, max(end, times[last])


def find_segments(
    scout_times: Sequence[float],
    scout_scores: Sequence[Optional[float]],
    clips: Sequence[tuple[float, float, Optional[float]]],
    threshold: float,
    duration_s: float,
) -> list[Segment]:
    """The stretches judged manipulated (see the module), in time order, merged where they overlap.

    Args:
        scout_times: Scout frame timestamps, in increasing order (empty when the video was not scouted).
        scout_scores: Their scores (``None``: no judged face).
        clips: ``(start_s, end_s, score)`` of each dense clip; ``None``: no judged face in it.
        threshold: The verdict threshold.
        duration_s: The video's duration.
    """
    fake_clips = [(s, e, score) for s, e, score in clips if score is not None and score >= threshold]
    found: list[Segment] = []
    used = set()
    for start, end in scout_stretches(scout_times, scout_scores, threshold, duration_s):
        confirming = [k for k, (s, e, _) in enumerate(fake_clips) if s < end and e > start]
        if not confirming:
            continue
        used.update(confirming)
        found.append(Segment(min([start] + [fake_clips[k][0] for k in confirming]),
                             max([end] + [fake_clips[k][1] for k in confirming]),
                             max(fake_clips[k][2] for k in confirming)))
    found += [Segment(s, e, score) for k, (s, e, score) in enumerate(fake_clips) if k not in used]
    return _merged(found)


def _merged(segments: list[Segment]) -> list[Segment]:
    merged: list[Segment] = []
    for seg in sorted(segments, key=lambda s: s.start_s):
        if merged and seg.start_s <= merged[-1].end_s:
            last = merged[-1]
            merged[-1] = Segment(last.start_s, max(last.end_s, seg.end_s), max(last.score, seg.score))
        else:
            merged.append(seg)
    return merged


def video_score(tracks_score: float, segments: Sequence[Segment]) -> float:
    """The video's score: its tracks' aggregate, raised to its best segment's score."""
    return max([float(tracks_score)] + [float(s.score) for s in segments])


def clock(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (``h:mm:ss`` from an hour)."""
    total = int(round(max(seconds, 0.0)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_segments(segments: Sequence) -> str:
    """``"manipulated 4:12-4:31 (0.93), ..."``; ``""`` for none. Takes ``Segment``s or verdict dicts."""
    parts = []
    for seg in segments:
        start, end, score = (seg["start_s"], seg["end_s"], seg["score"]) if isinstance(seg, dict) else (
            seg.start_s, seg.end_s, seg.score)
        parts.append(f"{clock(start)}-{clock(end)} ({score:.2f})")
    return "manipulated " + ", ".join(parts) if parts else ""
