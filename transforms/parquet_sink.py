"""A Parquet table written through fsspec: staged shards, published at the end.

Beam's own ``WriteToParquet`` only reaches Beam's filesystems (no ``memory://``,
and ``gs://`` only with the gcp extra); this sink reaches anything fsspec does.
Each bundle writes one shard to a staging folder; a single final step replaces
the table folder's contents with the shards of bundles that committed, so a
retried bundle never duplicates rows, and writes ``_SUCCESS`` last: a table
folder without it is incomplete (being replaced, or left by a killed run), and
``transforms.tables.read_table`` refuses it.
"""
from __future__ import annotations

import logging
import time
import uuid

import apache_beam as beam
import fsspec
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms.elements import METRICS_NAMESPACE
from transforms.tables import SUCCESS, write_table

logger = logging.getLogger(__name__)


class _WriteShardsFn(beam.DoFn):
    """Buffers a bundle's rows and writes them as one staged Parquet shard.

    A retried bundle writes a new shard under a new name; only the names emitted
    by bundles that committed reach the publish step, so retries never duplicate rows.
    """

    def __init__(self, staging_dir: str, schema: pa.Schema, max_rows: int = 5000):
        self._staging_dir = staging_dir.rstrip("/")
        self._schema = schema
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
        start = time.perf_counter()
        path = f"{self._staging_dir}/part-{uuid.uuid4().hex}.parquet"
        write_table(pa.Table.from_pylist(self._rows, schema=self._schema), path)
        self._rows = []
        Metrics.distribution(METRICS_NAMESPACE, "write_ms").update(int((time.perf_counter() - start) * 1000))
        return path


def publish_shards(shards: list[str], staging_dir: str, table_dir: str, schema: pa.Schema) -> list[str]:
    """Replace the contents of ``table_dir`` with the staged shards, then mark it complete.

    Earlier files in the folder are removed only now, once the new ones exist,
    so a failed rerun leaves the previous run's table in place; the old
    ``_SUCCESS`` goes first and the new one comes last, so no reader takes a
    half-replaced folder for a table.
    """
    fs, table = fsspec.core.url_to_fs(table_dir)
    _, staging = fsspec.core.url_to_fs(staging_dir)
    marker = f"{table.rstrip('/')}/{SUCCESS}"
    if fs.exists(marker):
        fs.rm(marker)
    if fs.exists(table):
        fs.rm(table, recursive=True)
    fs.makedirs(table, exist_ok=True)
    published = []
    if not shards:  # no rows at all: still leave a readable, empty table
        empty = f"{table_dir.rstrip('/')}/part-00000.parquet"
        write_table(schema.empty_table(), empty)
        published.append(empty)
    for i, shard in enumerate(sorted(shards)):
        target = f"{table.rstrip('/')}/part-{i:05d}.parquet"
        # copy, not mv: gcsfs's mv tries GCS's moveTo first, which not every GCS-compatible
        # server has (it retries for half a minute before copying); the staging folder goes below.
        fs.copy(fsspec.core.url_to_fs(shard)[1], target)
        published.append(target)
    if fs.exists(staging):
        fs.rm(staging, recursive=True)
    fs.pipe_file(marker, b"")
    logger.info("published %d Parquet file(s) to %s", len(published), table_dir)
    return published


class WriteParquetTable(beam.PTransform):
    """``PCollection[dict]`` -> Parquet files ``part-NNNNN.parquet`` in ``table_dir`` with ``schema``."""

    def __init__(self, table_dir: str, staging_dir: str, schema: pa.Schema, max_rows_per_file: int = 5000):
        super().__init__()
        self._table_dir = table_dir
        self._staging_dir = staging_dir
        self._schema = schema
        self._max_rows = max_rows_per_file

    def expand(self, rows):
        return (
            rows
            | "WriteShards" >> beam.ParDo(_WriteShardsFn(self._staging_dir, self._schema, self._max_rows))
            | "CollectShards" >> beam.combiners.ToList()
            | "Publish" >> beam.Map(publish_shards, self._staging_dir, self._table_dir, self._schema)
        )
