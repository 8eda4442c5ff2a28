"""A short, human-readable summary of a verdict table."""
from __future__ import annotations

import unicodedata
from collections import Counter

from models.segments import describe_segments
from transforms.elements import NO_FACE, OK, SKIPPED
from transforms.tables import read_table

NOT_FAILURES = (OK, NO_FACE, SKIPPED)  # judged, or judged before: everything else is listed as not judged


def printable(text: object) -> str:
    """``text`` with control characters escaped: file names are data, never terminal commands."""
    return "".join(
        c if unicodedata.category(c) != "Cc" else c.encode("unicode_escape").decode() for c in str(text)
    )


def summarize(verdicts_dir: str, top: int = 5) -> str:
    table = read_table(verdicts_dir)
    columns = ["uri", "status", "label", "score", "num_tracks", "error", "model_name", "segments"]
    rows = table.select([c for c in columns if c in table.column_names]).to_pylist()
    lines = [f"{len(rows)} inputs judged (model: {rows[0]['model_name'] if rows else '-'})"]
    statuses = Counter(r["status"] for r in rows)
    lines.append("  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    labels = Counter(r["label"] for r in rows if r["label"])
    if labels:
        lines.append("  by label:  " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))
    scored = sorted((r for r in rows if r["score"] is not None), key=lambda r: -r["score"])
    if scored:
        lines.append("  most suspicious:")
        for r in scored[:top]:
            where = describe_segments(r.get("segments") or [])
            lines.append(f"    {r['score']:.3f}  {r['label']:<4}  tracks={r['num_tracks']}  {r['uri']!r}"
                         + (f"  {where}" if where else ""))
    failed = [r for r in rows if r["status"] not in NOT_FAILURES]
    if failed:
        lines.append("  not judged:")
        for r in failed[:top]:
            lines.append(f"    {r['status']:<11} {r['uri']!r}: {printable(r['error'])}")
        if len(failed) > top:
            lines.append(f"    ... and {len(failed) - top} more")
    lines.append(f"  verdicts: {printable(verdicts_dir)}")
    return "\n".join(lines)
