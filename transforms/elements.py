"""The small, typed elements that flow between the scan job's stages.

Only face crops (inside ``FaceTrackCrops``) ever cross a stage boundary; full
frames stay inside the DoFn that decoded them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np

from models.scouting import ClipSpan, ScoutFrame

# Status of an input's verdict. Each non-ok status comes with an error text.
OK = "ok"
NO_FACE = "no_face"
SMALL_FACE = "small_face"  # faces found, but every track's is under faces.min_judge_size: not judged
UNREADABLE = "unreadable"
UNSUPPORTED = "unsupported"
TIMEOUT = "timeout"  # the decoder overran decode.timeout_s and was killed
TOO_LARGE = "too_large"  # over a decode.max_* limit
SKIPPED = "skipped"  # --skip-scanned: judged by the same checkpoint in an earlier scan
ERROR = "error"
STATUSES = (OK, NO_FACE, SMALL_FACE, UNREADABLE, UNSUPPORTED, TIMEOUT, TOO_LARGE, SKIPPED, ERROR)


# Beam metrics namespace of every counter and stage timer the jobs report.
METRICS_NAMESPACE = "deepfake_scan"


@dataclass(frozen=True)
class MediaInput:
    """One file to judge, as listed by the driver."""

    uri: str
    media_type: Optional[str]  # "video", "image", or None for an unsupported type
    source_version: Optional[str] = None  # metadata pre-key of the bytes, when the listing knows it


@dataclass(frozen=True)
class MediaInfo:
    """What is known about an input's bytes and container."""

    uri: str
    media_type: Optional[str]
    file_size: Optional[int] = None
    content_sha256: Optional[str] = None
    source_version: Optional[str] = None  # metadata pre-key of the bytes (media.source_version)
    duration_s: Optional[float] = None
    fps: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    codec: Optional[str] = None
    num_frames: Optional[int] = None
    decoder: Optional[str] = None  # which decoder produced the frames
    warnings: tuple[str, ...] = ()  # what went wrong without stopping the verdict
    previous: Optional[dict] = None  # SKIPPED: the earlier verdict (transforms.earlier_verdicts)


@dataclass(frozen=True)
class FaceTrackCrops:
    """One face followed through one clip, with its aligned crops."""

    track_id: int
    clip_index: int
    frame_indices: tuple[int, ...]
    timestamps: tuple[float, ...]
    boxes: np.ndarray  # (n, 4) float32 full-resolution x1, y1, x2, y2
    detection_scores: np.ndarray  # (n,) float32
    crops: Optional[np.ndarray]  # (n, S, S, 3) uint8 RGB; None once scored
    interpolated: tuple[bool, ...] = ()  # per frame: box interpolated between detected frames (empty: none)

    def __len__(self) -> int:
        return len(self.frame_indices)

    @property
    def face_size(self) -> float:
        """The face's size in source pixels: the median over frames of the box's longer side."""
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return 0.0
        return float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))


@dataclass(frozen=True)
class ExtractedMedia:
    """An input after decoding and face extraction: exactly one per input."""

    info: MediaInfo
    status: str
    error: Optional[str] = None
    frames_sampled: int = 0
    faces_found: int = 0
    tracks: tuple[FaceTrackCrops, ...] = ()
    # Tracks whose face is under faces.min_judge_size: reported in the verdict, never cropped or scored.
    small_tracks: tuple[FaceTrackCrops, ...] = ()
    sampling: Optional[str] = None  # the sampling policy that chose the frames (videos): scout, clips, uniform
    scouts: tuple[ScoutFrame, ...] = ()  # scout: the frames looked at across the video, already scored
    clips: tuple[ClipSpan, ...] = ()  # where each dense clip lies (tracks' clip_index points here)

    def without_crops(self) -> "ExtractedMedia":
        """The same element without pixel data, to travel beside the scores."""
        tracks = tuple(dataclasses.replace(t, crops=None) for t in self.tracks)
        return dataclasses.replace(self, tracks=tracks)


@dataclass(frozen=True)
class FaceScore:
    """The frame model's output for one face crop."""

    fake_probability: float
    embedding: np.ndarray  # (D,) float32, pooled backbone features
    device: str


@dataclass(frozen=True)
class CropKey:
    """Where a face crop came from: the key carried through RunInference."""

    uri: str
    track_id: int
    position: int  # index within the track


@dataclass(frozen=True)
class ScoredMedia:
    """An input's extraction (without crops) joined with its faces' scores."""

    media: ExtractedMedia
    scores: tuple[tuple[FaceScore, ...], ...]  # per track, in frame order
    failures: tuple[str, ...] = ()  # why the frame model could not score some faces
