"""Archive scale: the job graph and the driver do not grow with the archive.

Dataflow refuses job requests over 20 MB, and the request carries the
pipeline; the driver of a scheduled scan should need no more memory for a
million inputs than for ten. The scan therefore hands the workers its input
specs, never the listing.
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.test_dataflow import DATAFLOW_GPU

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry_run_in_a_fresh_process(args: list[str]) -> tuple[str, float]:
    """Run the CLI's scan in its own interpreter; its output and its peak RSS in MiB."""
    code = textwrap.dedent(f"""
        import resource, sys
        from pipeline.cli import main
        code = main({args!r})
        print("peak_rss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        sys.exit(code)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    peak = int(re.search(r"peak_rss_kib (\d+)", out.stdout).group(1)) / 1024
    return out.stdout, peak


@pytest.mark.timeout(900)
def test_a_million_entry_manifest_translates_small_with_a_small_driver(tmp_path):
    pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner")
    pytest.importorskip("apitools")
    manifest = tmp_path / "archive.csv"
    with open(manifest, "w") as f:
        f.write("uri,label\n")
        f.writelines(f"gs://archive-bucket/videos/{i // 1000:04d}/clip_{i:07d}.mp4,\n" for i in range(1_000_000))
    assert manifest.stat().st_size > 45 << 20

    stdout, peak_mib = _dry_run_in_a_fresh_process(
        ["scan", str(manifest), "--output", str(tmp_path / "out"), "--set", "model.checkpoint=untrained",
         *DATAFLOW_GPU])

    graph_kib = float(re.search(r"job graph of ([\d.]+) KB", stdout).group(1))
    print(f"1,000,000-entry manifest: job graph {graph_kib:.0f} KB, driver peak RSS {peak_mib:.0f} MiB")
    assert graph_kib < 1024
    assert peak_mib < 1024
