"""``python -m bench.soak --videos 200``: does a long scan's memory stay flat?

Scans an archive of short generated videos (the benchmark archive's recipe,
without its long video) with one local worker, samples the resident memory of
the scan's whole process tree (worker, decoder child, its per-input processes)
every quarter second, and compares the peak over the first quarter of the run
with the peak over the last. A leak of even a few MB per input shows as growth.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Optional, Sequence

from bench.archive import build_archive
from bench.measure import ScanMeasurement, measure_scan

logger = logging.getLogger("bench.soak")


def quarter_peaks_mb(measured: ScanMeasurement) -> tuple[float, float]:
    """Peak RSS (MB) over the first and the last quarter of the run, by time."""
    if not measured.rss_mb:
        return 0.0, 0.0
    end = measured.rss_mb[-1][0]
    first = [mb for t, mb in measured.rss_mb if t <= end / 4] or [0.0]
    last = [mb for t, mb in measured.rss_mb if t >= 3 * end / 4] or [0.0]
    return max(first), max(last)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=200, help="videos in the archive")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    p.add_argument("--work", default="outputs/soak", help="archive cache and scan output")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", dest="json_path", metavar="OUT.json")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.perf_counter()
    videos = build_archive(args.work, args.videos, short_s=args.seconds, long_s=0)
    logger.info("archive of %d videos ready in %.0f s", len(videos), time.perf_counter() - started)
    out = os.path.join(args.work, f"scan-{int(time.time())}")
    measured = measure_scan([v.uri for v in videos], out, args.overrides,
                            beam_args=["--direct_num_workers=1", "--direct_running_mode=in_memory"])
    first, last = quarter_peaks_mb(measured)
    statuses: dict[str, int] = {}
    for row in measured.rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    result = {
        "videos": len(videos), "seconds_each": args.seconds, "wall_s": round(measured.wall_s, 1),
        "rows": len(measured.rows), "statuses": statuses, "peak_rss_mb": round(measured.peak_rss_mb, 1),
        "first_quarter_peak_mb": round(first, 1), "last_quarter_peak_mb": round(last, 1),
        "growth": round(last / first - 1.0, 4) if first else None,
    }
    print(json.dumps(result, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
