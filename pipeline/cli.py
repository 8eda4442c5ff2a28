"""``deepfake-scan``: the command line of the scanner."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

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
    p.add_argument("--output", required=True, metavar="OUT_DIR", help="output folder (local or fsspec URL)")
    p.add_argument("--config", metavar="YAML", help="scan configuration (default: built-in, see configs/scan.yaml)")
    p.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="model checkpoint file or URL (default: the bundled model; 'untrained' for random weights)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set faces.crop_size=380 (repeatable)",
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
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the samples into")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--small", action="store_true", help="a few short clips only (for tests)")
    return p


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="deepfake-scan",
        description="Batch deepfake scanning of video archives on Apache Beam.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {"scan": _scan_parser(sub), "samples": _samples_parser(sub)}
    return parser, parsers


def _own_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings]


def main(argv: Optional[Sequence[str]] = None, test_pipeline=None) -> int:
    """Entry point of the console script; returns the exit status."""
    from models.checkpoint import CheckpointError
    from models.device import DeviceUnavailableError
    from pipeline.config import ConfigError
    from pipeline.inputs import InputError
    from pipeline.options import split_beam_args
    from pipeline.scan import OutputError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    own_flags = {flag for p in parsers.values() for flag in _own_flags(p)} | set(_own_flags(parser))
    own, beam_args = split_beam_args(argv, sorted(own_flags))
    args = parser.parse_args(own)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "scan":
            return _scan(args, beam_args, test_pipeline)
        if beam_args:
            parser.error(f"Beam options are only for jobs: {' '.join(beam_args)}")
        if args.command == "samples":
            return _samples(args)
    except (ConfigError, InputError, CheckpointError, OutputError, DeviceUnavailableError) as e:
        print(f"deepfake-scan: error: {e}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


def _scan(args, beam_args: list[str], test_pipeline) -> int:
    from pipeline.config import ScanConfig, load_config
    from pipeline.options import pipeline_options
    from pipeline.scan import prepare_scan, run_scan
    from pipeline.summary import summarize

    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"model.checkpoint={args.checkpoint}")
    config = load_config(ScanConfig, args.config, overrides)
    plan = prepare_scan(args.inputs, args.output, config)
    logger.info("scan %s: %d inputs -> %s", plan.run.scan_id, len(plan.inputs), plan.verdicts_dir)
    run_scan(plan, pipeline_options(beam_args), test_pipeline=test_pipeline)
    if not args.quiet:
        print(summarize(plan.verdicts_dir))
    return 0


def _samples(args) -> int:
    from pipeline.samples import generate_samples

    items = generate_samples(args.out_dir, seed=args.seed, small=args.small)
    print(f"{len(items)} samples written to {args.out_dir} (manifest: {args.out_dir}/manifest.csv)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
