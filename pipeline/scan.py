"""The scan job: media files in, one Parquet verdict row per input out.

``build_scan_pipeline`` wires the transforms; ``prepare_scan`` does the checks
that must fail in a second on the laptop (config, inputs, checkpoint, output)
before any worker starts; ``run_scan`` runs a prepared scan on the configured
runner (DirectRunner by default, Dataflow with the usual Beam options).

The driver reads only the checkpoint's card and fingerprint (``read_card``),
never its models: workers load those, once per process. The card says how the
faces are cut (``ScanPlan.crop``), so a checkpoint always sees its own crops.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Optional, Sequence

import apache_beam as beam
import fsspec

from models.checkpoint import CheckpointError, read_card
from models.crops import CropSpec
from pipeline.config import ScanConfig, dump_config
from pipeline.history import scan_dir
from pipeline.options import local_workers, pipeline_options, threads_per_worker, with_worker_threads
from transforms.aggregate import AggregateVerdicts
from transforms.earlier_verdicts import EarlierVerdicts, SkipJudged
from transforms.listing import InputSpec, ListInputs, check_spec
from transforms.sandbox import DecoderSandbox
from transforms.manifests import InputError
from transforms.elements import MediaInput
from transforms.extract import ExtractFaces
from transforms.handler import FrameModelHandler
from transforms.score import ScoreFaces
from transforms.verdicts import RunInfo, WriteVerdicts

logger = logging.getLogger(__name__)

DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "models", "weights", "demo.pt")


class OutputError(ValueError):
    """The output location cannot be used."""


def package_version() -> str:
    try:
        return importlib.metadata.version("deepfake-scan")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def default_checkpoint() -> str:
    """The bundled demo checkpoint when installed, else untrained weights (see README)."""
    return DEMO_CHECKPOINT if os.path.exists(DEMO_CHECKPOINT) else "untrained"


def new_scan_id(now: Optional[dt.datetime] = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ScanPlan:
    """Everything a scan needs, checked on the driver."""

    inputs: tuple[MediaInput, ...]  # listed already (a data set's videos); else ``specs`` are listed by workers
    output_dir: str
    config: ScanConfig
    checkpoint: str
    run: RunInfo
    crop: CropSpec  # how faces are cut: the checkpoint card's
    specs: tuple[InputSpec, ...] = ()  # INPUT arguments, checked; the workers list them
    skip_root: Optional[str] = None  # --skip-scanned: the root whose earlier scans the workers read
    aggregator: Optional[str] = None  # the card's: workers load the BiLSTM only when it is "bilstm"
    precision: Optional[str] = None  # the card's, when its weights must run in one precision

    @property
    def verdicts_dir(self) -> str:
        return self.output_dir.rstrip("/") + "/verdicts"

    @property
    def staging_dir(self) -> str:
        """Where verdict shards wait until the whole scan has finished."""
        return f"{self.output_dir.rstrip('/')}/_staging-{self.run.scan_id}"


def prepare_scan(
    specs: Sequence[str],
    output_dir: Optional[str],
    config: ScanConfig,
    *,
    output_root: Optional[str] = None,
    skip_scanned: bool = False,
) -> ScanPlan:
    """Check the input specs, read the checkpoint's card, and prepare the output folder.

    The specs are only checked here (``transforms.listing.check_spec``); the
    workers list them, so the job graph does not grow with the archive.

    With ``output_root`` instead of ``output_dir`` the scan goes to
    ``ROOT/scan_date=.../scan_id=.../``, and ``skip_scanned`` skips inputs whose
    bytes an earlier scan under ``ROOT`` judged with the same checkpoint.
    Raises ``InputError``, ``CheckpointError``, ``ConfigError`` or ``OutputError``
    with a one-line message.
    """
    if (output_dir is None) == (output_root is None):
        raise OutputError("give exactly one of --output and --output-root")
    if skip_scanned and output_root is None:
        raise OutputError("--skip-scanned needs --output-root (the scans to compare with live there)")
    if not specs:
        raise InputError("no input given")
    checked = tuple(check_spec(spec) for spec in dict.fromkeys(specs))
    return plan_scan((), output_dir, config, output_root=output_root, skip_scanned=skip_scanned, specs=checked)


def plan_scan(
    inputs: Sequence[MediaInput],
    output_dir: Optional[str],
    config: ScanConfig,
    *,
    output_root: Optional[str] = None,
    skip_scanned: bool = False,
    specs: Sequence[InputSpec] = (),
) -> ScanPlan:
    """``prepare_scan`` for inputs already listed (e.g. by a dataset adapter), or for checked ``specs``."""
    checkpoint = config.model.checkpoint or default_checkpoint()
    card, sha256 = read_card(checkpoint)
    config.faces.check_crop(card.crop, f"checkpoint {checkpoint}")
    now = dt.datetime.now(dt.timezone.utc)
    scan_id = new_scan_id(now)
    if output_root is not None:
        output_dir = scan_dir(output_root, scan_id, now)
    _check_output(output_dir)
    # aggregate.threshold, when set, labels videos and stills alike; else the card's operating points.
    threshold, image_threshold = config.aggregate.threshold, config.aggregate.threshold
    if threshold is None:
        threshold, image_threshold = float(card.threshold), card.image_threshold
    run = RunInfo(
        scan_id=scan_id,
        model_name=card.name,
        checkpoint_sha256=sha256,
        package_version=package_version(),
        threshold=threshold,
        image_threshold=image_threshold,
    )
    if card.name == "untrained":
        logger.warning(
            "scanning with UNTRAINED weights: scores are meaningless until a trained checkpoint is "
            "given with --checkpoint (see README)"
        )
    plan = ScanPlan(tuple(inputs), output_dir, config, checkpoint, run, card.crop, specs=tuple(specs),
                    skip_root=output_root if skip_scanned else None, aggregator=card.aggregator,
                    precision=card.precision)
    try:
        dump_config(plan.config, output_dir.rstrip("/") + "/config.yaml")
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write to output '{output_dir}': {type(e).__name__}: {e}") from None
    return plan


_OBJECT_STORES = ("gs", "gcs", "s3", "s3a", "az", "abfs")


def _check_output(where: str) -> None:
    """Fail in one line, before any work, when ``where`` cannot be written."""
    try:
        fs, root = fsspec.core.url_to_fs(where)
        protocol = fsspec.core.split_protocol(where)[0]
        if protocol in _OBJECT_STORES:
            # makedirs would create a missing bucket (gcsfs does): a typo must fail, not make buckets.
            bucket = root.split("/", 1)[0]
            if not fs.exists(bucket):
                raise OutputError(f"cannot write to output '{where}': bucket '{bucket}' does not exist")
        else:
            fs.makedirs(root, exist_ok=True)
    except OutputError:
        raise
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot write to output '{where}': {type(e).__name__}: {e}") from None


def build_scan_pipeline(pipeline: beam.Pipeline, plan: ScanPlan,
                        handler: Optional[FrameModelHandler] = None) -> beam.PCollection:
    """Wire the scan job into ``pipeline``; returns the verdict rows.

    ``handler`` scores the face crops; by default the plan's checkpoint through
    ``FrameModelHandler`` (tests pass one that fails, to see the job survive it).
    """
    config = with_worker_threads(plan.config, pipeline.options)
    if handler is None:
        handler = frame_model_handler(plan, config)
    if plan.specs:
        listed = pipeline | "ListInputs" >> ListInputs(plan.specs, config.inputs)
    else:
        listed = pipeline | "ListedInputs" >> beam.Create(list(plan.inputs))
    skipped = None
    if plan.skip_root:
        earlier = pipeline | "EarlierVerdicts" >> EarlierVerdicts(plan.skip_root, plan.run.checkpoint_sha256)
        skipped, listed = listed | "SkipJudged" >> SkipJudged(earlier, config.decode.max_file_mb)
    extracted = listed | "ExtractFaces" >> ExtractFaces(
        config.decode, config.sampling, config.faces, plan.crop,
        device=config.model.device, torch_threads=config.model.torch_threads,
        checkpoint=plan.checkpoint, precision=config.model.precision, optimize=config.model.optimize,
        batch_size=config.model.batch_size,
    )
    if skipped is not None:
        extracted = (extracted, skipped) | "WithSkipped" >> beam.Flatten()
    rows = (
        extracted
        | "ScoreFaces" >> ScoreFaces(handler)
        | "AggregateVerdicts" >> AggregateVerdicts(plan.checkpoint, config.aggregate.strategy, plan.run,
                                                           aggregator=plan.aggregator)
    )
    rows | "WriteVerdicts" >> WriteVerdicts(plan.verdicts_dir, plan.staging_dir)
    return rows


def frame_model_handler(plan: ScanPlan, config: ScanConfig) -> FrameModelHandler:
    """The RunInference handler for the plan's checkpoint, as ``config.model`` says."""
    return FrameModelHandler(
        plan.checkpoint,
        device=config.model.device,
        batch_size=config.model.batch_size,
        model_copies=config.model.model_copies,
        optimize=config.model.optimize,
        torch_threads=config.model.torch_threads,
        # model.precision=auto defers to a card that names the precision its weights score in.
        precision=plan.precision if config.model.precision == "auto" and plan.precision else config.model.precision,
    )


def run_scan(plan: ScanPlan, options=None, test_pipeline: Optional[beam.Pipeline] = None):
    """Run a prepared scan to completion and record what ran beside the verdicts."""
    started = dt.datetime.now(dt.timezone.utc)
    pipeline = test_pipeline or beam.Pipeline(options=options or pipeline_options([]))
    containment = decoder_containment(plan.config, pipeline.options)
    build_scan_pipeline(pipeline, plan)
    graph_bytes = len(pipeline.to_runner_api().SerializeToString())
    result = pipeline.run()
    result.wait_until_finish()
    if is_dry_run(pipeline.options):
        logger.info("dry run: the scan translated for %s into a job graph of %.1f KB; nothing ran",
                    type(pipeline.runner).__name__, graph_bytes / 1024)
        result.graph_bytes = graph_bytes
        return result
    _remove_stale_staging(plan)
    _write_run_record(plan, started, {**_runner_facts(pipeline.options), "decode_containment": containment,
                                      **job_metrics(result)})
    return result


def decoder_containment(config: ScanConfig, options) -> dict:
    """The decoder child's containment where this scan decodes (README, Security).

    Locally the workers are this machine: a child is started once to see which
    layers the kernel and container allow, and under ``decode.containment:
    strict`` a missing layer stops the scan here (``ContainmentError``), before
    any input is read. Elsewhere each worker checks for itself when its DoFn
    starts (and logs the layers), so the driver only records the level.
    """
    from apache_beam.options.pipeline_options import StandardOptions

    level = config.decode.containment
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner").split(".")[-1].lower()
    if is_dry_run(options) or runner not in ("directrunner", "direct", "switchingdirectrunner"):
        return {"level": level, "checked_on": "workers"}
    if not config.decode.isolate:
        return {"level": level, "active": {}, "missing": {"all": "decode.isolate is false: decoding in-process"}}
    sandbox = DecoderSandbox(config.decode.timeout_s, config.decode.memory_mb, containment=level)
    try:
        return sandbox.containment_layers()
    finally:
        sandbox.shutdown()


def _runner_facts(options) -> dict:
    """Which runner ran the scan and, locally, with how many workers and torch threads each."""
    from apache_beam.options.pipeline_options import StandardOptions

    facts = {"runner": str(options.view_as(StandardOptions).runner or "DirectRunner")}
    threads = threads_per_worker(options)
    if threads:
        facts["local_workers"] = local_workers(options)
        facts["torch_threads_per_worker"] = threads
    return facts


def job_metrics(result) -> dict:
    """The job's counters and stage timers (seconds spent per stage, summed over workers)."""
    from apache_beam.metrics.metric import MetricsFilter

    from transforms.elements import METRICS_NAMESPACE

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except Exception as e:  # a runner without metrics support: the record goes without them
        logger.warning("job metrics unavailable: %s", e)
        return {}

    def value(m):
        return m.committed if m.committed is not None else m.attempted

    stages, calls = {}, {}
    for m in found.get("distributions", []):
        name = m.key.metric.name
        if name.endswith("_ms") and value(m) is not None:
            stages[name[:-3]] = stages.get(name[:-3], 0.0) + value(m).sum / 1000.0
            calls[name[:-3]] = calls.get(name[:-3], 0) + value(m).count
    counters = {}
    for m in found.get("counters", []):
        if value(m) is not None:
            counters[m.key.metric.name] = counters.get(m.key.metric.name, 0) + int(value(m))
    return {"stage_seconds": stages, "stage_calls": calls, "counters": counters}


def is_dry_run(options) -> bool:
    from apache_beam.options.pipeline_options import TestOptions

    return bool(options is not None and options.view_as(TestOptions).dry_run)


def _remove_stale_staging(plan: ScanPlan) -> None:
    """Staging folders of killed earlier runs into the same output (their rows were never published).

    Two scans writing into one output folder at once are not supported: the later
    publish replaces the earlier one's table, and this clean-up removes its staging.
    """
    fs, root = fsspec.core.url_to_fs(plan.output_dir)
    for path in fs.glob(f"{root.rstrip('/')}/_staging-*"):
        logger.info("removing %s, left by an earlier run that did not finish", path)
        fs.rm(path, recursive=True)


def _counted_inputs(plan: ScanPlan, metrics: Optional[dict]) -> Optional[int]:
    """How many inputs the job judged: the listing's counter (workers list), else the plan's list."""
    if not plan.specs:
        return len(plan.inputs)
    return (metrics or {}).get("counters", {}).get("inputs_listed")


def _write_run_record(plan: ScanPlan, started: dt.datetime, metrics: Optional[dict] = None) -> None:
    record = {
        "scan_id": plan.run.scan_id,
        "started_at": started.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "inputs": _counted_inputs(plan, metrics),
        "output_dir": plan.output_dir,
        "skip_scanned_under": plan.skip_root,
        "skipped_as_judged_before": {  # recognised by metadata (no byte read), or by content once hashed
            how: (metrics or {}).get("counters", {}).get(f"skipped_by_{how}", 0) for how in ("source_version", "content")
        },
        "checkpoint": plan.checkpoint,
        "checkpoint_sha256": plan.run.checkpoint_sha256,
        "model_name": plan.run.model_name,
        "crop": plan.crop.describe(),
        "threshold": plan.run.threshold,
        "image_threshold": plan.run.threshold_for("image"),
        "package_version": plan.run.package_version,
        "verdicts": plan.verdicts_dir,
        **(metrics or {}),
    }
    with fsspec.open(plan.output_dir.rstrip("/") + "/run.json", "w") as f:
        json.dump(record, f, indent=2)


__all__ = [
    "CheckpointError",
    "OutputError",
    "ScanPlan",
    "build_scan_pipeline",
    "default_checkpoint",
    "prepare_scan",
    "run_scan",
]
