"""Entry point of the Dataflow Flex Template (``dataflow/metadata.json``).

Dataflow's template launcher runs this file with each template parameter as
``--name=value`` and the service's own options (project, region, temp and
staging locations, ...) besides. The template's parameters are the flags of
``deepfake-scan scan``, spelled as template parameters are (no leading dashes,
``_`` for ``-``): ``output_root`` is ``--output-root``, ``set`` is ``--set``;
``inputs`` holds the command's INPUT arguments, comma-separated. A template
parameter holds one value, so ``set`` takes several ``key=value`` settings
separated by ``;``, each becoming one ``--set``. Everything else passes
through to Beam.
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
# Template parameters that are the scan command's flags: one of the outputs (as the command
# requires), the other flags with a value, and the switches (given as "true"/"false").
OUTPUTS = ("output", "output_root")
VALUED = OUTPUTS + ("checkpoint", "config")
SWITCHES = ("skip_scanned",)


def flag(parameter: str) -> str:
    """The ``deepfake-scan scan`` flag a template parameter stands for: ``output_root`` -> ``--output-root``."""
    return "--" + parameter.replace("_", "-")


def scan_argv(argv: Sequence[str]) -> list[str]:
    """Template parameters -> the equivalent ``deepfake-scan scan`` arguments."""
    p = argparse.ArgumentParser(prog="deepfake-scan flex template", allow_abbrev=False)
    p.add_argument("--inputs", required=True, help="comma-separated files, folders, globs or manifests")
    where = p.add_mutually_exclusive_group(required=True)
    for name in OUTPUTS:
        where.add_argument(f"--{name}")
    for name in VALUED:
        if name not in OUTPUTS:
            p.add_argument(f"--{name}")
    for name in SWITCHES:
        p.add_argument(f"--{name}", default="false")
    p.add_argument("--set", default="", help="';'-separated section.key=value settings, each one --set")
    args, beam_args = p.parse_known_args(argv)
    if not args.config and os.path.exists(DEFAULT_CONFIG):
        args.config = DEFAULT_CONFIG
    out = ["scan", *[i for i in args.inputs.split(",") if i], "--quiet"]
    for name in VALUED:
        if getattr(args, name):
            out += [flag(name), getattr(args, name)]
    for name in SWITCHES:
        if getattr(args, name).lower() in TRUE:
            out.append(flag(name))
    for item in filter(None, (s.strip() for s in args.set.split(";"))):
        out += ["--set", item]
    return out + list(beam_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli_main(scan_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
