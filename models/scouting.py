"""Where to look in a video: scout frames over its whole length, then dense clips where they point.

A few clips of consecutive frames judge a long video on seconds of it. The
``scout`` sampling policy first looks at single frames across the whole
duration, at most ``every_s`` seconds apart (:func:`scout_positions`); the
frame model scores each face on them (``transforms/scouting.py``). Dense clips
for the sequence model then go where those scores are highest, with a few
spread evenly for context (:func:`place_clips`). Everything here is frame
indices in, frame indices out: no decoding, no model.

Scout frames prefer keyframes: a keyframe decodes alone after a seek, any
other frame needs the frames before it back to its keyframe. Where keyframes
are at most ``every_s`` apart, scouting decodes only keyframes; where they are
further apart, the frames between two keyframes are still scouted, decoded
forward from the keyframe before them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# Why a dense clip is where it is (the verdict's ``clips[].placed``).
SCOUTED = "scout"  # centred on a scout frame that scored high
CONTEXT = "context"  # spread evenly, beside the scouted clips
EVEN = "even"  # the ``clips`` policy: evenly spaced
UNIFORM = "uniform"  # the ``uniform`` policy: frames spread over the whole video


@dataclass(frozen=True)
class ScoutFrame:
    """One scout frame: the faces found on it and the frame model's fake probability of each.

    Attributes:
        frame_index: Source frame.
        timestamp: Seconds from the start.
        boxes: ``(k, 4)`` face boxes ``x1, y1, x2, y2`` in source pixels.
        detection_scores: ``(k,)`` detector confidence of each face.
        probabilities: ``(k,)`` fake probability of each face; NaN for a face too small to judge.
    """

    frame_index: int
    timestamp: float
    boxes: np.ndarray
    detection_scores: np.ndarray
    probabilities: np.ndarray

    @property
    def face_sizes(self) -> np.ndarray:
        """Each face's longer box side, in source pixels."""
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])

    @property
    def score(self) -> Optional[float]:
        """The frame's score: its most suspicious judged face; ``None`` when no face was judged."""
        judged = np.asarray(self.probabilities, np.float64)
        judged = judged[np.isfinite(judged)]
        return float(judged.max()) if judged.size else None


@dataclass(frozen=True)
class ClipSpan:
    """Where a dense clip lies in the video, and why it was put there (``SCOUTED``, ``CONTEXT``, ...)."""

    start_s: float
    end_s: float
    placed: str


@dataclass(frozen=True)
class PlannedClip:
    """A dense clip to decode (frame indices, consecutive but for the ``uniform`` policy's) and why it is there."""

    indices: tuple[int, ...]
    placed: str

    @staticmethod
    def consecutive(start: int, length: int, placed: str) -> "PlannedClip":
        return PlannedClip(tuple(range(start, start + length)), placed)

    @property
    def start(self) -> int:
        return self.indices[0]


def scout_positions(num_frames: int, fps: float, every_s: float,
                    keyframes: Optional[Sequence[int]] = None) -> list[int]:
    """Scout frames over the whole video: consecutive ones at most ``every_s`` apart.

    The first lies within half a step of the start and the last within half a
    step of the end. Each next frame is the latest keyframe between half a step
    and a step after the one before, or, where no keyframe lies there, the frame
    a step after it. Consecutive frames are therefore at least half a step and at
    most a step apart, on keyframes wherever keyframes allow.
    """
    if num_frames <= 0:
        return []
    step = max(every_s * (fps if fps > 0 else 25.0), 1.0)
    last = num_frames - 1
    keys = np.unique(np.asarray([k for k in (keyframes or ()) if 0 <= k <= last], np.int64))
    picks: list[int] = []
    previous = -step / 2
    while previous < last - step / 2:
        low, high = math.ceil(previous + step / 2), min(math.floor(previous + step), last)
        between = keys[(keys >= low) & (keys <= high)]
        pick = int(between[-1]) if between.size else high
        picks.append(pick)
        previous = pick
    return picks or [0]


def dense_clip_count(duration_s: float, clip_every_s: float, max_clips: int) -> int:
    """One clip for every ``clip_every_s`` seconds of video, at least one and at most ``max_clips``."""
    return int(min(max_clips, max(1, math.ceil(duration_s / clip_every_s))))


def place_clips(
    num_frames: int,
    clip_len: int,
    count: int,
    scored: Sequence[tuple[int, float]],
    *,
    context: int,
    min_gap: int,
    keyframes: Optional[Sequence[int]] = None,
) -> list[PlannedClip]:
    """``count`` dense clips of ``clip_len`` frames: most on the highest-scoring scout frames, the rest spread.

    Args:
        num_frames: Frames in the video.
        clip_len: Frames per clip.
        count: Clips to place (``dense_clip_count``).
        scored: ``(frame index, score)`` of the scout frames that hold a judged face.
        context: How many of the clips are spread evenly (fewer when ``count`` is
            small: at least one clip always goes to the highest scout score).
        min_gap: Scouted clips centre on scout frames at least this many frames apart,
            so that one suspicious stretch does not take every clip.
        keyframes: A clip starts on a keyframe when one lies close enough (for a
            scouted clip: the clip still holds its scout frame), so no frame is
            decoded only to be dropped.

    Returns:
        The clips in time order; they never overlap.
    """
    if num_frames <= 0:
        return []
    if num_frames <= clip_len:
        return [PlannedClip.consecutive(0, num_frames, SCOUTED if scored else EVEN)]
    last_start = num_frames - clip_len
    keys = np.unique(np.asarray([k for k in (keyframes or ()) if 0 <= k <= last_start], np.int64))
    wanted = count - min(context, count - 1)
    clips: list[PlannedClip] = []
    centres: list[int] = []
    for index, _ in sorted(scored, key=lambda s: (-s[1], s[0])):
        if len(clips) == wanted:
            break
        start = _scouted_start(int(index), clip_len, last_start, keys)
        if all(abs(index - c) >= min_gap for c in centres) and all(abs(start - c.start) >= clip_len for c in clips):
            clips.append(PlannedClip.consecutive(start, clip_len, SCOUTED))
            centres.append(int(index))
    scouted = bool(clips)
    spread = np.linspace(0, last_start, count).round().astype(int).tolist() if count > 1 else [last_start // 2]
    reach = (last_start / (count - 1)) / 2 if count > 1 else 2 * clip_len
    # The evenly spread starts furthest from the scouted clips fill the remaining places.
    spread.sort(key=lambda s: -min((abs(s - c.start) for c in clips), default=num_frames))
    for start in spread:
        if len(clips) == count:
            break
        start = _snapped(start, keys, reach)
        if all(abs(start - c.start) >= clip_len for c in clips):
            clips.append(PlannedClip.consecutive(start, clip_len, CONTEXT if scouted else EVEN))
    return sorted(clips, key=lambda c: c.start)


def _scouted_start(centre: int, clip_len: int, last_start: int, keys: np.ndarray) -> int:
    """The start of a clip around ``centre``: a keyframe when one lets the clip still hold it."""
    start = min(max(centre - clip_len // 2, 0), last_start)
    holding = keys[(keys <= centre) & (keys > centre - clip_len)]
    if holding.size:
        return int(holding[np.argmin(np.abs(holding - start))])
    return start


def _snapped(start: int, keys: np.ndarray, reach: float) -> int:
    if not keys.size:
        return start
    nearest = int(keys[np.argmin(np.abs(keys - start))])
    return nearest if abs(nearest - start) <= reach else start


def batches(indices: Sequence[int], size: int) -> list[list[int]]:
    """``indices`` in order, in batches of at most ``size``: what the decoder holds at a time."""
    size = max(int(size), 1)
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]
