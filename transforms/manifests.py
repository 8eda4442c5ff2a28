"""Manifests: the one reader of ``.csv``, ``.jsonl`` and ``.parquet`` lists of media.

The scan (which files to judge), the data sets of ``extract``, ``train`` and
``evaluate`` (labels, groups, splits) and ``report`` (ground truth) all read a
manifest here, so a row means the same to every command:

- ``uri`` is required. A relative one is relative to the manifest's folder
  (normalised, in fsspec's canonical form for the manifest's file system, as
  a listed folder's files are); an absolute path or a URL is kept as written.
- ``label`` is ``real`` or ``fake`` in any case; an empty cell is no label.
  Anything else is an error naming the row, raised only when a reader asks for
  the label: the scan never does.
- ``split``, ``group`` and ``manipulation`` are cells as written (stripped).

Rows are streamed, a CSV or JSON-lines file line by line and a Parquet file one
row group at a time, so a manifest need not fit in memory and a file can later
be read in splits. The synthetic sets write their manifests with
:func:`write_manifest`, so what is written is what is read. ``InputError``
lives here, the lowest module that reads what a user names, so every reader
raises the same error.
"""
from __future__ import annotations

import csv
import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import fsspec

from models.labels import CLASSES

MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".parquet")
MANIFEST_NAME = "manifest.csv"  # what the synthetic sets write next to their files
MANIFEST_COLUMNS = ("uri", "label", "manipulation", "group", "split")  # every column read here


class InputError(ValueError):
    """The inputs or data named cannot be listed or read; one line says why."""


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest.

    Attributes:
        manifest: The manifest's spec, for messages.
        number: Row number, 1 for the first row under the header.
        uri: The row's media, resolved against the manifest's folder when relative.
        cells: Every cell as a stripped string (``""`` for an empty one), by column.
    """

    manifest: str
    number: int
    uri: str
    cells: Mapping[str, str] = field(repr=False)

    @property
    def written_uri(self) -> str:
        """The uri as the manifest writes it."""
        return self.cells["uri"]

    @property
    def label(self) -> Optional[str]:
        """``real`` or ``fake``; None where the cell is empty or there is no label column.

        Raises:
            InputError: The cell holds anything else.
        """
        label = self.cells.get("label", "").lower()
        if label and label not in CLASSES:
            raise InputError(f"manifest {self.manifest}: row {self.number} ({self.written_uri}) has label "
                             f"{self.cells['label']!r}, expected 'real' or 'fake'")
        return label or None

    def cell(self, column: str) -> str:
        """The cell of ``column``, ``""`` where the row has none."""
        return self.cells.get(column, "")


def is_manifest(path: str) -> bool:
    """Whether ``path`` is named like a manifest."""
    return path.lower().endswith(MANIFEST_EXTENSIONS)


def read_manifest(spec: str) -> list[ManifestRow]:
    """Every row of the manifest ``spec``; an error if it has none."""
    rows = list(manifest_rows(spec))
    if not rows:
        raise InputError(f"manifest {spec} lists no media")
    return rows


def manifest_rows(spec: str) -> Iterator[ManifestRow]:
    """The rows of the manifest ``spec``, one at a time, each with its uri resolved.

    Raises:
        InputError: The manifest cannot be read, has no ``uri`` column, or a row has an empty uri.
    """
    yield from _manifest_rows(spec, enumerate(read_rows(spec), 1))


def _manifest_rows(spec: str, numbered: Iterable[tuple[Optional[int], dict]]) -> Iterator[ManifestRow]:
    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ValueError, ImportError) as e:
        raise InputError(f"cannot open '{spec}': {e}") from None
    folder = posixpath.dirname(path.rstrip("/"))
    for number, raw in numbered:
        where = f"row {number}" if number else "a row"
        cells = {str(key): "" if value is None else str(value).strip()
                 for key, value in raw.items() if key is not None}
        if "uri" not in cells:
            raise InputError(f"manifest {spec} has no 'uri' column ({where} has: "
                             f"{', '.join(sorted(cells)) or 'no columns'})")
        if not cells["uri"]:
            raise InputError(f"manifest {spec}: {where} has an empty uri")
        yield ManifestRow(spec, number or 0, resolve_uri(cells["uri"], fs, folder), cells)


def resolve_uri(written: str, fs, folder: str) -> str:
    """A manifest's uri as a path or URL to open: relative ones are relative to ``folder``."""
    if "://" in written or os.path.isabs(written):
        return written
    return canonical_uri(fs, posixpath.normpath(posixpath.join(folder, written)))


def canonical_uri(fs, path: str) -> str:
    """How every listing names a file of ``fs``: a URL with its protocol, a plain local path."""
    uri = fs.unstrip_protocol(path)
    return uri[len("file://"):] if uri.startswith("file://") else uri


def read_rows(spec: str) -> Iterator[dict]:
    """A manifest's raw rows as dicts, streamed; the only code that opens a manifest file."""
    lower = spec.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            with fsspec.open(spec, "rb") as f:
                table = pq.ParquetFile(f)
                for group in range(table.num_row_groups):
                    yield from table.read_row_group(group).to_pylist()
            return
        with fsspec.open(spec, "r", encoding="utf-8", newline="") as f:
            if lower.endswith(".jsonl"):
                for number, line in enumerate((line for line in f if line.strip()), 1):
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise InputError(f"manifest {spec}: row {number} is a JSON "
                                         f"{type(row).__name__}, not an object")
                    yield row
            else:
                yield from csv.DictReader(f)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"manifest not found: {spec}") from None
    except (ValueError, OSError, csv.Error) as e:  # json, csv, decoding and pyarrow errors
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"cannot read manifest {spec}: {first_line}") from None


@dataclass(frozen=True)
class ManifestItem:
    """One labelled file as a written manifest lists it (``group`` and ``split`` may be empty)."""

    uri: str
    label: str
    manipulation: str
    group: str = ""
    split: str = ""


def write_manifest(path: str, items: Iterable, columns: Sequence[str] = MANIFEST_COLUMNS) -> None:
    """Write a local CSV manifest: a header of ``columns``, then each item's attributes of those names."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([getattr(item, column) for column in columns] for item in items)


# ---------------------------------------------------------------- splits, for reading on workers

# A CSV or JSON-lines manifest larger than this is read in byte ranges of this size,
# each on its own worker. Rows are found by line: a CSV whose quoted cells hold line
# breaks must stay under this size (it is then read whole, by the csv module).
SPLIT_BYTES = 32 << 20


def manifest_header(spec: str) -> list[str]:
    """A manifest's column names, read from its first row or schema; it must have ``uri``.

    What the driver checks before a scan starts: the file opens, parses, and names a uri column.
    """
    lower = spec.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            with fsspec.open(spec, "rb") as f:
                columns = list(pq.read_schema(f).names)
        else:
            first = next(iter(read_rows(spec)), None)
            if first is None:
                raise InputError(f"manifest {spec} lists no media")
            columns = [str(k) for k in first if k is not None]
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"manifest not found: {spec}") from None
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read manifest {spec}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if "uri" not in columns:
        raise InputError(f"manifest {spec} has no 'uri' column (it has: {', '.join(columns) or 'no columns'})")
    return columns


def manifest_splits(spec: str, split_bytes: Optional[int] = None) -> list[tuple[int, int]]:
    """``(start, end)`` pieces of a manifest that workers read independently (``split_rows``).

    A Parquet file splits by row group (``start`` is the group's index), a text
    manifest by byte range (a row belongs to the range its first byte is in).
    """
    fs, path = fsspec.core.url_to_fs(spec)
    if spec.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            return [(g, g + 1) for g in range(pq.ParquetFile(f).num_row_groups)]
    split_bytes = split_bytes or SPLIT_BYTES
    size = fs.size(path)
    if size <= split_bytes:
        return [(0, size)]
    return [(start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]


def split_rows(spec: str, start: int, end: int) -> Iterator[ManifestRow]:
    """The rows of one piece of a manifest (see ``manifest_splits``), uris resolved."""
    lower = spec.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fsspec.open(spec, "rb") as f:
            rows = pq.ParquetFile(f).read_row_group(start).to_pylist()
        yield from _manifest_rows(spec, ((None, row) for row in rows))
        return
    fs, path = fsspec.core.url_to_fs(spec)
    if start == 0 and end >= fs.size(path):  # the whole file: the csv module handles every quoting
        yield from manifest_rows(spec)
        return
    yield from _manifest_rows(spec, ((None, row) for row in _text_range(spec, start, end)))


def _text_range(spec: str, start: int, end: int) -> Iterator[dict]:
    """The rows of a CSV or JSON-lines manifest whose lines start in ``[start, end)``."""
    jsonl = spec.lower().endswith(".jsonl")
    with fsspec.open(spec, "rb") as f:
        header = None if jsonl else next(csv.reader([f.readline().decode("utf-8")]))
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the rest of the line that started in the previous range
        while f.tell() < end:
            line = f.readline()
            if not line:
                break
            text = line.decode("utf-8")
            if not text.strip():
                continue
            if jsonl:
                row = json.loads(text)
                if not isinstance(row, dict):
                    raise InputError(f"manifest {spec}: a row is a JSON {type(row).__name__}, not an object")
                yield row
            else:
                yield dict(zip(header, next(csv.reader([text]))))
