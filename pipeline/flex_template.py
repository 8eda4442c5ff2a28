"""Entry point of the Dataflow Flex Template (``dataflow/metadata.json``).

Dataflow's template launcher runs this file with each template parameter as
``--name=value`` and the service's own options (project, region, temp and
staging locations, ...) besides. The scan parameters become a ``deepfake-scan
scan`` command line; everything else passes through to Beam.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from pipeline.cli import main as cli_main

TRUE = ("1", "true", "yes")
# The scan configuration the template uses unless its 'config' parameter names another.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                              "scan_dataflow_gpu.yaml")


def scan_argv(argv: Sequence[str]) -> list[str]:
    """Template parameters -> the equivalent ``deepfake-scan scan`` arguments."""
    p = argparse.ArgumentParser(prog="deepfake-scan flex template", allow_abbrev=False)
    p.add_argument("--inputs", required=True, help="comma-separated files, folders, globs or manifests")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--output")
    where.add_argument("--output_root")
    p.add_argument("--checkpoint")
    p.add_argument("--config")
    p.add_argument("--skip_scanned", default="false")
    p.add_argument("--overrides", default="", help="semicolon-separated section.key=value settings")
    args, beam_args = p.parse_known_args(argv)
    out = ["scan", *[i for i in args.inputs.split(",") if i], "--quiet"]
    out += ["--output", args.output] if args.output else ["--output-root", args.output_root]
    if args.checkpoint:
        out += ["--checkpoint", args.checkpoint]
    config = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    if config:
        out += ["--config", config]
    if args.skip_scanned.lower() in TRUE:
        out.append("--skip-scanned")
    for item in filter(None, (s.strip() for s in args.overrides.split(";"))):
        out += ["--set", item]
    return out + list(beam_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli_main(scan_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
