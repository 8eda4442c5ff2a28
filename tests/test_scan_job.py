"""The scan job end to end on real H.264 samples, broken files and memory:// inputs."""
import os
import shutil

import apache_beam as beam
import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.cli import main
from pipeline.config import ScanConfig, load_config
from pipeline.scan import build_scan_pipeline, prepare_scan
from transforms.verdicts import VERDICT_SCHEMA

FAST = ["faces.detect_size=320", "model.batch_size=16", "model.checkpoint=untrained"]


@pytest.fixture(scope="module")
def scan_folder(sample_archive, tmp_path_factory):
    """The small sample archive plus a zero-byte .mp4 and a text file named .mp4."""
    samples_dir, items = sample_archive
    folder = tmp_path_factory.mktemp("scan_in")
    for item in items:
        shutil.copy(item.uri, folder / os.path.basename(item.uri))
    (folder / "zero.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video, just text\n")
    expected = {os.path.basename(i.uri): i for i in items}
    return folder, expected


@pytest.fixture(scope="module")
def scanned(scan_folder, tmp_path_factory):
    """One TestPipeline run of the real scan job over the folder."""
    folder, expected = scan_folder
    out = tmp_path_factory.mktemp("scan_out")
    plan = prepare_scan([str(folder)], str(out), load_config(ScanConfig, None, FAST))
    pipeline = TestPipeline()
    rows = build_scan_pipeline(pipeline, plan)
    statuses = rows | beam.Map(lambda r: (os.path.basename(r["uri"]), r["status"]))
    want = [(name, "no_face" if item.faces == 0 else "ok") for name, item in expected.items()]
    want += [("zero.mp4", "unreadable"), ("text.mp4", "unreadable")]
    assert_that(statuses, equal_to(want))
    pipeline.run().wait_until_finish()
    table = pq.read_table(str(out / "verdicts"))
    return out, table, {os.path.basename(r["uri"]): r for r in table.to_pylist()}


def test_verdicts_folder_holds_only_parquet_with_the_documented_schema(scanned):
    out, table, _ = scanned
    names = os.listdir(out / "verdicts")
    assert "_SUCCESS" in names  # written last, once every part is in place
    assert all(name.endswith(".parquet") for name in names if name != "_SUCCESS")
    assert table.schema.equals(VERDICT_SCHEMA, check_metadata=False)
    assert (out / "config.yaml").exists()


def test_one_row_per_input(scanned, scan_folder):
    _, table, rows = scanned
    folder, _ = scan_folder
    assert table.num_rows == len(os.listdir(folder)) == len(rows)


def test_good_videos_are_judged_with_evidence(scanned, scan_folder):
    _, _, rows = scanned
    _, expected = scan_folder
    for name, item in expected.items():
        row = rows[name]
        assert row["content_sha256"] and row["file_size"] == os.path.getsize(item.uri)
        if item.faces == 0:
            assert row["status"] == "no_face" and row["score"] is None and row["label"] is None
            continue
        assert row["status"] == "ok" and row["error"] is None
        assert 0.0 <= row["score"] <= 1.0 and row["label"] in ("real", "fake")
        assert row["num_tracks"] == item.faces == len(row["tracks"])
        assert row["model_name"] == "untrained" and row["device"] in ("cpu", "cpu bf16")  # bf16 where native
        if item.kind == "image":
            assert row["media_type"] == "image" and row["aggregator"] == "frame" and row["frames_sampled"] == 1
            continue
        assert row["media_type"] == "video" and row["codec"] == "h264" and row["decoder"] == "decord"
        assert (row["width"], row["height"]) == (item.width, item.height)
        assert row["fps"] == pytest.approx(item.fps, rel=0.01)
        assert row["aggregator"] == "bilstm"
        for track in row["tracks"]:
            n = len(track["frame_indices"])
            assert n >= 5 and len(track["timestamps"]) == len(track["boxes"]) == len(track["scores"]) == n
            # MTCNN ran on every 12th frame of the clip; the boxes between are interpolated and say so
            assert len(track["interpolated"]) == n and 0 < sum(track["interpolated"]) < n
            assert track["timestamps"][0] == pytest.approx(track["frame_indices"][0] / item.fps, abs=0.01)
            x1, y1, x2, y2 = track["boxes"][0]
            assert 0 <= x1 < x2 <= item.width and 0 <= y1 < y2 <= item.height
            sides = [max(b[2] - b[0], b[3] - b[1]) for b in track["boxes"]]
            assert track["face_size"] == pytest.approx(float(np.median(sides)), rel=1e-5)
        assert row["score"] == pytest.approx(max(t["score"] for t in row["tracks"]))
        # the default policy scouted the whole video before placing its dense clip(s)
        assert row["sampling_policy"] == "scout" and row["timeline"] and row["clips"]
        times = [t["timestamp"] for t in row["timeline"]]
        assert times == sorted(times) and max(times) - min(times) <= item.duration_s
        assert {t["clip_index"] for t in row["tracks"]} <= set(range(len(row["clips"])))
        assert all(s["score"] >= row["threshold"] for s in row["segments"])


def test_two_face_video_has_two_tracks(scanned, scan_folder):
    _, _, rows = scanned
    _, expected = scan_folder
    (two,) = [name for name, item in expected.items() if item.faces == 2]
    assert rows[two]["num_tracks"] == 2
    left, right = rows[two]["tracks"]
    assert left["boxes"][0][2] < right["boxes"][0][0] or right["boxes"][0][2] < left["boxes"][0][0]


def test_broken_files_get_non_ok_rows_with_error_text(scanned):
    _, _, rows = scanned
    assert rows["zero.mp4"]["error"] == "empty file (0 bytes)" and rows["zero.mp4"]["file_size"] == 0
    assert rows["text.mp4"]["status"] == "unreadable" and "decord" in rows["text.mp4"]["error"]
    for name in ("zero.mp4", "text.mp4"):
        assert rows[name]["score"] is None and rows[name]["tracks"] == []
        assert rows[name]["scan_id"] == rows["text.mp4"]["scan_id"]


def test_cli_scans_memory_urls_and_an_unsupported_file(sample_archive, tmp_path, capsys):
    _, items = sample_archive
    real = next(i for i in items if i.kind == "video" and i.faces == 1)
    with open(real.uri, "rb") as src, fsspec.open("memory://archive/in/clip.mp4", "wb") as dst:
        dst.write(src.read())
    with fsspec.open("memory://archive/in/notes.txt", "wb") as dst:
        dst.write(b"hello")
    code = main(
        ["scan", "memory://archive/in/clip.mp4", "memory://archive/in/notes.txt", "--output", "memory://archive/out",
         "--runner", "DirectRunner", *[a for o in FAST for a in ("--set", o)]]
    )
    assert code == 0
    fs = fsspec.filesystem("memory")
    assert fs.exists("/archive/out/config.yaml") and fs.exists("/archive/out/run.json")
    table = pq.read_table("/archive/out/verdicts", filesystem=fs)
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in table.to_pylist()}
    assert rows["clip.mp4"]["status"] == "ok" and rows["clip.mp4"]["num_tracks"] == 1
    assert rows["notes.txt"]["status"] == "unsupported" and ".txt" in rows["notes.txt"]["error"]
    printed = capsys.readouterr().out
    assert "2 inputs judged" in printed and "unsupported 1" in printed


def test_rerun_replaces_rows(sample_archive, tmp_path):
    _, items = sample_archive
    still = next(i for i in items if i.kind == "image")
    for _ in range(2):
        assert main(["scan", still.uri, "--output", str(tmp_path), "--quiet", "--set", "faces.detect_size=320"]) == 0
    assert pq.read_table(str(tmp_path / "verdicts")).num_rows == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["scan", "{tmp}/nothing/*.mp4", "--output", "{tmp}/o"], "pattern matched nothing"),
        (["scan", "{tmp}/missing.mp4", "--output", "{tmp}/o"], "no such file or directory"),
        (["scan", "{still}", "--output", "{tmp}/o", "--set", "faces.crop_sise=1"], "unknown config key"),
        (["scan", "{still}", "--output", "{tmp}/o", "--config", "{tmp}/none.yaml"], "config file not found"),
        (["scan", "{still}", "--output", "{tmp}/o", "--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
        (["scan", "{still}", "--output", "{tmp}/o", "--set", "faces.crop_size=big"], "must be an integer"),
        (["scan", "{still}", "--output", "{tmp}/o", "--checkpoint", "untrained", "--set", "faces.crop_size=380"],
         "faces.crop_size=380 disagrees with checkpoint untrained, whose crops are aligned 224 px, margin 0.25"),
        (["scan", "{still}", "--output", "{tmp}/o", "--checkpoint", "untrained:efficientnet-b4", "--set",
          "faces.margin=0.3"], "faces.margin=0.3 disagrees with checkpoint untrained:efficientnet-b4"),
        (["scan", "{still}", "--output", "{tmp}/o", "--set", "decode.decoders=[ffmpeg]"], "unknown decoder"),
        (["scan", "{still}", "--output", "{still}/o"], "cannot write to output"),
        (["scan", "{still}", "--output", "{tmp}/o", "--skip-scanned"], "--skip-scanned needs --output-root"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(args, message, sample_archive, tmp_path, capsys):
    _, items = sample_archive
    still = next(i for i in items if i.kind == "image").uri
    code = main([a.format(tmp=tmp_path, still=still) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and err.startswith("deepfake-scan: error:")
    assert not (tmp_path / "o" / "verdicts").exists()
    if "faces." in message:  # a crop setting that disagrees with the card stops before anything is written
        assert not (tmp_path / "o").exists()


def test_the_driver_reads_the_card_and_builds_no_model(sample_archive, tmp_path, monkeypatch):
    """Planning a scan reads only the checkpoint's card and sha256: no model is built on the driver."""
    from models import checkpoint as checkpoint_module
    from models.checkpoint import file_sha256
    from pipeline.scan import DEMO_CHECKPOINT, default_checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("the driver built a model")

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", refuse)
    monkeypatch.setattr(checkpoint_module, "create_model", refuse)
    _, items = sample_archive
    still = next(i for i in items if i.kind == "image").uri
    checkpoint = default_checkpoint()
    plan = prepare_scan([still], str(tmp_path), load_config(ScanConfig, None, [f"model.checkpoint={checkpoint}"]))
    assert plan.crop.policy == "aligned" and plan.crop.size == 224
    if checkpoint == DEMO_CHECKPOINT:
        assert plan.run.checkpoint_sha256 == file_sha256(DEMO_CHECKPOINT)
        assert plan.run.model_name == "demo-lite0-sbi"


@pytest.mark.parametrize("command", [[], ["scan"], ["samples"]])
def test_help_describes_options(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: deepfake-scan" in out
    if command == ["scan"]:
        for flag in ("--output", "--config", "--checkpoint", "--set", "--runner"):
            assert flag in out


def test_beam_options_are_routed_and_default_to_the_direct_runner():
    from pipeline.options import pipeline_options, split_beam_args

    own, beam_args = split_beam_args(
        ["in.mp4", "--runner", "DataflowRunner", "--output", "o", "--project=p", "more.mp4", "--save_main_session"],
        own_flags=["--output", "--config"],
    )
    assert own == ["in.mp4", "--output", "o", "more.mp4"]
    assert beam_args == ["--runner", "DataflowRunner", "--project=p", "--save_main_session"]
    # Beam 2.77 would otherwise try to download its Prism runner
    assert pipeline_options([]).get_all_options()["runner"] == "DirectRunner"
    assert pipeline_options(["--runner=DataflowRunner"]).get_all_options()["runner"] == "DataflowRunner"


def test_local_runs_share_the_cores_among_worker_threads(monkeypatch):
    from pipeline.config import ScanConfig
    from pipeline.options import local_workers, pipeline_options, threads_per_worker, with_worker_threads

    monkeypatch.setattr("pipeline.options.available_cores", lambda: 8)
    local = pipeline_options([]).get_all_options()
    assert local["direct_num_workers"] == 4 and local["direct_running_mode"] == "multi_threading"
    options = pipeline_options([])
    assert threads_per_worker(options) == 2
    assert with_worker_threads(ScanConfig(), options).model.torch_threads == 2
    # what the user set stays
    pinned = ScanConfig()
    pinned.model.torch_threads = 3
    assert with_worker_threads(pinned, options).model.torch_threads == 3
    assert threads_per_worker(pipeline_options(["--direct_num_workers=1"])) == 0
    assert threads_per_worker(pipeline_options(["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])) == 4
    all_cores = pipeline_options(["--direct_num_workers=0", "--direct_running_mode=multi_threading"])  # one per core
    assert local_workers(all_cores) == 8 and threads_per_worker(all_cores) == 1
    in_memory = pipeline_options(["--direct_running_mode=in_memory"]).get_all_options()
    assert in_memory["direct_num_workers"] == 1
    # runner names as Beam accepts them
    assert pipeline_options(["--runner", "directrunner"]).get_all_options()["direct_num_workers"] == 4
    assert threads_per_worker(pipeline_options(["--runner=BundleBasedDirectRunner", "--direct_num_workers=2"])) == 0
    # other runners keep torch's default and get no local-worker flags
    dataflow = pipeline_options(["--runner=DataflowRunner"])
    assert threads_per_worker(dataflow) == 0
    assert dataflow.get_all_options()["direct_num_workers"] == 1


def test_default_checkpoint_is_the_bundled_demo_when_installed():
    import os

    from models.checkpoint import load_checkpoint
    from pipeline.scan import DEMO_CHECKPOINT, default_checkpoint

    if not os.path.exists(DEMO_CHECKPOINT):
        assert default_checkpoint() == "untrained"
        pytest.skip("no bundled demo checkpoint in this checkout")
    assert default_checkpoint() == DEMO_CHECKPOINT
    demo = load_checkpoint(DEMO_CHECKPOINT)
    assert demo.card.name == "demo-lite0-sbi" and demo.card.frame_arch == "efficientnet-lite0"
    assert demo.card.input_size == 224 and demo.card.crop_policy == "aligned"
    assert (demo.sequence_model is not None) == (demo.card.aggregator == "bilstm")
    assert demo.card.operating_point["method"] in ("target_fpr", "gap_midpoint")
    assert demo.card.image_threshold is not None  # stills have their own operating point
    assert demo.card.training["validation"]["video"]["auc"] is not None
