"""The verdict table: its schema, one row per input, and the Parquet writer."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from models.labels import verdict
from models.scouting import ScoutFrame
from models.segments import Segment
from transforms.elements import ExtractedMedia
from transforms.parquet_sink import WriteParquetTable

TRACK_TYPE = pa.struct(
    [
        ("track_id", pa.int32()),
        ("clip_index", pa.int32()),
        ("frame_indices", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.float64())),
        ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        ("detection_scores", pa.list_(pa.float32())),
        ("interpolated", pa.list_(pa.bool_())),
        ("face_size", pa.float32()),  # median longer box side, source pixels
        ("scores", pa.list_(pa.float32())),
        ("score", pa.float32()),  # null: not scored (e.g. smaller than faces.min_judge_size)
    ]
)

# A face on a scout frame (sampling policy ``scout``).
SCOUT_FACE_TYPE = pa.struct(
    [
        ("box", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2, source pixels
        ("detection_score", pa.float32()),
        ("face_size", pa.float32()),  # longer box side, source pixels
        ("score", pa.float32()),  # the frame model's fake probability; null: too small to judge
    ]
)

# One scout frame: the whole-video timeline.
TIMELINE_TYPE = pa.struct(
    [
        ("frame_index", pa.int32()),
        ("timestamp", pa.float64()),
        ("score", pa.float32()),  # its most suspicious face's; null: no face judged
        ("faces", pa.list_(SCOUT_FACE_TYPE)),
    ]
)

# One dense clip: where it lies, why, and its score (its tracks aggregated as the input's are).
CLIP_TYPE = pa.struct(
    [
        ("clip_index", pa.int32()),  # tracks[].clip_index
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("placed", pa.string()),  # scout, context (policy scout); even (clips); uniform
        ("score", pa.float64()),  # null: no face judged in it
    ]
)

# A stretch judged manipulated (models/segments.py).
SEGMENT_TYPE = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("score", pa.float64())])

VERDICT_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("file_size", pa.int64()),
        ("content_sha256", pa.string()),
        ("source_version", pa.string()),  # metadata pre-key: unchanged when the bytes are (see README)
        ("media_type", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("codec", pa.string()),
        ("decoder", pa.string()),
        ("warnings", pa.list_(pa.string())),
        ("frames_sampled", pa.int32()),
        ("faces_found", pa.int32()),
        ("num_tracks", pa.int32()),
        ("tracks", pa.list_(TRACK_TYPE)),
        ("sampling_policy", pa.string()),  # videos: scout, clips or uniform (what chose the frames)
        ("timeline", pa.list_(TIMELINE_TYPE)),  # scout frames across the video, in time order
        ("clips", pa.list_(CLIP_TYPE)),
        ("segments", pa.list_(SEGMENT_TYPE)),  # stretches judged manipulated, in time order
        ("score", pa.float64()),
        ("label", pa.string()),
        ("threshold", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("model_name", pa.string()),
        ("checkpoint_sha256", pa.string()),
        ("aggregator", pa.string()),
        ("device", pa.string()),
        ("package_version", pa.string()),
        ("scan_id", pa.string()),
        ("scanned_at", pa.timestamp("us", tz="UTC")),
        ("previous_scan_id", pa.string()),
    ]
)


@dataclass(frozen=True)
class RunInfo:
    """Facts shared by every row of one scan."""

    scan_id: str
    model_name: str
    checkpoint_sha256: Optional[str]
    package_version: str
    threshold: float
    image_threshold: Optional[float] = None  # stills; None: ``threshold``

    def threshold_for(self, media_type: Optional[str]) -> float:
        """The threshold an input of ``media_type`` is labelled with."""
        if media_type == "image" and self.image_threshold is not None:
            return self.image_threshold
        return self.threshold


def verdict_row(
    item: ExtractedMedia,
    run: RunInfo,
    *,
    track_scores: Sequence[Sequence[float]] = (),
    track_probabilities: Sequence[float] = (),
    score: Optional[float] = None,
    aggregator: Optional[str] = None,
    device: Optional[str] = None,
    status: Optional[str] = None,
    error: Optional[str] = None,
    clip_scores: Optional[dict[int, float]] = None,
    segments: Sequence[Segment] = (),
) -> dict[str, Any]:
    """One row of ``VERDICT_SCHEMA`` for ``item``; ``status``/``error`` override the item's.

    ``track_scores``/``track_probabilities`` follow ``item.tracks``; the tracks too
    small to judge (``item.small_tracks``) follow them in the row, unscored.
    ``clip_scores``: clip index -> score of the clips holding judged faces.
    """
    info = item.info
    tracks = []
    for i, track in enumerate(item.tracks + item.small_tracks):
        tracks.append(
            {
                "track_id": track.track_id,
                "clip_index": track.clip_index,
                "frame_indices": list(track.frame_indices),
                "timestamps": list(track.timestamps),
                "boxes": [[float(v) for v in box] for box in track.boxes],
                "detection_scores": [float(v) for v in track.detection_scores],
                "interpolated": [bool(v) for v in track.interpolated] or [False] * len(track),
                "face_size": track.face_size,
                "scores": [float(v) for v in track_scores[i]] if i < len(track_scores) else [],
                "score": float(track_probabilities[i]) if i < len(track_probabilities) else None,
            }
        )
    threshold = run.threshold_for(info.media_type)
    label = None if score is None else verdict(score, threshold)
    previous = info.previous or {}
    if previous and score is None:  # skipped: the earlier scan's verdict, under the same checkpoint
        score = previous.get("score")
        label = previous.get("label")
    return {
        "uri": info.uri,
        "file_size": info.file_size,
        "content_sha256": info.content_sha256,
        "source_version": info.source_version,
        "media_type": info.media_type,
        "duration_s": info.duration_s,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "decoder": info.decoder,
        "warnings": list(info.warnings),
        "frames_sampled": item.frames_sampled,
        "faces_found": item.faces_found,
        "num_tracks": len(tracks),
        "tracks": tracks,
        "sampling_policy": item.sampling,
        "timeline": [_timeline_entry(f) for f in item.scouts],
        "clips": [
            {"clip_index": k, "start_s": c.start_s, "end_s": c.end_s, "placed": c.placed,
             "score": (clip_scores or {}).get(k)}
            for k, c in enumerate(item.clips)
        ],
        "segments": [{"start_s": g.start_s, "end_s": g.end_s, "score": g.score} for g in segments],
        "score": None if score is None else float(score),
        "label": label,
        "threshold": threshold,
        "status": status or item.status,
        "error": error if status else item.error,
        "model_name": run.model_name,
        "checkpoint_sha256": run.checkpoint_sha256,
        "aggregator": aggregator,
        "device": device,
        "package_version": run.package_version,
        "scan_id": run.scan_id,
        "scanned_at": dt.datetime.now(dt.timezone.utc),
        "previous_scan_id": previous.get("scan_id"),
    }


def _timeline_entry(frame: ScoutFrame) -> dict[str, Any]:
    faces = [
        {"box": [float(v) for v in box], "detection_score": float(det), "face_size": float(size),
         "score": float(p) if np.isfinite(p) else None}
        for box, det, size, p in zip(frame.boxes, frame.detection_scores, frame.face_sizes, frame.probabilities)
    ]
    return {"frame_index": frame.frame_index, "timestamp": frame.timestamp, "score": frame.score, "faces": faces}


class WriteVerdicts(beam.PTransform):
    """Writes verdict rows as Parquet files ``part-NNNNN.parquet`` under ``verdicts_dir``."""

    def __init__(self, verdicts_dir: str, staging_dir: str):
        super().__init__()
        self._verdicts_dir = verdicts_dir
        self._staging_dir = staging_dir

    def expand(self, rows):
        return rows | "WriteParquet" >> WriteParquetTable(self._verdicts_dir, self._staging_dir, VERDICT_SCHEMA)
