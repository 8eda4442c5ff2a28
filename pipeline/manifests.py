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
    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ValueError, ImportError) as e:
        raise InputError(f"cannot open '{spec}': {e}") from None
    folder = posixpath.dirname(path.rstrip("/"))
    for number, raw in enumerate(read_rows(spec), 1):
        cells = {str(key): "" if value is None else str(value).strip()
                 for key, value in raw.items() if key is not None}
        if "uri" not in cells:
            raise InputError(f"manifest {spec} has no 'uri' column (row {number} has: "
                             f"{', '.join(sorted(cells)) or 'no columns'})")
        if not cells["uri"]:
            raise InputError(f"manifest {spec}: row {number} has an empty uri")
        yield ManifestRow(spec, number, resolve_uri(cells["uri"], fs, folder), cells)


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
