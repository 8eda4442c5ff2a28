"""Separating Apache Beam's pipeline options from the job's own arguments.

The CLI takes positional inputs and Beam options side by side
(``deepfake-scan scan DIR --output OUT --runner DataflowRunner ...``). Plain
``parse_known_args`` would take the value of ``--runner X`` for an input path, so
we ask Beam's own parser which flags it owns and how many values each takes.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from models.device import available_cores
from pipeline.config import ScanConfig


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


MAX_LOCAL_WORKERS = 4  # each DirectRunner worker thread holds MTCNN and a decoder process (~0.4 GB)


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options for a job; without ``--runner`` it runs on the DirectRunner.

    Beam 2.77's default would try its Prism runner first, which downloads a binary
    from the internet at start-up: a scanner must never need that.

    Locally the DirectRunner gets one worker thread per core (at most
    ``MAX_LOCAL_WORKERS``) unless ``--direct_num_workers`` says otherwise: one
    input's decoding and detection then overlap another's frame model, and each
    worker's torch runs on its share of the cores (``threads_per_worker``).
    On 2 cores this scanned the benchmark archive in 16% less wall time and 15%
    less CPU than one worker with two torch threads (README, Performance).
    """
    args = list(beam_args)
    if not _given(args, "--runner"):
        args.append("--runner=DirectRunner")
    if _direct(args) and not _given(args, "--direct_num_workers") and _value(args, "--direct_running_mode") in (
        None, "multi_threading", "multi_processing"
    ):
        args.append(f"--direct_num_workers={min(available_cores(), MAX_LOCAL_WORKERS)}")
        if not _given(args, "--direct_running_mode"):
            args.append("--direct_running_mode=multi_threading")
    if _direct(args):
        without_timed_data_flushes()
    return PipelineOptions(args)


def without_timed_data_flushes() -> None:
    """Stop the local runner's timed data-plane flushes, which drop elements under load.

    With worker threads or processes, Beam's FnApiRunner moves every stage's input
    and output over gRPC through ``TimeBasedBufferingClosableOutputStream``s: a
    timer thread flushes each stream once a second
    (``worker_handlers.DATA_BUFFER_TIME_LIMIT_MS``) by taking its bytes, queueing
    them, then clearing the stream. The bundle's thread writes on without that
    flush's lock, so whatever it writes while the queue is full is cleared unsent
    (Beam 2.77, ``runners/worker/data_plane.py``): whole elements vanish without
    an error. At 0 Beam builds size-based streams instead, flushed only by the
    writing thread between elements. Batch jobs lose nothing by it: a bundle's
    data still goes out at 10 MB and when the bundle ends.
    """
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def threads_per_worker(options: PipelineOptions) -> int:
    """torch intra-op threads for each of the DirectRunner's workers; 0 (torch's default) elsewhere.

    Several workers, each with a pool as wide as the machine, would oversubscribe
    the cores (torch's OpenMP pool busy-waits for all its threads).
    """
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if not _is_direct_runner(options.view_as(StandardOptions).runner or "DirectRunner"):
        return 0
    direct = options.view_as(DirectOptions)
    cores = available_cores()
    workers = local_workers(options)
    if workers <= 1 or direct.direct_running_mode == "in_memory":
        return 0
    return max(1, cores // workers)


def local_workers(options: PipelineOptions) -> int:
    """How many worker threads or processes the DirectRunner runs (Beam: 0 means one per core)."""
    from apache_beam.options.pipeline_options import DirectOptions

    workers = options.view_as(DirectOptions).direct_num_workers
    workers = 1 if workers is None else workers
    return available_cores() if workers == 0 else workers


def with_worker_threads(config: ScanConfig, options: PipelineOptions) -> ScanConfig:
    """``config`` with ``model.torch_threads`` 0 (auto) resolved to this runner's share of the cores."""
    threads = threads_per_worker(options)
    if not threads or config.model.torch_threads:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model, torch_threads=threads))


def _given(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _value(args: Sequence[str], flag: str) -> str | None:
    value = None
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            value = a.split("=", 1)[1]
        elif a == flag and i + 1 < len(args):
            value = args[i + 1]
    return value


def _is_direct_runner(runner: str) -> bool:
    # Beam matches runner names case-insensitively, with or without "Runner" and a module path;
    # the BundleBasedDirectRunner runs one worker whatever --direct_num_workers says.
    name = str(runner).split(".")[-1].lower()
    return name in ("directrunner", "direct")


def _direct(args: Sequence[str]) -> bool:
    runner = _value(args, "--runner")
    return runner is not None and _is_direct_runner(runner)
