"""The scan job against a real GCS JSON API on loopback (gcp-storage-emulator), through gcsfs."""
import json
import logging
import os
import socket
import types
from http.server import ThreadingHTTPServer

import fsspec
import pytest

from pipeline.cli import main
from tests.awkward_corpus import face_frames, write_video
from transforms.tables import read_table

FAST = ["--set", "sampling.clip_len=8", "--quiet"]

# gcsfs 2026 asks GCS for the bucket's storage layout over gRPC first (its "zonal/HNS"
# extension, on by default); the emulator speaks only the JSON API, so that call would
# wait forever. Read when gcsfs is first imported, which no test does before this module.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory, monkeypatch_module):
    """A bucket 'archive' on 127.0.0.1 holding two videos, a still and a manifest; no other address is used."""
    server_mod = pytest.importorskip("gcp_storage_emulator.server")
    # Its HTTPServer serves one connection at a time, and gcsfs keeps connections alive:
    # a second client would wait forever. Serve each connection in its own thread.
    monkeypatch_module.setattr(server_mod, "server", types.SimpleNamespace(HTTPServer=ThreadingHTTPServer))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.create_server("127.0.0.1", port, in_memory=True, default_bucket="archive")
    server.start()
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    monkeypatch_module.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    monkeypatch_module.setitem(fsspec.config.conf, "gcs", {"token": "anon"})  # no credential lookups
    fsspec.AbstractFileSystem.clear_instance_cache()
    local = tmp_path_factory.mktemp("gcs_src")
    fs = fsspec.filesystem("gcs")
    for name in ("a.mp4", "b.mp4"):
        write_video(local / name, face_frames(12))
        fs.put_file(str(local / name), f"archive/videos/{name}")
    fs.pipe_file("archive/lists/manifest.csv", b"uri,label\ngs://archive/videos/a.mp4,real\n"
                                               b"gs://archive/videos/gone.mp4,fake\n")
    yield fs
    server.stop()
    fsspec.AbstractFileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _verdicts(fs, path):
    # every part of the folder: a local scan writes one file per worker
    assert fs.exists(f"{path}/verdicts/_SUCCESS")
    return {r["uri"]: r for r in read_table(f"gs://{path}/verdicts").to_pylist()}


def test_glob_in_gs_verdicts_out_to_gs(gcs):
    assert main(["scan", "gs://archive/videos/*.mp4", "--output", "gs://archive/scans/glob", *FAST]) == 0
    rows = _verdicts(gcs, "archive/scans/glob")
    assert sorted(rows) == ["gs://archive/videos/a.mp4", "gs://archive/videos/b.mp4"]
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert gcs.exists("archive/scans/glob/config.yaml") and gcs.exists("archive/scans/glob/run.json")


def test_manifest_in_gs_with_a_missing_object(gcs):
    assert main(["scan", "gs://archive/lists/manifest.csv", "--output", "gs://archive/scans/manifest", *FAST]) == 0
    rows = _verdicts(gcs, "archive/scans/manifest")
    assert rows["gs://archive/videos/a.mp4"]["status"] == "ok"
    gone = rows["gs://archive/videos/gone.mp4"]
    assert gone["status"] == "unreadable" and "not found" in gone["error"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["gs://archive/videos/a.mp4", "--output", "gs://no-such-bucket/out"], "bucket 'no-such-bucket' does not exist"),
        (["gs://no-such-bucket/x.mp4", "--output", "gs://archive/scans/x"], "no such file or directory"),
        (["gs://archive/nothing/*.mp4", "--output", "gs://archive/scans/x"], "pattern matched nothing"),
    ],
)
def test_missing_buckets_and_objects_fail_in_one_line(gcs, capsys, args, message):
    assert main(["scan", *args, *FAST]) == 2
    # (the emulator's own request log shares stderr in this process; ours is one line)
    ours = [l for l in capsys.readouterr().err.splitlines() if l.startswith("deepfake-scan")]
    assert len(ours) == 1 and message in ours[0]
    assert not gcs.exists("no-such-bucket")  # a typo never creates a bucket


def test_report_from_gs_verdicts(gcs, tmp_path):
    if not gcs.exists("archive/scans/glob/verdicts/_SUCCESS"):
        assert main(["scan", "gs://archive/videos/*.mp4", "--output", "gs://archive/scans/glob", *FAST]) == 0
    out = tmp_path / "report.html"
    assert main(["report", "gs://archive/scans/glob/verdicts", "--output", str(out),
                 "--csv", "gs://archive/scans/glob/verdicts.csv"]) == 0
    page = out.read_text(encoding="utf-8")
    assert "gs://archive/videos/a.mp4" in page and "Grad-CAM of the most suspicious face" in page
    assert gcs.cat_file("archive/scans/glob/verdicts.csv").decode().count("\n") == 3


def test_a_prefix_of_thousands_of_objects_is_listed_by_the_workers(gcs, tmp_path):
    """2,000 empty videos in 20 folders, plus one real one: listed in the pipeline, a verdict row each."""
    objects = {f"archive/many/batch{i // 100:02d}/clip{i:04d}.mp4": b"" for i in range(2000)}
    objects["archive/many/readme.txt"] = b"not media"
    gcs.pipe(objects)
    gcs.put_file(str(_a_video(tmp_path)), "archive/many/real.mp4")
    # The verdicts go to a local folder: the emulator's resumable uploads lose an upload now and
    # then under concurrent writers (404 on the upload id), which is the emulator's, not GCS's.
    out = tmp_path / "many"
    assert main(["scan", "gs://archive/many/", "--output", str(out), *FAST]) == 0
    rows = {r["uri"]: r for r in read_table(str(out / "verdicts")).to_pylist()}
    assert len(rows) == 2001
    assert rows["gs://archive/many/real.mp4"]["status"] == "ok"
    empty = [r for uri, r in rows.items() if uri != "gs://archive/many/real.mp4"]
    assert {r["status"] for r in empty} == {"unreadable"} and {r["error"] for r in empty} == {"empty file (0 bytes)"}
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"] == 2001  # counted by the workers that listed them


def _a_video(tmp_path):
    return write_video(tmp_path / "real.mp4", face_frames(12))
