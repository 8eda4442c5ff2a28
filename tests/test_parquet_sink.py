"""``WriteParquetTable`` on the local runner: every row it is given lands in the table, once.

The jobs run locally on the DirectRunner with two worker threads
(``pipeline.options.pipeline_options``). These tests run real pipelines the same
way, many bundles and shards, and read the tables back row for row.
"""
from __future__ import annotations

import threading
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.worker import data_plane

from pipeline.options import pipeline_options
from transforms.parquet_sink import WriteParquetTable
from transforms.tables import read_table

LOCAL_THREADS = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]

ROW_SCHEMA = pa.schema([("video_id", pa.string()), ("index", pa.int32()), ("payload", pa.binary())])
SUMMARY_SCHEMA = pa.schema([("video_id", pa.string()), ("rows", pa.int32())])

ROWS_PER_VIDEO = 25


def _row(video_id: str, index: int) -> dict:
    return {"video_id": video_id, "index": index, "payload": f"{video_id}/{index}".encode() * 40}


def _sorted_rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["video_id"], r["index"]))


def _assert_same_rows(table: pa.Table, expected: list[dict]) -> None:
    got = _sorted_rows(table)
    want = _sorted_rows(pa.Table.from_pylist(expected, schema=table.schema))
    keys = {(r["video_id"], r["index"]) for r in got}
    lost = sorted({r["video_id"] for r in want if (r["video_id"], r["index"]) not in keys})
    assert len(got) == len(want) and not lost, f"{len(want) - len(got)} of {len(want)} rows lost; videos: {lost}"
    assert got == want


class _SlowVideosFn(beam.DoFn):
    """Stands in for ``ExtractFaces``: slow, and one large element per video."""

    def __init__(self, seconds_each: float):
        self._seconds_each = seconds_each

    def process(self, video_id: str):
        time.sleep(self._seconds_each)
        yield video_id, [_row(video_id, i)["payload"] for i in range(ROWS_PER_VIDEO)]


def _face_rows(item: tuple, names: dict):
    video_id, payloads = item
    for index, payload in enumerate(payloads):
        yield {"video_id": names[video_id], "index": index, "payload": payload}


def _summary(item: tuple, names: dict) -> dict:
    return {"video_id": names[item[0]], "rows": len(item[1])}


def test_every_row_lands_once_across_bundles_and_shards(tmp_path):
    rows = [_row(f"v{k:03d}", i) for k in range(120) for i in range(ROWS_PER_VIDEO)]
    table_dir = tmp_path / "table"
    with beam.Pipeline(options=pipeline_options(LOCAL_THREADS)) as p:
        _ = (
            p
            | beam.Create(rows)
            | WriteParquetTable(str(table_dir), str(tmp_path / "staging"), ROW_SCHEMA, max_rows_per_file=97)
        )
    shards = sorted(table_dir.glob("part-*.parquet"))
    assert len(shards) >= len(rows) // 97
    assert all(pq.read_metadata(s).num_rows <= 97 for s in shards)
    _assert_same_rows(read_table(str(table_dir)), rows)
    assert not (tmp_path / "staging").exists()


@pytest.fixture
def congested_data_plane(monkeypatch):
    """Make each timed data-plane flush wait, as it does when gRPC's send queue is full.

    Under load (the extract job moves ~1 GB of crops between stages) the queue
    fills and the timer thread's hand-off blocks. Beam 2.77's timed flush takes
    the stream's bytes, hands them over and then clears the stream, while the
    bundle's own thread goes on writing to it without the flush's lock.
    """
    send = data_plane._GrpcDataChannel._enqueue_to_send

    def slow_when_timed(self, element):
        if isinstance(threading.current_thread(), data_plane.PeriodicThread):
            time.sleep(0.5)
        send(self, element)

    monkeypatch.setattr(data_plane._GrpcDataChannel, "_enqueue_to_send", slow_when_timed)


def test_no_rows_lost_between_stages_when_the_data_plane_is_congested(tmp_path, congested_data_plane):
    """The extract job's shape: slow elements, a side-input stage, two tables from one collection."""
    videos = [f"v{k:03d}" for k in range(80)]
    out = tmp_path / "out"
    with beam.Pipeline(options=pipeline_options(LOCAL_THREADS)) as p:
        listed = p | "Listed" >> beam.Create(videos)
        names = beam.pvalue.AsDict(listed | "KeyByName" >> beam.Map(lambda v: (v, v)))
        # Each worker is busy here well past the runner's one-second flush timer.
        extracted = listed | "Extract" >> beam.ParDo(_SlowVideosFn(seconds_each=0.05))
        _ = (
            extracted
            | "FaceRows" >> beam.FlatMap(_face_rows, names)
            | "WriteFaces" >> WriteParquetTable(str(out / "faces"), str(out / "_staging-faces"), ROW_SCHEMA, 64)
        )
        _ = (
            extracted
            | "VideoRows" >> beam.Map(_summary, names)
            | "WriteVideos" >> WriteParquetTable(str(out / "videos"), str(out / "_staging-videos"), SUMMARY_SCHEMA, 16)
        )
    _assert_same_rows(read_table(str(out / "faces")), [_row(v, i) for v in videos for i in range(ROWS_PER_VIDEO)])
    summaries = sorted(read_table(str(out / "videos")).to_pylist(), key=lambda r: r["video_id"])
    assert summaries == [{"video_id": v, "rows": ROWS_PER_VIDEO} for v in videos]
