"""Scheduled scans under one output root: where each scan goes, and what earlier ones judged.

``ROOT/scan_date=YYYY-MM-DD/scan_id=ID/`` holds one scan (Hive-style
partitions: ``pyarrow.dataset.dataset(ROOT, format="parquet", partitioning="hive",
exclude_invalid_files=True)`` reads every scan's verdicts as one table with
``scan_date`` and ``scan_id`` columns). ``--skip-scanned`` looks up inputs by
content fingerprint among the complete scans under ``ROOT`` that used the same
checkpoint: bytes already judged are not decoded again.
"""
from __future__ import annotations

import datetime as dt
import logging

import fsspec

from transforms.elements import NO_FACE, OK, SKIPPED, UNREADABLE, UNSUPPORTED
from transforms.tables import SUCCESS, read_table

logger = logging.getLogger(__name__)

# Verdicts that another run with the same checkpoint would repeat. Timeouts, limits
# and errors are worth another try (a later run may have more time or a fixed bug);
# so is small_face, which depends on faces.min_judge_size, a setting, not the checkpoint.
FINAL_STATUSES = (OK, NO_FACE, UNREADABLE, UNSUPPORTED)
_COLUMNS = ["content_sha256", "checkpoint_sha256", "status", "score", "label", "scan_id", "previous_scan_id"]


def scan_dir(root: str, scan_id: str, when: dt.datetime) -> str:
    """Where one scan under ``root`` writes its outputs."""
    return f"{root.rstrip('/')}/scan_date={when:%Y-%m-%d}/scan_id={scan_id}"


def previous_verdicts(root: str, checkpoint_sha256: str) -> dict[str, dict]:
    """``content_sha256 -> {scan_id, status, score, label}`` judged under ``root`` by this checkpoint.

    Only complete tables (with ``_SUCCESS``) count; a later scan's verdict wins.
    Skipped rows point back to the scan that really judged the bytes.
    """
    fs, base = fsspec.core.url_to_fs(root)
    markers = sorted(fs.glob(f"{base.rstrip('/')}/scan_date=*/scan_id=*/verdicts/{SUCCESS}"))
    found: dict[str, dict] = {}
    for marker in markers:
        table_dir = fs.unstrip_protocol(marker.rsplit("/", 1)[0])
        if table_dir.startswith("file://"):
            table_dir = table_dir[len("file://") :]
        try:
            rows = read_table(table_dir, columns=_COLUMNS).to_pylist()
        except Exception as e:  # one unreadable old table must not stop today's scan
            logger.warning("ignoring earlier verdicts in %s: %s", table_dir, e)
            continue
        for row in rows:
            if row["checkpoint_sha256"] != checkpoint_sha256 or not row["content_sha256"]:
                continue
            if row["status"] == SKIPPED and row["previous_scan_id"]:
                judged_in = row["previous_scan_id"]  # carried forward: point at the scan that judged it
            elif row["status"] in FINAL_STATUSES:
                judged_in = row["scan_id"]
            else:
                continue
            found[row["content_sha256"]] = {
                "scan_id": judged_in, "status": row["status"], "score": row["score"], "label": row["label"]
            }
    logger.info("%d inputs already judged by this checkpoint under %s", len(found), root)
    return found
