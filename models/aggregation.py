"""From per-face results to one score per input: the scan's rule, and calibration's.

The scan (``transforms/aggregate.py``) and the training job's calibration
(``pipeline/train.py``) both call :func:`aggregate`, so the verdict threshold is
chosen on validation scores computed exactly as a scan computes them.

Aggregators (the model card's ``aggregator``, or ``"frame"`` for a still image):

- ``"bilstm"``: a track's score is the sequence model's fake probability over its
  frame embeddings (computed by the caller with ``models.inference.SequencePredictor``);
- ``"mean"`` and ``"frame"``: a track's score is the mean of its frame probabilities;
- ``"sbi"``: the Self-Blended Images authors' video rule. Per frame, the maximum
  probability over the faces whose box area is at least half the largest face's in
  that frame; per input, the mean over frames. Track scores are still the means of
  their frame probabilities, for display; they do not make the input's score.

For every aggregator but ``"sbi"`` the input's score combines its track scores by
a strategy: ``"max"`` (the scan's default: one suspicious face flags the input),
``"mean"`` or ``"longest"`` (the score of the track with the most faces).
:func:`clip_scores` applies the same rule to each dense clip alone, which is how
a clip confirms a suspicious stretch of a long video (``models.segments``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

BILSTM = "bilstm"
MEAN = "mean"
SBI = "sbi"
FRAME = "frame"
AGGREGATORS = (BILSTM, MEAN, SBI, FRAME)
STRATEGIES = ("max", "mean", "longest")
# The SBI rule keeps, per frame, faces with at least this share of the largest face's box area.
SBI_MIN_AREA_RATIO = 0.5


@dataclass(frozen=True)
class TrackFaces:
    """The frame model's results along one face track.

    Attributes:
        probabilities: ``(T,)`` fake probability of each face.
        boxes: ``(T, 4)`` face boxes ``x1, y1, x2, y2`` in source pixels.
        frame_indices: ``(T,)`` source frame of each face; faces of different tracks
            with the same index were seen in the same frame.
    """

    probabilities: np.ndarray
    boxes: np.ndarray
    frame_indices: np.ndarray

    def __post_init__(self) -> None:
        probabilities = np.asarray(self.probabilities, np.float64).reshape(-1)
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        frames = np.asarray(self.frame_indices, np.int64).reshape(-1)
        if probabilities.size == 0:
            raise ValueError("a track needs at least one face")
        if not probabilities.size == len(boxes) == frames.size:
            raise ValueError(f"a track's probabilities, boxes and frame indices differ in length: "
                             f"{probabilities.size}, {len(boxes)}, {frames.size}")
        object.__setattr__(self, "probabilities", probabilities)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "frame_indices", frames)

    def __len__(self) -> int:
        return self.probabilities.size


@dataclass(frozen=True)
class Aggregate:
    """An input's score, its tracks' scores and the aggregator that made them."""

    score: float
    track_scores: tuple[float, ...]
    aggregator: str


def combine_tracks(track_scores: Sequence[float], track_lengths: Sequence[int], strategy: str) -> float:
    """An input's score from its tracks' scores: their ``max``, ``mean``, or the ``longest`` track's."""
    if not len(track_scores) or len(track_scores) != len(track_lengths):
        raise ValueError(f"need one length per track score, got {len(track_scores)} scores "
                         f"and {len(track_lengths)} lengths")
    if strategy == "max":
        return float(np.max(track_scores))
    if strategy == "mean":
        return float(np.mean(track_scores))
    if strategy == "longest":
        return float(track_scores[int(np.argmax(track_lengths))])
    raise ValueError(f"unknown aggregate strategy {strategy!r} (valid: {', '.join(STRATEGIES)})")


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of ``(N, 4)`` boxes ``x1, y1, x2, y2`` (0 for degenerate boxes)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def sbi_score(probabilities, areas, frame_indices, min_area_ratio: float = SBI_MIN_AREA_RATIO) -> float:
    """The Self-Blended Images authors' video score from every face of an input.

    Per frame: the maximum probability over the faces whose area is at least
    ``min_area_ratio`` of the largest face's in that frame (small background
    faces do not decide). Per input: the mean of those frame scores, each frame
    counting once however many faces it holds.

    Args:
        probabilities: ``(N,)`` fake probability of each face.
        areas: ``(N,)`` box area of each face.
        frame_indices: ``(N,)`` the frame each face was seen in.
    """
    p = np.asarray(probabilities, np.float64).reshape(-1)
    a = np.asarray(areas, np.float64).reshape(-1)
    f = np.asarray(frame_indices).reshape(-1)
    if p.size == 0 or not p.size == a.size == f.size:
        raise ValueError(f"need equally many (>= 1) probabilities, areas and frame indices, "
                         f"got {p.size}, {a.size}, {f.size}")
    frames, frame_of = np.unique(f, return_inverse=True)
    largest = np.full(frames.size, -np.inf)
    np.maximum.at(largest, frame_of, a)
    kept = a >= min_area_ratio * largest[frame_of]  # the largest face of a frame always stays
    per_frame = np.full(frames.size, -np.inf)
    np.maximum.at(per_frame, frame_of[kept], p[kept])
    return float(per_frame.mean())


def aggregate(
    aggregator: str,
    tracks: Sequence[TrackFaces],
    strategy: str,
    sequence_scores: Optional[Sequence[float]] = None,
) -> Aggregate:
    """An input's score and its tracks' scores, as the scan reports them.

    Args:
        aggregator: ``"bilstm"``, ``"mean"``, ``"sbi"`` or ``"frame"`` (see the module).
        tracks: The input's face tracks (at least one).
        strategy: How track scores combine (``max``, ``mean``, ``longest``); the
            ``"sbi"`` rule does not use it.
        sequence_scores: ``"bilstm"`` only: the sequence model's probability per track.

    Raises:
        ValueError: On an unknown aggregator or strategy, no tracks, or sequence
            scores missing for ``"bilstm"`` (or given to another aggregator).
    """
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {aggregator!r} (valid: {', '.join(AGGREGATORS)})")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown aggregate strategy {strategy!r} (valid: {', '.join(STRATEGIES)})")
    if not tracks:
        raise ValueError("an input needs at least one face track to be scored")
    if (aggregator == BILSTM) != (sequence_scores is not None):
        raise ValueError("sequence scores are needed for the 'bilstm' aggregator, and only for it")
    if aggregator == BILSTM:
        track_scores = tuple(float(s) for s in np.asarray(sequence_scores, np.float64).reshape(-1))
        if len(track_scores) != len(tracks):
            raise ValueError(f"{len(track_scores)} sequence scores for {len(tracks)} tracks")
    else:
        track_scores = tuple(float(t.probabilities.mean()) for t in tracks)
    if aggregator == SBI:
        score = sbi_score(
            np.concatenate([t.probabilities for t in tracks]),
            np.concatenate([box_areas(t.boxes) for t in tracks]),
            np.concatenate([t.frame_indices for t in tracks]),
        )
    else:
        score = combine_tracks(track_scores, [len(t) for t in tracks], strategy)
    return Aggregate(score=score, track_scores=track_scores, aggregator=aggregator)


def clip_scores(
    aggregator: str,
    tracks: Sequence[TrackFaces],
    clip_indices: Sequence[int],
    strategy: str,
    sequence_scores: Optional[Sequence[float]] = None,
) -> dict[int, float]:
    """Each dense clip's score: :func:`aggregate` over that clip's tracks alone.

    Args:
        aggregator, strategy: As for :func:`aggregate`.
        tracks: The input's face tracks.
        clip_indices: The clip each track was followed in.
        sequence_scores: ``"bilstm"`` only: the sequence model's probability per track.

    Returns:
        ``clip index -> score`` for every clip holding a track.
    """
    if len(clip_indices) != len(tracks):
        raise ValueError(f"{len(clip_indices)} clip indices for {len(tracks)} tracks")
    sequence = None if sequence_scores is None else np.asarray(sequence_scores, np.float64).reshape(-1)
    scores = {}
    for clip in sorted(set(int(c) for c in clip_indices)):
        members = [k for k, c in enumerate(clip_indices) if int(c) == clip]
        scores[clip] = aggregate(aggregator, [tracks[k] for k in members], strategy,
                                 None if sequence is None else sequence[members]).score
    return scores
