"""Separating Apache Beam's pipeline options from the job's own arguments.

The CLI takes positional inputs and Beam options side by side
(``deepfake-scan scan DIR --output OUT --runner DataflowRunner ...``). Plain
``parse_known_args`` would take the value of ``--runner X`` for an input path, so
we ask Beam's own parser which flags it owns and how many values each takes.
"""
from __future__ import annotations

import functools
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions


@functools.lru_cache(maxsize=1)
def _beam_actions() -> dict:
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # the same set Beam itself parses
    return dict(parser._option_string_actions)


def split_beam_args(argv: Sequence[str], own_flags: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(own_args, beam_args)``: Beam's options (and their values) moved to the second list."""
    actions = _beam_actions()
    own, beam = [], []
    i = 0
    while i < len(argv):
        token = argv[i]
        flag = token.split("=", 1)[0]
        if token.startswith("--") and flag in actions and flag not in own_flags:
            beam.append(token)
            takes_value = actions[flag].nargs != 0
            if "=" not in token and takes_value and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                beam.append(argv[i + 1])
                i += 1
        else:
            own.append(token)
        i += 1
    return own, beam


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options for a job; without ``--runner`` it runs on the DirectRunner.

    Beam 2.77's default would try its Prism runner first, which downloads a binary
    from the internet at start-up: a scanner must never need that.
    """
    args = list(beam_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append("--runner=DirectRunner")
    return PipelineOptions(args)
