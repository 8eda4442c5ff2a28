"""Labelled face crops as a Parquet table: the training job's input."""
from __future__ import annotations

from typing import Iterable, Mapping

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from models.preprocess import encode_crop
from transforms.elements import METRICS_NAMESPACE, OK, ExtractedMedia

FACE_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("group", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("manipulation", pa.string()),
        ("track_id", pa.int32()),
        ("clip_index", pa.int32()),
        ("frame_index", pa.int32()),
        ("timestamp", pa.float64()),
        ("box", pa.list_(pa.float32(), 4)),
        ("crop_png", pa.binary()),  # lossless: re-compression would be a manipulation cue of its own
        ("crop_size", pa.int32()),
    ]
)

VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("num_tracks", pa.int32()),
        ("faces", pa.int32()),
    ]
)


class FaceRowsFn(beam.DoFn):
    """One row per face crop, with the video's label, group and split (a side input)."""

    def process(self, item: ExtractedMedia, videos: Mapping[str, dict]) -> Iterable[dict]:
        meta = videos[item.info.uri]
        if item.status != OK:
            Metrics.counter(METRICS_NAMESPACE, f"training_video_{item.status}").inc()
        for track in item.tracks:
            for pos in range(len(track)):
                yield {
                    "video_id": meta["video_id"],
                    "uri": item.info.uri,
                    "group": meta["group"],
                    "split": meta["split"],
                    "label": meta["label"],
                    "manipulation": meta["manipulation"],
                    "track_id": track.track_id,
                    "clip_index": track.clip_index,
                    "frame_index": track.frame_indices[pos],
                    "timestamp": track.timestamps[pos],
                    "box": [float(v) for v in track.boxes[pos]],
                    "crop_png": encode_crop(track.crops[pos]),
                    "crop_size": int(track.crops[pos].shape[0]),
                }


def video_row(item: ExtractedMedia, videos: Mapping[str, dict]) -> dict:
    meta = videos[item.info.uri]
    return {
        "video_id": meta["video_id"],
        "uri": item.info.uri,
        "split": meta["split"],
        "label": meta["label"],
        "status": item.status,
        "error": item.error,
        "num_tracks": len(item.tracks),
        "faces": item.faces_found,
    }
