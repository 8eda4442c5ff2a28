"""The verdict table: its schema, one row per input, and the Parquet writer."""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.transforms.window import GlobalWindows

from transforms.elements import ExtractedMedia

logger = logging.getLogger(__name__)

TRACK_TYPE = pa.struct(
    [
        ("track_id", pa.int32()),
        ("clip_index", pa.int32()),
        ("frame_indices", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.float64())),
        ("boxes", pa.list_(pa.list_(pa.float32(), 4))),
        ("detection_scores", pa.list_(pa.float32())),
        ("scores", pa.list_(pa.float32())),
        ("score", pa.float32()),
    ]
)

VERDICT_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("file_size", pa.int64()),
        ("content_sha256", pa.string()),
        ("media_type", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("codec", pa.string()),
        ("decoder", pa.string()),
        ("frames_sampled", pa.int32()),
        ("faces_found", pa.int32()),
        ("num_tracks", pa.int32()),
        ("tracks", pa.list_(TRACK_TYPE)),
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
) -> dict[str, Any]:
    """One row of ``VERDICT_SCHEMA`` for ``item``; ``status``/``error`` override the item's."""
    info = item.info
    tracks = []
    for i, track in enumerate(item.tracks):
        tracks.append(
            {
                "track_id": track.track_id,
                "clip_index": track.clip_index,
                "frame_indices": list(track.frame_indices),
                "timestamps": list(track.timestamps),
                "boxes": [[float(v) for v in box] for box in track.boxes],
                "detection_scores": [float(v) for v in track.detection_scores],
                "scores": [float(v) for v in track_scores[i]] if i < len(track_scores) else [],
                "score": float(track_probabilities[i]) if i < len(track_probabilities) else None,
            }
        )
    label = None if score is None else ("fake" if score >= run.threshold else "real")
    return {
        "uri": info.uri,
        "file_size": info.file_size,
        "content_sha256": info.content_sha256,
        "media_type": info.media_type,
        "duration_s": info.duration_s,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "decoder": info.decoder,
        "frames_sampled": item.frames_sampled,
        "faces_found": item.faces_found,
        "num_tracks": len(item.tracks),
        "tracks": tracks,
        "score": None if score is None else float(score),
        "label": label,
        "threshold": run.threshold,
        "status": status or item.status,
        "error": error if status else item.error,
        "model_name": run.model_name,
        "checkpoint_sha256": run.checkpoint_sha256,
        "aggregator": aggregator,
        "device": device,
        "package_version": run.package_version,
        "scan_id": run.scan_id,
        "scanned_at": dt.datetime.now(dt.timezone.utc),
    }


class _WriteShardsFn(beam.DoFn):
    """Buffers a bundle's rows and writes them as one staged Parquet shard.

    A retried bundle writes a new shard under a new name; only the names emitted
    by bundles that committed reach the publish step, so retries never duplicate rows.
    """

    def __init__(self, staging_dir: str, max_rows: int = 5000):
        self._staging_dir = staging_dir.rstrip("/")
        self._max_rows = max_rows
        self._rows: list[dict] = []

    def start_bundle(self) -> None:
        self._rows = []

    def process(self, row: dict):
        self._rows.append(row)
        if len(self._rows) >= self._max_rows:
            yield self._flush()

    def finish_bundle(self):
        if self._rows:
            yield GlobalWindows.windowed_value(self._flush())

    def _flush(self) -> str:
        path = f"{self._staging_dir}/part-{uuid.uuid4().hex}.parquet"
        write_table(pa.Table.from_pylist(self._rows, schema=VERDICT_SCHEMA), path)
        self._rows = []
        return path


def write_table(table: pa.Table, path: str) -> None:
    with fsspec.open(path, "wb") as f:
        pq.write_table(table, f, compression="snappy")


def publish_shards(shards: list[str], staging_dir: str, verdicts_dir: str) -> list[str]:
    """Replace the contents of ``verdicts_dir`` with the staged shards.

    Earlier verdicts in the folder are removed only now, once the new ones
    exist, so a failed rerun leaves the previous scan's table in place.
    """
    fs, verdicts = fsspec.core.url_to_fs(verdicts_dir)
    _, staging = fsspec.core.url_to_fs(staging_dir)
    if fs.exists(verdicts):
        fs.rm(verdicts, recursive=True)
    fs.makedirs(verdicts, exist_ok=True)
    published = []
    if not shards:  # no rows at all: still leave a readable, empty table
        empty = f"{verdicts_dir.rstrip('/')}/part-00000.parquet"
        write_table(VERDICT_SCHEMA.empty_table(), empty)
        published.append(empty)
    for i, shard in enumerate(sorted(shards)):
        target = f"{verdicts.rstrip('/')}/part-{i:05d}.parquet"
        fs.mv(fsspec.core.url_to_fs(shard)[1], target)
        published.append(target)
    if fs.exists(staging):
        fs.rm(staging, recursive=True)
    logger.info("published %d verdict file(s) to %s", len(published), verdicts_dir)
    return published


class WriteVerdicts(beam.PTransform):
    """Writes verdict rows as Parquet files ``part-NNNNN.parquet`` under ``verdicts_dir``.

    Shards are staged in ``staging_dir`` and moved into place in one final step.
    Uses fsspec, so any URL fsspec knows works (local, ``gs://``, ``memory://``).
    """

    def __init__(self, verdicts_dir: str, staging_dir: str):
        super().__init__()
        self._verdicts_dir = verdicts_dir
        self._staging_dir = staging_dir

    def expand(self, rows):
        return (
            rows
            | "WriteShards" >> beam.ParDo(_WriteShardsFn(self._staging_dir))
            | "CollectShards" >> beam.combiners.ToList()
            | "Publish" >> beam.Map(publish_shards, self._staging_dir, self._verdicts_dir)
        )
