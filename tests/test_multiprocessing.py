"""The scan run by worker processes gives the verdicts it gives in one process.

``--direct_running_mode multi_processing`` pickles the DoFns, the model handler
and the plan's settings into separate SDK worker processes, as Dataflow does
with its workers: anything that only works because it shares the driver's
memory (a module-level cache, an unpicklable handle, state set up on the
driver) breaks here first.
"""
import os

import pyarrow.parquet as pq
import pytest

from pipeline.config import ScanConfig, load_config
from pipeline.options import pipeline_options
from pipeline.scan import prepare_scan, run_scan

# fp32: the two runs give each worker a different number of torch threads, and bf16
# rounding would then differ in the last bits; fp32 agrees to ~1e-7.
SETTINGS = ["faces.detect_size=320", "model.precision=fp32"]
COLUMNS = ["uri", "status", "label", "score", "num_tracks", "frames_sampled", "faces_found", "content_sha256"]


def _scan(inputs, out, beam_args):
    plan = prepare_scan(inputs, str(out), load_config(ScanConfig, None, SETTINGS))
    run_scan(plan, pipeline_options(beam_args))
    rows = pq.read_table(str(out / "verdicts"), columns=COLUMNS + ["tracks"]).to_pylist()
    return {os.path.basename(r["uri"]): r for r in rows}


@pytest.mark.timeout(900)
def test_worker_processes_give_the_same_verdicts_as_one_process(sample_archive, tmp_path):
    samples_dir, items = sample_archive
    inputs = [str(samples_dir)]
    alone = _scan(inputs, tmp_path / "alone", ["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    spread = _scan(inputs, tmp_path / "spread", ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])

    assert sorted(alone) == sorted(spread) == sorted(os.path.basename(i.uri) for i in items)
    judged = 0
    for name, row in alone.items():
        other = spread[name]
        for column in COLUMNS:
            if column != "score":
                assert other[column] == row[column], (name, column)
        if row["score"] is None:
            assert other["score"] is None, name
            continue
        judged += 1
        assert other["score"] == pytest.approx(row["score"], abs=1e-5), name
        for a, b in zip(row["tracks"], other["tracks"]):
            assert a["boxes"] == b["boxes"] and a["frame_indices"] == b["frame_indices"], name
            assert b["scores"] == pytest.approx(a["scores"], abs=1e-5), name
    assert judged >= len(items) // 2  # the comparison covered real verdicts, not only empty rows
