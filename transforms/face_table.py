"""Labelled face crops as a Parquet table: the training job's input (schemas: ``transforms.face_schema``)."""
from __future__ import annotations

from typing import Iterable, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.preprocess import encode_crop
from transforms.elements import METRICS_NAMESPACE, OK, ExtractedMedia
from transforms.face_schema import FACE_ROWS_PER_GROUP, FACE_SCHEMA, VIDEO_SCHEMA

__all__ = ["FACE_ROWS_PER_GROUP", "FACE_SCHEMA", "VIDEO_SCHEMA", "FaceRowsFn", "video_row"]


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
