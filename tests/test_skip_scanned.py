"""Scheduled scans: earlier verdicts are read by the workers, and unchanged files are not read at all."""
import os
import shutil
import threading
import time
from collections import Counter

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.cli import main
from pipeline.config import ScanConfig, load_config
from pipeline.scan import build_scan_pipeline, prepare_scan
from tests.awkward_corpus import face_frames, write_video

FAST = ["--set", "sampling.clip_len=8", "--set", "model.batch_size=16", "--quiet"]


class CountingMemoryFileSystem(MemoryFileSystem):
    """An in-memory object store that counts the bytes read from each object."""

    protocol = "countmem"
    store: dict = {}  # its own objects, apart from memory://'s
    pseudo_dirs = [""]
    bytes_read: Counter = Counter()
    _lock = threading.Lock()

    @classmethod
    def _strip_protocol(cls, path):
        if path.startswith("countmem://"):
            path = path[len("countmem://"):]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if "r" not in mode:
            return f
        fs, name, read = type(self), self._strip_protocol(path), f.read

        def counted(*args):
            data = read(*args)
            with fs._lock:
                fs.bytes_read[os.path.basename(name)] += len(data)
            return data

        f.read = counted
        return f


fsspec.register_implementation("countmem", CountingMemoryFileSystem, clobber=True)


def _rows(scan: str) -> dict[str, dict]:
    rows = pq.read_table(f"{scan}/verdicts").to_pylist()
    return {os.path.basename(r["uri"]): r for r in rows}


def test_unchanged_files_are_skipped_without_reading_a_byte(tmp_path):
    local = tmp_path / "videos"
    local.mkdir()
    for i in range(3):
        write_video(local / f"v{i}.mp4", face_frames(12, face_px=200 + 20 * i))
    fs = fsspec.filesystem("countmem")
    for name in os.listdir(local):
        fs.pipe_file(f"/archive/{name}", (local / name).read_bytes())
    root = tmp_path / "root"

    assert main(["scan", "countmem://archive", "--output-root", str(root), *FAST]) == 0
    (first,) = root.glob("scan_date=*/scan_id=*")
    judged = _rows(str(first))
    assert {r["status"] for r in judged.values()} == {"ok"}
    assert all(r["source_version"] for r in judged.values())  # the pre-key the next scan compares

    fs.pipe_file("/archive/v1.mp4", fs.cat_file("/archive/v1.mp4") + b"\0")  # changed bytes
    fs.pipe_file("/archive/v0_copy.mp4", fs.cat_file("/archive/v0.mp4"))  # same bytes, new name
    CountingMemoryFileSystem.bytes_read.clear()
    time.sleep(1.1)  # scan ids carry the second they started
    assert main(["scan", "countmem://archive", "--output-root", str(root), "--skip-scanned", *FAST]) == 0
    second = max(root.glob("scan_date=*/scan_id=*"))
    rows = _rows(str(second))

    assert {n: r["status"] for n, r in rows.items()} == {
        "v0.mp4": "skipped", "v2.mp4": "skipped", "v0_copy.mp4": "skipped", "v1.mp4": "ok"}
    read = CountingMemoryFileSystem.bytes_read
    assert read["v0.mp4"] == read["v2.mp4"] == 0  # unchanged: recognised from metadata alone
    assert read["v0_copy.mp4"] == fs.size("/archive/v0_copy.mp4")  # new name: hashed once, then recognised
    assert read["v1.mp4"] >= fs.size("/archive/v1.mp4")  # changed: read and judged again
    for name in ("v0.mp4", "v2.mp4", "v0_copy.mp4"):
        source = judged["v0.mp4" if name == "v0_copy.mp4" else name]
        assert rows[name]["previous_scan_id"] == source["scan_id"]
        assert rows[name]["score"] == pytest.approx(source["score"]) and rows[name]["label"] == source["label"]
        assert rows[name]["content_sha256"] == source["content_sha256"]  # carried, so the chain goes on

    # a third scan still recognises the files the second one skipped
    CountingMemoryFileSystem.bytes_read.clear()
    time.sleep(1.1)
    assert main(["scan", "countmem://archive", "--output-root", str(root), "--skip-scanned", *FAST]) == 0
    third = max(root.glob("scan_date=*/scan_id=*"))
    assert {r["status"] for r in _rows(str(third)).values()} == {"skipped"}
    assert sum(CountingMemoryFileSystem.bytes_read.values()) == 0
    assert _rows(str(third))["v0.mp4"]["previous_scan_id"] == judged["v0.mp4"]["scan_id"]


def _earlier_scan(root, rows: int) -> None:
    """A complete verdict table of ``rows`` rows under ``root``, as an earlier scan leaves it."""
    folder = root / "scan_date=2026-01-01" / "scan_id=20260101T000000Z-00000000" / "verdicts"
    folder.mkdir(parents=True)
    table = pa.table({
        "uri": [f"gs://archive/v{i:07d}.mp4" for i in range(rows)],
        "source_version": [f"size=1000;generation={i}" for i in range(rows)],
        "file_size": pa.array([1000] * rows, pa.int64()),
        "content_sha256": [f"{i:064x}" for i in range(rows)],
        "checkpoint_sha256": ["c" * 64] * rows,
        "status": ["ok"] * rows,
        "score": [0.5] * rows,
        "label": ["real"] * rows,
        "scan_id": ["20260101T000000Z-00000000"] * rows,
        "previous_scan_id": pa.array([None] * rows, pa.string()),
    })
    pq.write_table(table, folder / "part-00000.parquet")
    (folder / "_SUCCESS").write_bytes(b"")


def _graph_bytes(inputs, root) -> int:
    import apache_beam as beam

    plan = prepare_scan(inputs, None, load_config(ScanConfig, None, ["model.checkpoint=untrained"]),
                        output_root=str(root), skip_scanned=True)
    pipeline = beam.Pipeline()
    build_scan_pipeline(pipeline, plan)
    return len(pipeline.to_runner_api().SerializeToString())


def test_earlier_scans_stay_out_of_the_job_graph(tmp_path, sample_archive):
    _, items = sample_archive
    inputs = [items[0].uri]
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    _earlier_scan(full, 100_000)
    started = time.perf_counter()
    with_history = _graph_bytes(inputs, full)
    driver_seconds = time.perf_counter() - started
    without = _graph_bytes(inputs, empty)
    # the graph names the root, not its contents: the two differ only by the root's path
    assert abs(with_history - without) <= 2 * len(str(full))
    assert with_history < 1 << 20
    assert driver_seconds < 60  # nothing of the 100,000 rows is read on the driver (reading them is cheap too)


def test_an_earlier_table_read_by_the_workers_gives_the_latest_verdict_per_key(tmp_path):
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    import apache_beam as beam
    from transforms.earlier_verdicts import EarlierVerdicts

    _earlier_scan(tmp_path, 3)
    later = tmp_path / "scan_date=2026-02-01" / "scan_id=20260201T000000Z-11111111" / "verdicts"
    shutil.copytree(tmp_path / "scan_date=2026-01-01" / "scan_id=20260101T000000Z-00000000" / "verdicts", later)
    table = pq.read_table(later / "part-00000.parquet").to_pydict()
    table["score"] = [0.9, 0.9, 0.9]
    table["scan_id"] = ["20260201T000000Z-11111111"] * 3
    table["status"] = ["ok", "timeout", "ok"]  # a timeout is worth another try: it does not count
    pq.write_table(pa.table(table), later / "part-00000.parquet")
    (tmp_path / "scan_date=2026-03-01" / "scan_id=20260301T000000Z-22222222" / "verdicts").mkdir(parents=True)

    with TestPipeline() as p:
        found = p | EarlierVerdicts(str(tmp_path), "c" * 64)
        assert_that(
            found | beam.Map(lambda kv: (kv[0].split(":")[0], kv[0][-1], kv[1]["scan_id"][:8], kv[1]["score"])),
            equal_to([
                ("sha256", "0", "20260201", 0.9), ("source", "0", "20260201", 0.9),
                ("sha256", "1", "20260101", 0.5), ("source", "1", "20260101", 0.5),
                ("sha256", "2", "20260201", 0.9), ("source", "2", "20260201", 0.9),
            ]),
        )
