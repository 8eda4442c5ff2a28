"""``deepfake-scan``: the command line of the scanner."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from pipeline.datasets import DEFAULT_SPLIT_SEED

logger = logging.getLogger("deepfake_scan")

SCAN_EPILOG = """\
Any Apache Beam pipeline option may be given too and is passed to Beam, e.g.
  --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
Without --runner the job runs locally on Beam's DirectRunner.

examples:
  deepfake-scan scan data/samples --output outputs/sample_scan
  deepfake-scan scan 'gs://archive/2026/**/*.mp4' --output gs://bucket/scans/today
  deepfake-scan scan manifest.csv --output out --set sampling.max_clips=2 --set faces.min_face_size=60
"""


def _add_config_args(p: argparse.ArgumentParser, config_help: str, example: str) -> None:
    """``--config YAML`` and ``--set KEY=VALUE``: every command that takes a config takes it this way."""
    p.add_argument("--config", metavar="YAML", help=config_help)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one config key, e.g. --set {example} (repeatable)",
    )


def _add_scan_config_args(p: argparse.ArgumentParser) -> None:
    _add_config_args(p, "scan configuration (default: built-in, see configs/scan.yaml)", "sampling.max_clips=2")


def _scan_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "scan",
        help="judge videos and images, write Parquet verdicts",
        description="Scan media for face manipulation and write one Parquet verdict row per input "
        "to OUTPUT/verdicts/ (the effective config goes to OUTPUT/config.yaml).",
        epilog=SCAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="file, directory (searched recursively), glob, fsspec URL (gs://, memory://, ...) "
        "or manifest (.csv, .jsonl, .parquet with a 'uri' column)",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--output", metavar="OUT_DIR", help="output folder (local or fsspec URL)")
    where.add_argument(
        "--output-root",
        metavar="ROOT",
        help="for scheduled scans: write to ROOT/scan_date=YYYY-MM-DD/scan_id=ID/ instead",
    )
    p.add_argument(
        "--skip-scanned",
        action="store_true",
        help="with --output-root: skip inputs whose bytes an earlier scan under ROOT judged with the same "
        "checkpoint (their rows say 'skipped' and carry the earlier verdict)",
    )
    _add_scan_config_args(p)
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="model checkpoint file or URL (default: the bundled model; 'untrained' for random weights; "
        "'sbi:PATH' for the Self-Blended Images authors' weights)",
    )
    p.add_argument("--quiet", action="store_true", help="do not print the summary")
    return p


def _samples_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "samples",
        help="generate the bundled sample archive",
        description="Generate a deterministic sample archive of H.264 videos and still images made from "
        "scikit-image's face photos, half of them manipulated, with OUT_DIR/manifest.csv "
        "(uri,label,manipulation).",
        epilog="example: deepfake-scan samples data/crossset --cross-manipulation "
        "(then: deepfake-scan evaluate --data data/crossset/manifest.csv ...)",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the samples into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--small", action="store_true", help="a few short clips only (for tests)")
    kind.add_argument(
        "--training-set",
        action="store_true",
        help="write the larger, identity-split training set of the demo checkpoint instead "
        "(manifest columns uri,label,manipulation,group,split)",
    )
    kind.add_argument(
        "--cross-manipulation",
        action="store_true",
        help="write the cross-manipulation evaluation set instead: the training set's held-out test "
        "identities, each real and under every manipulation family the detector never trains on "
        "(manifest columns uri,label,manipulation,group,split)",
    )
    p.add_argument(
        "--test-identities",
        type=int,
        default=None,
        metavar="N",
        help="with --cross-manipulation: only the first N held-out identities (default: all)",
    )
    p.add_argument("--identities", type=int, default=100,
                   help="with --training-set: LFW identities to use; with --cross-manipulation: give the "
                   "training set's, with its --seed, so that the held-out identities are its test split")
    p.add_argument(
        "--train-videos",
        type=int,
        default=4,
        help="with --training-set: real videos per training identity, each with a new scene, lighting, "
        "pose and compression (validation and test identities get one real and one fake)",
    )
    return p


def _extract_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "extract",
        help="extract labelled face crops for training",
        description="Run the scan job's decoding, face detection, tracking and cropping over a labelled "
        "dataset and write PNG face crops with labels, groups and splits as Parquet under "
        "FACES_DIR/faces/ (one row per crop) and FACES_DIR/videos/ (one row per video). Crops are cut as "
        "the training config's model section says (crop_policy, input_size, crop_margin, box_margins); "
        "the spec goes to FACES_DIR/crop.json.",
        epilog="DATA is a manifest (.csv/.jsonl/.parquet: uri,label[,manipulation][,group][,split]) or a "
        "FaceForensics++, Celeb-DF v2 or DFDC folder. Beam options pass through as for 'scan'.\n"
        "example: deepfake-scan extract --data data/trainset/manifest.csv --output outputs/demo_faces "
        "--train-config configs/train_demo.yaml",
    )
    p.add_argument("--data", required=True, help="manifest or dataset folder (local or fsspec URL)")
    p.add_argument("--output", required=True, metavar="FACES_DIR", help="output folder")
    p.add_argument(
        "--train-config",
        metavar="YAML",
        help="the training configuration the crops are for: its model section says how to cut them "
        "(default: the built-in training defaults, aligned 224 px crops)",
    )
    _add_scan_config_args(p)
    p.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED,
                   help=f"seed of the split assignment when the data has none (default {DEFAULT_SPLIT_SEED}; "
                   "evaluate takes the same)")
    return p


def _train_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train the frame and sequence models",
        description="Train the EfficientNet frame model on extracted face crops, then the BiLSTM over "
        "track embeddings, calibrate on validation, and write OUTPUT/model.pt (a scan checkpoint), "
        "OUTPUT/metrics.jsonl, OUTPUT/state.pt (for resume) and OUTPUT/config.yaml.",
        epilog="example: deepfake-scan train --config configs/train_demo.yaml --set frame.epochs=3 "
        "--set output=outputs/try",
    )
    _add_config_args(p, "training configuration (default: built-in, see pipeline/train_config.py; "
                     "e.g. configs/train_demo.yaml)", "frame.epochs=3")
    p.add_argument("--resume", metavar="STATE", help="continue from a training state file (OUTPUT/state.pt)")
    return p


def _evaluate_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="measure a checkpoint on labelled data",
        description="Scan labelled data with the scan job itself and report video- and frame-level "
        "ROC AUC, average precision, accuracy, log loss, EER, the confusion matrix and a per-manipulation "
        "breakdown, as a table and as JSON.",
    )
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint to evaluate (default: the bundled model)")
    p.add_argument("--data", required=True, help="manifest or dataset folder")
    p.add_argument("--output", required=True, metavar="METRICS.json", help="where to write the metrics")
    p.add_argument("--split", choices=("train", "val", "test", "all"),
                   help="which split to score (default: test where the data names splits, all of it where it "
                   "names none)")
    p.add_argument("--seed", type=int, default=DEFAULT_SPLIT_SEED,
                   help=f"with --split on data without splits: the seed extract was given (default "
                   f"{DEFAULT_SPLIT_SEED}, extract's default)")
    _add_scan_config_args(p)
    p.add_argument("--work-dir", help="where the scan's verdicts go (default: next to METRICS.json)")
    return p


def _report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a scan",
        description="Write one HTML file (images inline, no external requests) with counts by status and "
        "label, the score histogram, ROC and precision-recall curves when labels are known, and the most "
        "suspicious inputs with their faces, whole-video score timelines and a Grad-CAM heat map of the frame "
        "model over the most suspicious face (the sources are re-decoded).",
        epilog="example: deepfake-scan report outputs/sample_scan/verdicts --output report.html "
        "--manifest data/samples/manifest.csv",
    )
    p.add_argument("verdicts", metavar="VERDICTS", help="a scan's verdicts/ folder (local or fsspec URL)")
    p.add_argument("--output", required=True, metavar="REPORT.html", help="where to write the report")
    p.add_argument("--manifest", help="manifest with uri,label columns: adds ground truth, ROC and PR curves")
    p.add_argument("--csv", dest="csv_path", metavar="OUT.csv", help="also export the flat verdict table")
    p.add_argument("--checkpoint", help="checkpoint for Grad-CAM (default: the one the scan's run.json names)")
    p.add_argument("--top", type=int, default=5, help="how many suspicious inputs to show in detail (default 5)")
    return p


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="deepfake-scan",
        description="Batch deepfake scanning of video archives on Apache Beam.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {
        "scan": _scan_parser(sub),
        "extract": _extract_parser(sub),
        "train": _train_parser(sub),
        "evaluate": _evaluate_parser(sub),
        "samples": _samples_parser(sub),
        "report": _report_parser(sub),
    }
    return parser, parsers


class _DropBeamImportNoise(logging.Filter):
    """Beam's GCP modules warn at import about optional clients this scanner never uses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamImportNoise())
    # Beam narrates its internals (type hints, batch timings) at INFO; keep that for -v.
    logging.getLogger("apache_beam").setLevel(logging.INFO if verbose else logging.WARNING)


def _own_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def main(argv: Optional[Sequence[str]] = None, test_pipeline=None) -> int:
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _configure_logging(verbose="-v" in argv or "--verbose" in argv)
    from models.checkpoint import CheckpointError
    from models.device import DeviceUnavailableError
    from pipeline.config import ConfigError
    from transforms.manifests import InputError
    from pipeline.options import split_beam_args
    from pipeline.report import ReportError
    from pipeline.scan import OutputError
    from transforms.containment import ContainmentError

    parser, parsers = build_parser()
    own_flags = {flag for p in parsers.values() for flag in _own_flags(p)} | set(_own_flags(parser))
    own, beam_args = split_beam_args(argv, sorted(own_flags))
    args = parser.parse_args(own)
    try:
        if args.command == "scan":
            return _scan(args, beam_args, test_pipeline)
        if args.command == "extract":
            return _extract(args, beam_args, test_pipeline)
        if args.command == "evaluate":
            return _evaluate(args, beam_args)
        if beam_args:
            parser.error(f"Beam options are only for jobs: {' '.join(beam_args)}")
        if args.command == "samples":
            return _samples(args)
        if args.command == "train":
            return _train(args)
        if args.command == "report":
            return _report(args)
    except (ConfigError, InputError, CheckpointError, OutputError, DeviceUnavailableError, ReportError,
            ContainmentError) as e:
        print(f"deepfake-scan: error: {e}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _scan(args, beam_args: list[str], test_pipeline) -> int:
    from pipeline.config import ScanConfig, load_config
    from pipeline.options import pipeline_options
    from pipeline.scan import is_dry_run, prepare_scan, run_scan
    from pipeline.summary import summarize

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"model.checkpoint={args.checkpoint}")
    config = load_config(ScanConfig, args.config, overrides)
    plan = prepare_scan(
        args.inputs, args.output, config, output_root=args.output_root, skip_scanned=args.skip_scanned
    )
    logger.info("scan %s: %s -> %s", plan.run.scan_id, ", ".join(s.spec for s in plan.specs), plan.verdicts_dir)
    options = pipeline_options(beam_args)
    result = run_scan(plan, options, test_pipeline=test_pipeline)
    if is_dry_run(options):
        print(f"dry run: scan {plan.run.scan_id} of {len(plan.specs)} input spec(s) translated into a job graph "
              f"of {getattr(result, 'graph_bytes', 0) / 1024:.1f} KB; nothing ran")
    elif not args.quiet:
        print(summarize(plan.verdicts_dir))
    return 0


def _extract(args, beam_args: list[str], test_pipeline) -> int:
    from pipeline.config import ScanConfig, load_config
    from pipeline.datasets import load_dataset, split_summary
    from pipeline.extract import run_extract
    from pipeline.options import pipeline_options
    from pipeline.train_config import TrainConfig

    config = load_config(ScanConfig, args.config, args.overrides)
    crop = load_config(TrainConfig, args.train_config).model.crop
    config.faces.check_crop(crop, f"training config {args.train_config or '(built-in defaults)'}")
    videos = load_dataset(args.data, seed=args.seed)
    logger.info("extracting %s faces of %d videos: %s", crop.describe(), len(videos), split_summary(videos))
    run_extract(videos, args.output, config, crop, pipeline_options(beam_args), test_pipeline=test_pipeline)
    print(f"face crops written to {args.output.rstrip('/')}/faces (videos: {args.output.rstrip('/')}/videos)")
    return 0


def _train(args) -> int:
    from pipeline.config import load_config
    from pipeline.train import run_train
    from pipeline.train_config import TrainConfig

    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    config = load_config(TrainConfig, args.config, overrides)
    path = run_train(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 writes the checkpoint
        print(f"checkpoint written to {path}")
    return 0


def _evaluate(args, beam_args: list[str]) -> int:
    from pipeline.config import ScanConfig, load_config
    from pipeline.evaluate import format_table, run_evaluate
    from pipeline.options import pipeline_options

    config = load_config(ScanConfig, args.config, args.overrides)
    metrics = run_evaluate(args.checkpoint, args.data, args.output, config, split=args.split,
                           work_dir=args.work_dir, options=pipeline_options(beam_args), seed=args.seed)
    print(format_table(metrics))
    print(f"metrics written to {args.output}")
    return 0


def _report(args) -> int:
    from pipeline.report import run_report

    summary = run_report(args.verdicts, args.output, manifest=args.manifest, csv_path=args.csv_path,
                         checkpoint=args.checkpoint, top=args.top)
    print(f"report written to {args.output}: {summary['inputs']} inputs, {summary['figures']} figures "
          f"({summary['gradcams']} Grad-CAM)" + (f"; table: {args.csv_path}" if args.csv_path else ""))
    return 0


def _samples(args) -> int:
    from pipeline.synthetic.samples import generate_samples
    from pipeline.synthetic.trainset import generate_training_set

    if args.test_identities is not None and not args.cross_manipulation:
        print("deepfake-scan: error: --test-identities needs --cross-manipulation", file=sys.stderr)
        return 2
    if args.cross_manipulation:
        from pipeline.synthetic.crossset import generate_cross_set  # held-out families: never near training code

        # The held-out identities are those the training set made with the same --seed and
        # --identities put in test: a cross set for another training set would leak identities.
        items = generate_cross_set(args.out_dir, seed=args.seed, max_identities=args.test_identities,
                                   split_seed=args.seed, lfw_identities=args.identities)
    elif args.training_set:
        items = generate_training_set(
            args.out_dir, seed=args.seed, identities=args.identities, train_videos=args.train_videos
        )
    else:
        items = generate_samples(args.out_dir, seed=args.seed, small=args.small)
    print(f"{len(items)} samples written to {args.out_dir} (manifest: {args.out_dir}/manifest.csv)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
