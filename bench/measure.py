"""Running the real scan job (``deepfake-scan scan``) and measuring it from outside.

The scan runs in its own process exactly as a user runs it; its memory (the
worker process and its decoder children together) is sampled from ``/proc``
while it runs, its CPU seconds come from the OS once it has ended, and its
stage timers from the ``run.json`` it writes.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from transforms.tables import read_table

logger = logging.getLogger(__name__)


@dataclass
class ScanMeasurement:
    wall_s: float
    stage_seconds: dict[str, float]
    stage_calls: dict[str, int]
    counters: dict[str, int]
    rows: list[dict]
    job_s: float = 0.0  # the job's own run time (run.json), without the CLI's start-up and imports
    cpu_s: float = 0.0  # CPU seconds of the scan process and its decoder children (user + system)
    workers: int = 1  # local worker threads the scan ran with (run.json)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB of the process tree)

    @property
    def peak_rss_mb(self) -> float:
        return max((mb for _, mb in self.rss_mb), default=0.0)

    def rss_halves_mb(self) -> tuple[float, float]:
        """Peak RSS over the first and the second half of the run: equal when memory is flat."""
        if not self.rss_mb:
            return 0.0, 0.0
        middle = self.rss_mb[-1][0] / 2
        first = [mb for t, mb in self.rss_mb if t <= middle] or [0.0]
        second = [mb for t, mb in self.rss_mb if t > middle] or [0.0]
        return max(first), max(second)


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (Linux ``/proc``)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            continue  # the process ended between two reads
    return total / 1024.0


def measure_scan(uris: Sequence[str], out_dir: str, overrides: Sequence[str] = (),
                 checkpoint: str | None = None, config: str | None = None,
                 beam_args: Sequence[str] = (), interval_s: float = 0.25) -> ScanMeasurement:
    """Scan ``uris`` with the real CLI into ``out_dir``; raises if the scan fails."""
    cmd = [sys.executable, "-m", "pipeline.cli", "scan", *uris, "--output", out_dir, "--quiet", *beam_args]
    if config:
        cmd += ["--config", config]
    for o in overrides:
        cmd += ["--set", o]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    log_path = os.path.join(os.path.dirname(os.path.abspath(out_dir)), os.path.basename(out_dir) + ".log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    samples: list[tuple[float, float]] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter() - start, _tree_rss_mb(proc.pid)))
                stop.wait(interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        stop.set()
        sampler.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the scan and every child it waited for
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        with open(log_path) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"the scan failed (exit {code}); log {log_path}:\n{tail}")
    with open(os.path.join(out_dir, "run.json")) as f:
        record = json.load(f)
    rows = read_table(os.path.join(out_dir, "verdicts")).to_pylist()
    job = (dt.datetime.fromisoformat(record["finished_at"]) - dt.datetime.fromisoformat(record["started_at"]))
    return ScanMeasurement(wall, record.get("stage_seconds", {}), record.get("stage_calls", {}),
                           record.get("counters", {}), rows, job.total_seconds(), cpu,
                           int(record.get("local_workers") or 1), samples)
