"""Scheduled scans under one output root: where each scan goes, and what earlier ones judged.

``ROOT/scan_date=YYYY-MM-DD/scan_id=ID/`` holds one scan (Hive-style
partitions: ``pyarrow.dataset.dataset(ROOT, format="parquet", partitioning="hive",
exclude_invalid_files=True)`` reads every scan's verdicts as one table with
``scan_date`` and ``scan_id`` columns). ``--skip-scanned`` has the workers read
the complete scans under ``ROOT`` that used the same checkpoint
(``transforms.earlier_verdicts``): bytes already judged are not decoded again.
"""
from __future__ import annotations

import datetime as dt


def scan_dir(root: str, scan_id: str, when: dt.datetime) -> str:
    """Where one scan under ``root`` writes its outputs."""
    return f"{root.rstrip('/')}/scan_date={when:%Y-%m-%d}/scan_id={scan_id}"
