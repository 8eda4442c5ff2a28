"""Complete Parquet tables on any fsspec URL: the reading side, with no Beam.

A table is a folder of ``part-NNNNN.parquet`` files and a ``_SUCCESS`` marker,
written by ``transforms.parquet_sink.WriteParquetTable``. Readers (reports,
summaries, training, history) import this module, not the Beam sink.
"""
from __future__ import annotations

from typing import Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SUCCESS = "_SUCCESS"


class IncompleteTableError(FileNotFoundError):
    """A table folder without its ``_SUCCESS`` marker: not (or not yet) a complete table."""


def is_complete(table_dir: str) -> bool:
    fs, path = fsspec.core.url_to_fs(table_dir)
    return fs.exists(f"{path.rstrip('/')}/{SUCCESS}")


def read_table(table_dir: str, columns: Optional[list[str]] = None) -> pa.Table:
    """Every Parquet file of a complete table folder written by ``WriteParquetTable`` (any fsspec URL)."""
    if not is_complete(table_dir):
        raise IncompleteTableError(f"{table_dir} holds no complete table (no {SUCCESS} marker)")
    fs, path = fsspec.core.url_to_fs(table_dir)
    return pq.read_table(path, filesystem=fs, columns=columns)


def write_table(table: pa.Table, path: str) -> None:
    with fsspec.open(path, "wb") as f:
        pq.write_table(table, f, compression="snappy")
