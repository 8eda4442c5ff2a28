"""Listing inputs on the workers: folders, globs, prefixes and manifests become ``MediaInput``s.

The driver only checks that each input spec can be used (``check_spec``: the path
or bucket exists, a pattern matches, a manifest is readable and has a ``uri``
column) and hands the specs to the job; the graph holds the specs, never the
archive. ``ListInputs`` expands them in the pipeline:

1. each spec becomes work units: a folder's top level is listed and each
   subfolder is a unit of its own; a manifest is cut into splits (a Parquet
   row group, or a byte range of a CSV or JSON-lines file);
2. the units are reshuffled over the workers and expanded to files;
3. the files are de-duplicated by URI (an input named twice is judged once)
   and reshuffled again, so the expensive stages spread evenly.

The rules are the ones a local listing always had: a folder or a pattern
yields the files whose extension is a media type (``InputsConfig``), a
directory named like a media file is skipped with a warning, a broken
symlink is listed (its row says ``unreadable``), a file named explicitly is
judged whatever its type, and a manifest's relative URIs are relative to its
folder (``transforms.manifests``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
import fsspec
from apache_beam.metrics import Metrics

from transforms.elements import METRICS_NAMESPACE, MediaInput
from transforms.manifests import InputError, is_manifest, manifest_header, manifest_splits, split_rows
from transforms.settings import InputsConfig

logger = logging.getLogger(__name__)

GLOB_CHARS = ("*", "?", "[")
FOLDER, PATTERN, MANIFEST, FILE = "folder", "pattern", "manifest", "file"


@dataclass(frozen=True)
class InputSpec:
    """One INPUT argument, checked on the driver: what it is, and the path to expand on a worker."""

    spec: str  # as the user wrote it, for messages
    kind: str  # FOLDER, PATTERN, MANIFEST or FILE
    path: str  # the file system's path (the protocol stripped)


def check_spec(spec: str) -> InputSpec:
    """Check, cheaply, that ``spec`` can be listed; an ``InputError`` in one line if not.

    A pattern is matched once to see it matches something; a folder or a
    manifest is only looked up (a manifest's header is read), never walked.
    """
    try:
        fs, path = fsspec.core.url_to_fs(spec)
    except (ValueError, ImportError) as e:
        raise InputError(f"cannot open '{spec}': {e}") from None
    try:
        if any(c in path for c in GLOB_CHARS):
            if not _has_match(fs, path):
                raise InputError(f"pattern matched nothing: {spec}")
            return InputSpec(spec, PATTERN, path)
        if fs.isdir(path):
            return InputSpec(spec, FOLDER, path)
        if not fs.exists(path):
            raise InputError(f"no such file or directory: {spec}")
    except InputError:
        raise
    except OSError as e:
        raise InputError(f"cannot list '{spec}': {type(e).__name__}: {e}") from None
    if is_manifest(path):
        manifest_header(spec)  # readable, with a uri column
        return InputSpec(spec, MANIFEST, path)
    return InputSpec(spec, FILE, path)


def _has_match(fs, pattern: str) -> bool:
    # The literal prefix before the first wildcard bounds what glob lists; glob itself
    # has no "first match" mode, so a pattern over a huge prefix is listed once here.
    return bool(fs.glob(pattern))


# ---------------------------------------------------------------- work units


@dataclass(frozen=True)
class _Unit:
    """A piece of listing one worker does: walk a folder, match a pattern, or read a manifest split."""

    spec: str
    kind: str
    path: str
    start: int = 0
    end: int = 0


def units(spec: InputSpec, config: InputsConfig) -> Iterator[object]:
    """A spec's work units, or the ``MediaInput``s it names directly (a file, a folder's top level)."""
    fs, _ = fsspec.core.url_to_fs(spec.spec)
    if spec.kind == FILE:
        yield _item(fs, spec.path, config)  # named explicitly: judged whatever its type
    elif spec.kind == MANIFEST:
        for start, end in manifest_splits(spec.spec):
            yield _Unit(spec.spec, MANIFEST, spec.path, start, end)
    elif spec.kind == PATTERN:
        yield _Unit(spec.spec, PATTERN, spec.path)
    else:
        for path, entry in _entries(fs, spec.path):
            yield from _listed(fs, path, entry, config)  # a file, or a warning for a folder named like one
            if entry.get("type") == "directory":
                yield _Unit(spec.spec, FOLDER, path)


def _entries(fs, folder: str) -> list[tuple[str, dict]]:
    """A folder's own entries (some stores list the folder itself too), by name."""
    entries = [(e["name"], e) for e in fs.ls(folder, detail=True) if e["name"].rstrip("/") != folder.rstrip("/")]
    return sorted(entries, key=lambda pair: pair[0])


def expand(unit: _Unit, config: InputsConfig) -> Iterator[MediaInput]:
    """The ``MediaInput``s one unit names."""
    fs, _ = fsspec.core.url_to_fs(unit.spec)
    if unit.kind == MANIFEST:
        for row in split_rows(unit.spec, unit.start, unit.end):
            yield MediaInput(uri=row.uri, media_type=config.media_type(row.uri))
    elif unit.kind == PATTERN:
        for match in sorted(fs.glob(unit.path)):
            if fs.isdir(match):
                yield from _walk(fs, match, config)
            elif config.media_type(match):
                yield _item(fs, match, config)
    else:
        yield from _walk(fs, unit.path, config)


def _walk(fs, root: str, config: InputsConfig) -> Iterator[MediaInput]:
    for path, entry in sorted(fs.find(root, withdirs=True, detail=True).items()):
        yield from _listed(fs, path, entry, config)


def _listed(fs, path: str, entry: dict, config: InputsConfig) -> Iterator[MediaInput]:
    if not config.media_type(path):
        return
    if entry.get("type") == "directory":
        logger.warning("skipping %r: a directory, though named like a media file", path)
        Metrics.counter(METRICS_NAMESPACE, "listed_directories_named_like_media").inc()
        return
    yield _item(fs, path, config)


def _item(fs, path: str, config: InputsConfig) -> MediaInput:
    uri = fs.unstrip_protocol(path)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return MediaInput(uri=uri, media_type=config.media_type(uri))


# ---------------------------------------------------------------- the transform


def _expand_spec(spec: InputSpec, config: InputsConfig) -> Iterator[object]:
    try:
        yield from units(spec, config)
    except (OSError, InputError) as e:  # e.g. the folder went away since the driver looked
        logger.error("cannot list %s: %s", spec.spec, e)
        Metrics.counter(METRICS_NAMESPACE, "listing_failures").inc()


def _expand_unit(unit: object, config: InputsConfig) -> Iterator[MediaInput]:
    if isinstance(unit, MediaInput):
        yield unit
        return
    try:
        yield from expand(unit, config)
    except (OSError, InputError) as e:
        logger.error("cannot list %s: %s", unit.path, e)
        Metrics.counter(METRICS_NAMESPACE, "listing_failures").inc()


def _once(keyed: tuple[str, Iterable[MediaInput]]) -> MediaInput:
    uri, items = keyed
    items = list(items)
    if len(items) > 1:
        logger.warning("input listed %d times, judged once: %s", len(items), uri)
    Metrics.counter(METRICS_NAMESPACE, "inputs_listed").inc()
    return items[0]


class ListInputs(beam.PTransform):
    """``PBegin`` -> ``PCollection[MediaInput]``: every file the checked ``specs`` name, once each."""

    def __init__(self, specs: Sequence[InputSpec], config: InputsConfig):
        super().__init__()
        self._specs = list(specs)
        self._config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "Specs" >> beam.Create(self._specs)
            | "SpecUnits" >> beam.FlatMap(_expand_spec, self._config)
            | "SpreadUnits" >> beam.Reshuffle()
            | "ExpandUnits" >> beam.FlatMap(_expand_unit, self._config)
            | "ByUri" >> beam.Map(lambda item: (item.uri, item))
            | "Dedupe" >> beam.GroupByKey()
            | "Once" >> beam.Map(_once)
            | "SpreadInputs" >> beam.Reshuffle()
        )

