"""Every input gets exactly one honest row: awkward files, fuzzed files, crashing decoders, kill -9."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from tests.awkward_corpus import face_frames, make_corpus, mutate, write_video
from transforms.elements import STATUSES

# Shorter clips keep the suite quick; everything else is the scan job's defaults.
FAST = ["--set", "sampling.clip_len=8", "--set", "model.batch_size=16", "--quiet"]
FAULTY = "tests.faulty_decoders:"


def _rows(out: Path) -> dict[str, dict]:
    assert (out / "verdicts" / "_SUCCESS").exists()
    rows = pq.read_table(str(out / "verdicts")).to_pylist()
    names = [os.path.basename(r["uri"]) for r in rows]
    assert len(names) == len(set(names)), "an input got more than one row"
    return dict(zip(names, rows))


def _check_honest(row: dict) -> None:
    assert row["status"] in STATUSES
    if row["status"] == "ok":
        assert row["score"] is not None and row["num_tracks"] > 0
    else:
        assert row["score"] is None and row["error"] and "\n" not in row["error"]


def _run_cli(args, **kwargs) -> subprocess.CompletedProcess:
    """The scanner as a new user runs it: its own process, real exit status."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=1200, **kwargs
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("awkward")
    return folder, make_corpus(folder)


def test_scanning_the_corpus_gives_one_honest_row_per_file(corpus, tmp_path):
    folder, entries = corpus
    out = tmp_path / "scan"
    done = _run_cli(["scan", str(folder), "--output", str(out), *FAST[:-1]])
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(out)
    for entry in entries:
        row = rows.get(entry.name)
        if entry.expect == "unlisted":
            assert row is None or (row["status"] == "unreadable" and row["error"]), entry
            continue
        assert row is not None, f"no row for {entry.name!r}"
        _check_honest(row)
        status = row["status"]
        if entry.expect == "ok":
            assert status == "ok", (entry, row["error"], row["warnings"])
        elif entry.expect == "no_face":
            assert status == "no_face", (entry, row["error"])
        elif entry.expect == "broken":
            assert status not in ("ok", "no_face"), entry
        elif entry.expect == "damaged":
            assert status not in ("ok", "no_face") or row["warnings"], entry
    assert set(rows) <= {e.name for e in entries}
    # what the decoders did is on the record
    assert rows["av1.mp4"]["decoder"] == "pyav" and rows["av1.mp4"]["warnings"]
    assert (rows["uhd_4k.mp4"]["width"], rows["uhd_4k.mp4"]["height"]) == (3840, 2160)
    box = rows["uhd_4k.mp4"]["tracks"][0]["boxes"][0]
    # boxes are in source pixels although frames were decoded at 1920x1080: the face sits at
    # x = 430..640 of the 3840 px frame (215..320 in decoded pixels)
    assert 380 < box[0] < 480 and 580 < box[2] < 700
    assert rows["rotated_90.mp4"]["width"] == 640  # display orientation
    # file names are data: nothing printed carries a raw control character from a name
    assert "chars\nin name" not in done.stdout + done.stderr and "\t" not in done.stdout


def test_printed_text_escapes_control_characters():
    from pipeline.summary import printable

    assert printable("a\tb\nc\x1b[31m.mp4 nön 名前") == "a\\tb\\nc\\x1b[31m.mp4 nön 名前"


def test_fuzzed_files_each_get_one_honest_row(tmp_path):
    rng = np.random.default_rng(2026)
    sources = [
        write_video(tmp_path / "a.mp4", face_frames(20), container_options={"movflags": "faststart"}).read_bytes(),
        write_video(tmp_path / "b.webm", face_frames(20), codec="libvpx-vp9",
                    options={"deadline": "realtime", "cpu-used": "8"}).read_bytes(),
    ]
    folder = tmp_path / "fuzz"
    folder.mkdir()
    cases = 18
    for i in range(cases):
        how = ("truncate", "flip", "splice")[i % 3]
        data = sources[int(rng.integers(2))]
        (folder / f"fuzz_{i:02d}_{how}.mp4").write_bytes(mutate(data, how, rng, other=sources[i % 2]))
    out = tmp_path / "out"
    assert main(["scan", str(folder), "--output", str(out), *FAST]) == 0
    rows = _rows(out)
    assert len(rows) == cases
    for row in rows.values():
        _check_honest(row)


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("three")
    for i in range(3):
        write_video(folder / f"v{i}.mp4", face_frames(12))
    return folder


@pytest.mark.parametrize(
    "decoder, status, text",
    [("Segfault", "unreadable", "SIGSEGV"), ("Hang", "timeout", "did not finish within 3 s")],
)
def test_a_crashing_or_hanging_decoder_costs_rows_not_the_job(three_videos, tmp_path, decoder, status, text):
    out = tmp_path / "out"
    args = ["scan", str(three_videos), "--output", str(out), *FAST,
            "--set", f"decode.decoders=[{FAULTY}{decoder}]", "--set", "decode.timeout_s=3"]
    started = time.monotonic()
    assert main(args) == 0
    rows = _rows(out)
    assert sorted(rows) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    for row in rows.values():
        assert row["status"] == status and text in row["error"], row["error"]
        assert row["content_sha256"]  # still identified, so a later scan can find it
    assert time.monotonic() - started < 120


def test_killed_scan_rerun_gives_one_row_per_input(three_videos, tmp_path):
    out = tmp_path / "out"
    args = ["scan", str(three_videos), "--output", str(out), *FAST]
    # The first run is killed mid-way, with its decoder child, the way an OOM killer or a
    # preemption would; a decoder that hangs for a minute makes sure it is still running.
    stuck = ["--set", f"decode.decoders=[{FAULTY}Hang]", "--set", "decode.timeout_s=60"]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args, *stuck], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "config.yaml").exists():
        time.sleep(0.2)
    time.sleep(3)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "verdicts" / "_SUCCESS").exists()  # nothing half-written passes for a table
    done = _run_cli(args)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(out)
    assert sorted(rows) == ["v0.mp4", "v1.mp4", "v2.mp4"]
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert not list(out.glob("_staging-*"))  # the killed run's leftovers are gone
    # and rerunning a finished scan replaces its rows rather than adding to them
    assert main(args) == 0
    assert len(_rows(out)) == 3


def test_scheduled_scans_skip_what_the_same_checkpoint_judged(three_videos, tmp_path):
    root = tmp_path / "root"
    archive = tmp_path / "archive"
    shutil.copytree(three_videos, archive)
    assert main(["scan", str(archive), "--output-root", str(root), *FAST]) == 0
    (first,) = list(root.glob("scan_date=*/scan_id=*"))
    assert _rows(first)["v0.mp4"]["status"] == "ok"
    # a new file and a changed file arrive; the rest are unchanged
    write_video(archive / "v3.mp4", face_frames(12)[::-1])
    shutil.copy(archive / "v0.mp4", archive / "v0_copy.mp4")  # same bytes, new name: already judged
    (archive / "v1.mp4").write_bytes((archive / "v1.mp4").read_bytes() + b"\0")  # changed bytes
    time.sleep(1.1)  # scan ids carry the second they started
    assert main(["scan", str(archive), "--output-root", str(root), "--skip-scanned", *FAST]) == 0
    second = max(root.glob("scan_date=*/scan_id=*"))
    assert second != first
    rows = _rows(second)
    assert {n: r["status"] for n, r in rows.items()} == {
        "v0.mp4": "skipped", "v0_copy.mp4": "skipped", "v2.mp4": "skipped", "v1.mp4": "ok", "v3.mp4": "ok",
    }
    first_rows = _rows(first)
    skipped = rows["v2.mp4"]
    assert skipped["previous_scan_id"] == first_rows["v2.mp4"]["scan_id"]
    assert skipped["score"] == pytest.approx(first_rows["v2.mp4"]["score"]) and skipped["label"]
    # a different checkpoint judges everything again
    assert main(["scan", str(archive), "--output-root", str(root), "--skip-scanned", *FAST,
                 "--checkpoint", "untrained"]) == 0
    third = max(root.glob("scan_date=*/scan_id=*"))
    assert {r["status"] for r in _rows(third).values()} == {"ok"}
    # the README's one-liner reads every scan under ROOT as one partitioned table
    import pyarrow.dataset as ds

    table = ds.dataset(str(root), format="parquet", partitioning="hive", exclude_invalid_files=True).to_table()
    assert table.num_rows == 3 + 5 + 5 and {"scan_date", "scan_id"} <= set(table.column_names)
