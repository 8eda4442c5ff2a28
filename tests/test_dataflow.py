"""The scan job as Dataflow sees it: a --dry_run translation with the GPU options, and the Flex Template."""
import json
import os

import pytest

from pipeline.cli import build_parser, main
from pipeline.flex_template import DEFAULT_CONFIG, flag, scan_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The README's Dataflow GPU command, offline: --dry_run stops after the job is translated.
DATAFLOW_GPU = [
    "--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
    "--temp_location", "gs://my-bucket/tmp", "--staging_location", "gs://my-bucket/staging",
    "--sdk_container_image", "us-central1-docker.pkg.dev/my-project/images/deepfake-scan-gpu:0.1.0",
    "--sdk_location", "container",
    "--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
    "--experiments", "no_use_multiple_sdk_containers",
    "--machine_type", "g2-standard-8", "--disk_size_gb", "100", "--max_num_workers", "4",
    "--dry_run", "True",
]


def test_scan_translates_into_a_dataflow_gpu_job(sample_archive, tmp_path, capsys):
    pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner")
    pytest.importorskip("apitools")
    _, items = sample_archive
    args = ["scan", *[i.uri for i in items[:3]], "--output", str(tmp_path / "out"),
            "--config", os.path.join(ROOT, "configs", "scan_dataflow_gpu.yaml"), *DATAFLOW_GPU]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "translated into a job graph of" in out and "KB; nothing ran" in out
    assert not (tmp_path / "out" / "verdicts").exists()


def test_flex_template_parameters_become_a_scan_command():
    argv = scan_argv(["--inputs=gs://a/x/,gs://a/list.csv", "--output_root=gs://b/scans", "--skip_scanned=true",
                      "--checkpoint=gs://m/model.pt", "--set=sampling.max_clips=2; faces.min_face_size=60",
                      "--runner=DataflowRunner", "--project=p"])
    assert argv == [
        "scan", "gs://a/x/", "gs://a/list.csv", "--quiet", "--output-root", "gs://b/scans",
        "--checkpoint", "gs://m/model.pt", "--config", DEFAULT_CONFIG, "--skip-scanned",
        "--set", "sampling.max_clips=2", "--set", "faces.min_face_size=60", "--runner=DataflowRunner", "--project=p",
    ]


def test_flex_template_metadata_names_every_parameter():
    with open(os.path.join(ROOT, "dataflow", "metadata.json")) as f:
        spec = json.load(f)
    names = {p["name"] for p in spec["parameters"]}
    assert names == {"inputs", "output", "output_root", "checkpoint", "skip_scanned", "config", "set"}
    required = {p["name"] for p in spec["parameters"] if not p.get("isOptional")}
    assert required == {"inputs"}
    # One spelling: every parameter but the inputs is a flag of the scan command, '_' for '-'.
    _, parsers = build_parser()
    scan_flags = {f for action in parsers["scan"]._actions for f in action.option_strings}
    assert {flag(name) for name in names - {"inputs"}} <= scan_flags
    assert flag("output_root") == "--output-root" and flag("set") == "--set"
