"""Turning the user's INPUT arguments into the list of files to judge.

An input is a local path or fsspec URL to a file, a directory (every media file
under it, recursively), a glob, or a manifest (``.csv``, ``.jsonl``,
``.parquet`` with a ``uri`` column, read by :mod:`pipeline.manifests`). Listing
runs on the driver, so a pattern that matches nothing fails in a second, before
any worker starts.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Optional, Sequence

import fsspec

from pipeline.config import InputsConfig
from pipeline.manifests import InputError, canonical_uri, is_manifest, read_manifest
from transforms.elements import MediaInput

logger = logging.getLogger(__name__)

_GLOB_CHARS = ("*", "?", "[")


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
    if is_manifest(path):
        return _manifest_inputs(spec, config)
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


def _item(fs, path: str, config: InputsConfig) -> MediaInput:
    uri = canonical_uri(fs, path)
    return MediaInput(uri=uri, media_type=media_type_of(uri, config))


def _manifest_inputs(spec: str, config: InputsConfig) -> list[MediaInput]:
    """The media a manifest lists; its other columns, labels among them, are not the scan's business."""
    return [MediaInput(uri=row.uri, media_type=media_type_of(row.uri, config))
            for row in read_manifest(spec)]
