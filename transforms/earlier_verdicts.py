"""``--skip-scanned``: the verdicts earlier scans under one root gave, read by the workers.

Every complete verdict table under ``ROOT/scan_date=*/scan_id=*/verdicts/``
(those with ``_SUCCESS``) is read in the pipeline, one Parquet file per
element after a reshuffle, so neither the driver nor the job graph ever holds
an earlier scan. Each final verdict by the scan's checkpoint is keyed twice:

- by content fingerprint (``sha256:HEX``), which recognises the same bytes
  under any name once they are hashed, and
- by source version (``source:URI|VERSION``), a pre-key from the file's
  metadata (GCS generation, S3 ETag, local size and mtime: ``media.source_version``),
  which recognises an unchanged file before a byte of it is read.

For each key the latest scan wins (scan folders sort by date and start time).

``SkipJudged`` joins the inputs to them with two ``CoGroupByKey``s, first by
source version (no byte read), then, for what is left, by content fingerprint
(each such input is read once to hash it, and once more when it is then
decoded). Joins, not a side input: a side input of 100,000 earlier verdicts
measured 123 MiB in every worker process, and archives hold millions.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Optional

import dataclasses

import apache_beam as beam
import fsspec
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from transforms import media
from transforms.elements import (
    METRICS_NAMESPACE,
    NO_FACE,
    OK,
    SKIPPED,
    UNREADABLE,
    UNSUPPORTED,
    ExtractedMedia,
    MediaInfo,
    MediaInput,
)
from transforms.tables import SUCCESS

logger = logging.getLogger(__name__)

# Verdicts that another run with the same checkpoint would repeat. Timeouts, limits
# and errors are worth another try (a later run may have more time or a fixed bug);
# so is small_face, which depends on faces.min_judge_size, a setting, not the checkpoint.
FINAL_STATUSES = (OK, NO_FACE, UNREADABLE, UNSUPPORTED)
COLUMNS = ["uri", "source_version", "file_size", "content_sha256", "checkpoint_sha256", "status", "score",
           "label", "scan_id", "previous_scan_id"]
SOURCE, CONTENT = "source:", "sha256:"  # the two kinds of key


def content_key(sha256: str) -> str:
    return f"{CONTENT}{sha256}"


def source_key(uri: str, version: str) -> str:
    return f"{SOURCE}{uri}|{version}"


def table_files(root: str) -> list[str]:
    """The Parquet files of every complete verdict table under ``root``, oldest scan first."""
    fs, base = fsspec.core.url_to_fs(root)
    files = []
    for marker in sorted(fs.glob(f"{base.rstrip('/')}/scan_date=*/scan_id=*/verdicts/{SUCCESS}")):
        folder = marker.rsplit("/", 1)[0]
        files.extend(sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".parquet")))
    logger.info("%d verdict file(s) of earlier scans under %s", len(files), root)
    return [fs.unstrip_protocol(p) for p in files]


def judged(path: str, checkpoint_sha256: str) -> Iterator[tuple[str, dict]]:
    """``(key, verdict)`` for each final verdict in one verdict file by this checkpoint."""
    try:
        with fsspec.open(path, "rb") as f:
            schema_names = set(pq.read_schema(f).names)
            f.seek(0)
            rows = pq.read_table(f, columns=[c for c in COLUMNS if c in schema_names]).to_pylist()
    except Exception as e:  # one unreadable old file must not stop today's scan
        logger.warning("ignoring earlier verdicts in %s: %s", path, e)
        return
    order = path  # scan_date=DAY/scan_id=START-...: later scans sort later
    for row in rows:
        if row.get("checkpoint_sha256") != checkpoint_sha256 or not row.get("content_sha256"):
            continue
        if row["status"] == SKIPPED and row.get("previous_scan_id"):
            judged_in = row["previous_scan_id"]  # carried forward: point at the scan that judged it
        elif row["status"] in FINAL_STATUSES:
            judged_in = row["scan_id"]
        else:
            continue
        verdict = {
            "scan_id": judged_in, "status": row["status"], "score": row["score"], "label": row["label"],
            "content_sha256": row["content_sha256"], "file_size": row["file_size"], "order": order,
        }
        yield content_key(row["content_sha256"]), verdict
        if row.get("source_version"):
            yield source_key(row["uri"], row["source_version"]), {**verdict, "source_version": row["source_version"]}


def latest(verdicts: Iterable[dict]) -> Optional[dict]:
    """The verdict of the latest scan among ``verdicts``."""
    return max(verdicts, key=lambda v: v["order"], default=None)


class EarlierVerdicts(beam.PTransform):
    """``PBegin`` -> ``PCollection[(key, verdict)]``: what earlier scans under ``root`` judged.

    Only verdicts by the checkpoint with ``checkpoint_sha256`` count; see the
    module docstring for the two kinds of key.
    """

    def __init__(self, root: str, checkpoint_sha256: str):
        super().__init__()
        self._root = root
        self._checkpoint = checkpoint_sha256

    def expand(self, pbegin):
        return (
            pbegin
            | "Root" >> beam.Create([self._root])
            | "ListVerdictFiles" >> beam.FlatMap(table_files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadVerdicts" >> beam.FlatMap(judged, self._checkpoint)
            | "LatestPerKey" >> beam.CombinePerKey(latest)
        )


# ---------------------------------------------------------------- the joins

_UNSEEN = "unseen"


def _by_source(item: MediaInput) -> tuple[str, MediaInput]:
    """``(source key, item with its version)``; a unique key when the version cannot be had."""
    try:
        version = item.source_version or media.source_version(item.uri)
    except Exception:  # missing, unreadable: extraction reports it in its own words
        version = None
    if version is None:
        return f"none:{item.uri}", item
    return source_key(item.uri, version), dataclasses.replace(item, source_version=version)


def _by_content(item: MediaInput, max_bytes: int) -> tuple[str, tuple[MediaInput, int, str]]:
    """``(content key, (item, size, sha256))``, reading the bytes once; a unique key when they cannot be read."""
    try:
        with media.staged(item.uri, max_bytes=max_bytes) as path:
            size, sha = media.fingerprint(path)
    except Exception:
        return f"none:{item.uri}", (item, 0, "")
    return content_key(sha), (item, size, sha)


class _Decide(beam.DoFn):
    """One joined key: its inputs are skipped with the latest earlier verdict, or go on to be judged."""

    def process(self, joined):
        _, groups = joined
        before = latest(groups["earlier"])
        for entry in groups["inputs"]:
            item, size, sha = entry if isinstance(entry, tuple) else (entry, None, None)
            if before is None:
                yield beam.pvalue.TaggedOutput(_UNSEEN, item)
                continue
            Metrics.counter(METRICS_NAMESPACE, "skipped_by_" + ("content" if sha else "source_version")).inc()
            info = MediaInfo(
                uri=item.uri, media_type=item.media_type, source_version=item.source_version,
                file_size=before.get("file_size") if size is None else size,
                content_sha256=before.get("content_sha256") if sha is None else sha,
                previous={k: v for k, v in before.items() if k != "order"},
            )
            yield ExtractedMedia(info, SKIPPED, f"already judged by this checkpoint in scan {before['scan_id']}")


class SkipJudged(beam.PTransform):
    """``PCollection[MediaInput]`` -> ``(skipped, unseen)``, given ``EarlierVerdicts``' output.

    ``skipped``: ``ExtractedMedia`` with status ``skipped`` and the earlier
    verdict, for inputs whose source version or content an earlier scan judged.
    ``unseen``: the other ``MediaInput``s, to be extracted and judged.
    """

    def __init__(self, earlier: beam.PCollection, max_file_mb: float):
        super().__init__()
        self._earlier = earlier
        self._max_bytes = int(max_file_mb * 2**20)

    def expand(self, inputs):
        earlier = self._earlier
        by_source = earlier | "SourceVerdicts" >> beam.Filter(lambda kv: kv[0].startswith(SOURCE))
        by_content = earlier | "ContentVerdicts" >> beam.Filter(lambda kv: kv[0].startswith(CONTENT))
        first = (
            {"inputs": inputs | "KeyBySource" >> beam.Map(_by_source), "earlier": by_source}
            | "JoinBySource" >> beam.CoGroupByKey()
            | "DecideBySource" >> beam.ParDo(_Decide()).with_outputs(_UNSEEN, main="skipped")
        )
        second = (
            {"inputs": first[_UNSEEN] | "KeyByContent" >> beam.Map(_by_content, self._max_bytes),
             "earlier": by_content}
            | "JoinByContent" >> beam.CoGroupByKey()
            | "DecideByContent" >> beam.ParDo(_Decide()).with_outputs(_UNSEEN, main="skipped")
        )
        skipped = (first.skipped, second.skipped) | "Skipped" >> beam.Flatten()
        return skipped, second[_UNSEEN]
