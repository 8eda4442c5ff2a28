"""Turning the user's INPUT arguments into the list of files to judge.

An input is a local path or fsspec URL to a file, a directory (every media file
under it, recursively), a glob, or a manifest (``.csv``, ``.jsonl``,
``.parquet``) with a ``uri`` column. Listing runs on the driver, so a pattern
that matches nothing fails in a second, before any worker starts.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Optional, Sequence

import fsspec

from pipeline.config import InputsConfig
from transforms.elements import MediaInput

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".parquet")
_GLOB_CHARS = ("*", "?", "[")


class InputError(ValueError):
    """The inputs named on the command line cannot be listed; one line says why."""


def media_type_of(uri: str, config: InputsConfig) -> Optional[str]:
    ext = os.path.splitext(uri.split("?")[0])[1].lower()
    if ext in config.video_extensions:
        return "video"
    if ext in config.image_extensions:
        return "image"
    return None


def list_inputs(specs: Sequence[str], config: InputsConfig) -> list[MediaInput]:
    """Every input named by ``specs``, de-duplicated, in a stable order."""
    if not specs:
        raise InputError("no input given")
    found: dict[str, MediaInput] = {}
    for spec in specs:
        items = list(_expand(spec, config))
        for item in items:
            if item.uri in found:
                logger.warning("input listed twice, judged once: %s", item.uri)
                continue
            found[item.uri] = item
    return list(found.values())


def _expand(spec: str, config: InputsConfig) -> Iterable[MediaInput]:
    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ValueError, ImportError) as e:
        raise InputError(f"cannot open '{spec}': {e}") from None
    if any(c in path for c in _GLOB_CHARS):
        matches = sorted(fs.glob(path))
        items = []
        for match in matches:
            if fs.isdir(match):
                items += _walk(fs, match, config)
            elif media_type_of(match, config):
                items.append(_item(fs, match, config))
        if not items:
            raise InputError(f"pattern matched no media files: {spec}")
        return items
    try:
        if fs.isdir(path):
            items = _walk(fs, path, config)
            if not items:
                raise InputError(
                    f"no media files under {spec} (looked for "
                    f"{', '.join(config.video_extensions + config.image_extensions)})"
                )
            return items
        if not fs.exists(path):
            raise InputError(f"no such file or directory: {spec}")
    except (PermissionError, OSError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot list '{spec}': {type(e).__name__}: {e}") from None
    if path.lower().endswith(MANIFEST_EXTENSIONS):
        return read_manifest(spec, config)
    # A file named explicitly is always judged, even with an unsupported type.
    return [_item(fs, path, config)]


def _walk(fs, root: str, config: InputsConfig) -> list[MediaInput]:
    entries = fs.find(root, withdirs=True, detail=True)
    paths = []
    for path, entry in sorted(entries.items()):
        if not media_type_of(path, config):
            continue
        if entry.get("type") == "directory":
            logger.warning("skipping %r: a directory, though named like a media file", path)
            continue
        paths.append(path)
    return [_item(fs, p, config) for p in paths]


def _item(fs, path: str, config: InputsConfig, label: Optional[str] = None) -> MediaInput:
    uri = fs.unstrip_protocol(path)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return MediaInput(uri=uri, media_type=media_type_of(uri, config), label=label)


def read_manifest(spec: str, config: InputsConfig) -> list[MediaInput]:
    """Rows of a manifest with a ``uri`` column (and optionally ``label``).

    Relative URIs are resolved against the manifest's folder.
    """
    rows = read_table_rows(spec)
    if rows and "uri" not in rows[0]:
        raise InputError(f"manifest {spec} has no 'uri' column (columns: {', '.join(rows[0])})")
    base = spec.rsplit("/", 1)[0] if "/" in spec else "."
    items = []
    for i, row in enumerate(rows):
        uri = str(row.get("uri") or "").strip()
        if not uri:
            raise InputError(f"manifest {spec}: row {i + 1} has an empty uri")
        if "://" not in uri and not os.path.isabs(uri):
            uri = f"{base}/{uri}" if "://" in base else os.path.abspath(os.path.join(base, uri))
        label = row.get("label") or None
        items.append(MediaInput(uri=uri, media_type=media_type_of(uri, config), label=label))
    if not items:
        raise InputError(f"manifest {spec} lists no inputs")
    return items


def read_table_rows(spec: str) -> list[dict]:
    """A manifest's rows as dicts; one reader for CSV, JSON lines and Parquet."""
    import csv
    import io
    import json

    lower = spec.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            with fsspec.open(spec, "rb") as f:
                return pq.read_table(f).to_pylist()
        with fsspec.open(spec, "r", encoding="utf-8") as f:
            text = f.read()
        if lower.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return list(csv.DictReader(io.StringIO(text)))
    except FileNotFoundError:
        raise InputError(f"manifest not found: {spec}") from None
    except (ValueError, OSError) as e:  # json, csv and pyarrow errors
        raise InputError(f"cannot read manifest {spec}: {str(e).splitlines()[0]}") from None
