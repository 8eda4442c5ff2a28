"""Dataset adapters: labelled, grouped, split videos from what is on disk.

``load_dataset`` reads a manifest (``.csv``, ``.jsonl``, ``.parquet`` with
``uri,label[,manipulation][,group][,split]``) or a dataset folder laid out as
FaceForensics++, Celeb-DF v2 or DFDC, and returns one ``LabelledVideo`` per
video. A fake shares its ``group`` with the real video (or identity) it was
made from, so splitting by group keeps a video's twins out of the other splits.
Official splits are used when the folder has them; otherwise a group's split
comes from :func:`pipeline.splits.assign_splits` (a hash of the group and the
seed). ``extract`` and ``evaluate`` both default to ``DEFAULT_SPLIT_SEED`` and
the default fractions, so a video hashed into ``test`` by one is in ``test``
for the other. Manifests are read by :mod:`transforms.manifests`, the scan's
reader too. Folders are listed once per pattern and no video is opened, so
100k-file datasets on a bucket list fast.
"""
from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

import fsspec

from models.labels import FAKE, REAL
from pipeline.config import InputsConfig
from transforms.manifests import InputError, canonical_uri, is_manifest, read_manifest
from pipeline.splits import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    SPLITS,
    TEST,
    TRAIN,
    VAL,
    assign_splits,
    check_fractions,
    split_name,
)

logger = logging.getLogger(__name__)

LAYOUTS = ("a manifest .csv/.jsonl/.parquet with uri,label columns",
           "FaceForensics++ (original_sequences/, manipulated_sequences/)",
           "Celeb-DF v2 (Celeb-real/, YouTube-real/, Celeb-synthesis/)",
           "DFDC (metadata.json, or dfdc_train_part_*/metadata.json)")
_MEDIA = InputsConfig()
_FF_REAL = re.compile(r"original_sequences/youtube/(raw|c\d+)/videos/(\d+)\.\w+")
_FF_FAKE = re.compile(r"manipulated_sequences/([^/]+)/(raw|c\d+)/videos/(\d+)_(\d+)\.\w+")
_CELEB_REAL = re.compile(r"(id\d+)_\d+")
_CELEB_FAKE = re.compile(r"(id\d+)_(id\d+)_\d+")
_CELEB_FOLDERS = ("Celeb-real", "YouTube-real", "Celeb-synthesis")
_CELEB_TEST_LIST = "List_of_testing_videos.txt"
_MAX_LINKED_SHARE = 0.25  # a source-face link may grow a component to this share of the smallest split


@dataclass(frozen=True)
class LabelledVideo:
    """One video of a training data set.

    Attributes:
        uri: Local path or fsspec URL of the video.
        label: ``"real"`` or ``"fake"``.
        manipulation: Method that made a fake (e.g. ``"Deepfakes"``); ``""`` for reals.
        group: Identity or source video; a fake shares it with the real it was made from.
        split: ``"train"``, ``"val"`` or ``"test"``.
        video_id: Stable unique id, the path relative to the dataset without extension.
        split_given: True when the data named the split (a manifest's ``split``
            column, a dataset's official lists); False when it was hashed from the seed.
    """

    uri: str
    label: str
    manipulation: str
    group: str
    split: str
    video_id: str
    split_given: bool = True


@dataclass
class _Draft:
    """A video before its split is settled; ``source`` is a fake's source-face group."""

    uri: str
    label: str
    manipulation: str
    group: str
    video_id: str
    split: Optional[str] = None
    source: str = ""


def load_dataset(data: str, *, val_fraction: float = DEFAULT_VAL_FRACTION,
                 test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SPLIT_SEED,
                 compression: Optional[str] = None) -> list[LabelledVideo]:
    """Every labelled video of a manifest or dataset folder, with its group and split.

    Args:
        data: Local path or fsspec URL of a manifest or a dataset folder.
        val_fraction: Share of groups hashed into ``val`` where no split is given.
        test_fraction: Share of groups hashed into ``test`` where no split is given.
        seed: Seed of the split hash; the same seed gives the same splits.
        compression: FaceForensics++ only: keep this level (``"c23"``); None keeps all.

    Returns:
        The videos, sorted by ``video_id``.

    Raises:
        InputError: ``data`` cannot be read, has a bad row, or is no known layout.
    """
    try:
        check_fractions(val_fraction, test_fraction)
    except ValueError as e:
        raise InputError(str(e)) from None
    try:
        fs, path = fsspec.core.url_to_fs(data)
    except (ValueError, ImportError) as e:
        raise InputError(f"cannot open '{data}': {e}") from None
    path = path.rstrip("/") or "/"
    try:
        if is_manifest(path) and not fs.isdir(path):
            layout, drafts, official_test = "manifest", _read_manifest(data), False
        elif fs.isdir(path):
            layout, drafts, official_test = _read_folder(fs, path, data, compression)
        else:
            raise InputError(f"{data} is not a manifest or a dataset folder" if fs.exists(path)
                             else f"no such file or directory: {data}")
    except OSError as e:
        raise InputError(f"cannot list '{data}': {type(e).__name__}: {e}") from None
    if compression and layout != "FaceForensics++":
        logger.warning("compression=%r applies to FaceForensics++ only; ignored for %s", compression, layout)
    if not drafts:
        raise InputError(f"no labelled videos found in {data} ({layout})")
    videos = _settle_splits(drafts, val_fraction=val_fraction, test_fraction=test_fraction,
                            seed=seed, official_test=official_test)
    counts = Counter(v.split for v in videos)
    logger.info("%s: %d videos from %s (train %d, val %d, test %d)", layout, len(videos), data,
                counts[TRAIN], counts[VAL], counts[TEST])
    return videos


def split_summary(videos: list[LabelledVideo]) -> dict:
    """JSON-ready counts per split (videos, real, fake, groups, manipulations) for logs and model cards."""
    splits = {s: {"videos": 0, REAL: 0, FAKE: 0, "groups": 0, "manipulations": Counter()} for s in SPLITS}
    groups: dict[str, set[str]] = defaultdict(set)
    for video in videos:
        entry = splits[video.split]
        entry["videos"], entry[video.label] = entry["videos"] + 1, entry[video.label] + 1
        if video.label == FAKE:
            entry["manipulations"][video.manipulation] += 1
        groups[video.group].add(video.split)
    for split, entry in splits.items():
        entry["groups"] = sum(1 for found in groups.values() if split in found)
        entry["manipulations"] = dict(sorted(entry["manipulations"].items()))
    return {"videos": len(videos), "splits": splits,
            "groups_in_several_splits": sum(1 for found in groups.values() if len(found) > 1)}


def _read_folder(fs, root: str, data: str, compression: Optional[str]) -> tuple[str, list[_Draft], bool]:
    names = {posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)}
    if names & {"original_sequences", "manipulated_sequences"}:
        return "FaceForensics++", _read_ffpp(fs, root, names, compression), False
    if names & set(_CELEB_FOLDERS):
        return ("Celeb-DF", *_read_celeb_df(fs, root, names))
    metadata = [f"{root}/metadata.json"] if "metadata.json" in names else []
    metadata = metadata or sorted(fs.glob(f"{root}/*/metadata.json"))
    if metadata:
        return "DFDC", _read_dfdc(fs, root, metadata), False
    raise InputError(f"{data} is not a known dataset layout (looked for {'; '.join(LAYOUTS)}); "
                     "a folder of plain videos has no labels: write a manifest for it")


def _read_ffpp(fs, root: str, names: set[str], compression: Optional[str]) -> list[_Draft]:
    official = _ffpp_official_splits(fs, root, names)
    drafts, skipped, levels = [], 0, set()
    patterns = {"original_sequences": "youtube/*/videos/*", "manipulated_sequences": "*/*/videos/*"}
    for top, pattern in patterns.items():  # a glob, not a find: extracted frames may sit beside videos/
        for path in sorted(fs.glob(f"{root}/{top}/{pattern}")) if top in names else ():
            if not _is_video(path):
                continue
            rel = path[len(root):].lstrip("/")
            real, fake = _FF_REAL.fullmatch(rel), _FF_FAKE.fullmatch(rel)
            if not (real or fake):
                skipped += 1
                continue
            level = real[1] if real else fake[2]
            levels.add(level)
            if compression and level != compression:
                continue
            uri = canonical_uri(fs, path)
            if real:
                drafts.append(_Draft(uri, REAL, "", real[2], _stem(rel), official.get(real[2])))
            else:
                method, target, source = fake[1], fake[3], fake[4]
                split = official.get(target) or official.get(source)
                drafts.append(_Draft(uri, FAKE, method, target, _stem(rel), split, source))
    if skipped:
        logger.warning("FaceForensics++: skipped %d videos not named like original_sequences/youtube/"
                       "<c>/videos/NNN or manipulated_sequences/<method>/<c>/videos/NNN_NNN", skipped)
    if compression and not drafts:
        raise InputError(f"no FaceForensics++ videos at compression '{compression}' "
                         f"(found: {', '.join(sorted(levels)) or 'none'})")
    return drafts


def _ffpp_official_splits(fs, root: str, names: set[str]) -> dict[str, str]:
    """Video id -> split from ``splits/{train,val,test}.json`` (or the same files at the root)."""
    folder = f"{root}/splits" if "splits" in names else root
    found = names if folder == root else {posixpath.basename(p) for p in fs.ls(folder, detail=False)}
    result: dict[str, str] = {}
    for split in (s for s in SPLITS if f"{s}.json" in found):
        pairs = _read_json(fs, f"{folder}/{split}.json", list)
        for video_id in (str(i) for pair in pairs for i in (pair if isinstance(pair, list) else [pair])):
            if result.setdefault(video_id, split) != split:
                raise InputError(f"FaceForensics++ splits put {video_id} in {result[video_id]} and {split}")
    if result:
        logger.info("FaceForensics++: official splits from %s (%d ids)", folder, len(result))
    return result


def _read_celeb_df(fs, root: str, names: set[str]) -> tuple[list[_Draft], bool]:
    drafts: dict[str, _Draft] = {}
    skipped = 0
    for folder in (f for f in _CELEB_FOLDERS if f in names):
        for path in fs.glob(f"{root}/{folder}/*"):
            if not _is_video(path):
                continue
            rel = path[len(root):].lstrip("/")
            name, uri = _stem(posixpath.basename(rel)), canonical_uri(fs, path)
            real, fake = _CELEB_REAL.fullmatch(name), _CELEB_FAKE.fullmatch(name)
            if folder == "YouTube-real":
                drafts[rel] = _Draft(uri, REAL, "", f"yt_{name}", _stem(rel))
            elif folder == "Celeb-real" and real:
                drafts[rel] = _Draft(uri, REAL, "", real[1], _stem(rel))
            elif folder == "Celeb-synthesis" and fake:
                drafts[rel] = _Draft(uri, FAKE, "celeb_df_synthesis", fake[1], _stem(rel), source=fake[2])
            else:
                skipped += 1
    if skipped:
        logger.warning("Celeb-DF: skipped %d videos not named idN_NNNN or idN_idM_NNNN", skipped)
    spec, listed, missing, mislabelled = f"{root}/{_CELEB_TEST_LIST}", 0, 0, 0
    lines = fs.cat_file(spec).decode("utf-8").splitlines() if _CELEB_TEST_LIST in names else []
    for number, line in enumerate(lines, 1):  # "1 YouTube-real/00170.mp4": 1 real, 0 fake
        parts = line.split()
        if parts and (len(parts) != 2 or parts[0] not in ("0", "1")):
            raise InputError(f"{spec}: line {number} is not '<1 real|0 fake> <path>': {line.strip()!r}")
        draft = drafts.get(parts[1].removeprefix("./")) if parts else None
        missing += bool(parts) and draft is None
        if draft:
            mislabelled += (parts[0] == "1") != (draft.label == REAL)
            draft.split, listed = TEST, listed + 1
    if missing or mislabelled:
        logger.warning("Celeb-DF: %s lists %d videos not found and %d whose label disagrees with "
                       "their folder (the folder wins)", spec, missing, mislabelled)
    if listed:
        logger.info("Celeb-DF: %d test videos from %s; the rest is split train/val", listed, spec)
    return list(drafts.values()), listed > 0


def _read_dfdc(fs, root: str, metadata_files: list[str]) -> list[_Draft]:
    drafts, given, missing, unlisted = [], [], 0, 0
    for meta in metadata_files:
        folder = posixpath.dirname(meta)
        entries = _read_json(fs, meta, dict)
        present = {posixpath.basename(p): p for p in fs.ls(folder, detail=False) if _is_video(p)}
        unlisted += len(present.keys() - entries.keys())
        for name, entry in sorted(entries.items()):
            if name not in present:
                missing += 1
                continue
            label = str(entry.get("label", "") if isinstance(entry, dict) else "").lower()
            if label not in (REAL, FAKE):
                raise InputError(f"DFDC metadata {meta}: {name} has no label REAL or FAKE: {entry!r}")
            original = entry.get("original") if label == FAKE else None
            path = present[name]
            drafts.append(_Draft(canonical_uri(fs, path), label, "dfdc" if label == FAKE else "",
                                 _stem(str(original or name)), _stem(path[len(root):].lstrip("/"))))
            given.append(str(entry.get("split") or "").lower())
    if missing or unlisted:
        logger.warning("DFDC: skipped %d entries with no file, %d files with no entry", missing, unlisted)
    if len(set(given)) > 1:  # the training parts say "train" for all: then split by original instead
        for draft, split in zip(drafts, given):
            draft.split = split_name(split)
    logger.info("DFDC: split %s", "as the metadata says" if len(set(given)) > 1 else "by original video")
    return drafts


def _read_manifest(spec: str) -> list[_Draft]:
    """A draft per manifest row: every row needs a label; group and split are optional."""
    drafts, seen = [], {}
    for row in read_manifest(spec):
        written, split = row.written_uri, row.cell("split")
        if row.number == 1 and "label" not in row.cells:
            raise InputError(f"manifest {spec} has no 'label' column (has {', '.join(sorted(row.cells))})")
        label = row.label
        if label is None:
            raise InputError(f"manifest {spec}: row {row.number} ({written}) has label '', "
                             "expected 'real' or 'fake'")
        if split and split_name(split) is None:
            raise InputError(f"manifest {spec}: row {row.number} ({written}) has split {split.lower()!r}, "
                             "expected train, val or test")
        if seen.setdefault(row.uri, row.number) != row.number:
            raise InputError(f"manifest {spec}: row {row.number} repeats {written} (row {seen[row.uri]})")
        video_id = written if "://" in written or posixpath.isabs(written) else posixpath.normpath(written)
        manipulation = (row.cell("manipulation") or "unknown") if label == FAKE else ""
        drafts.append(_Draft(row.uri, label, manipulation, row.cell("group"), video_id, split_name(split)))
    stems = Counter(_stem(d.video_id) for d in drafts)
    for draft in drafts:  # the extension stays only where it tells two videos apart (a.mp4, a.mov)
        if stems[_stem(draft.video_id)] == 1:
            draft.video_id = _stem(draft.video_id)
        draft.group = draft.group or draft.video_id
    return drafts


def _settle_splits(drafts: list[_Draft], *, val_fraction: float, test_fraction: float, seed: int,
                   official_test: bool) -> list[LabelledVideo]:
    """Settle every draft's split: given, else its linked component's, else dealt by
    :func:`pipeline.splits.assign_splits` to the component.

    A fake's source group is linked to its own group (union-find), so both land in
    one split; a link is refused where it would make a component larger than
    ``_MAX_LINKED_SHARE`` of the smallest split (Celeb-DF's swaps link every identity).
    With ``official_test``, the test split is exactly the drafts marked test and
    the rest is hashed into train/val in the ratio ``1 - val - test : val``.
    """
    if official_test:  # only train and val are dealt, in the ratio of their shares
        val_fraction, test_fraction = val_fraction / (1 - test_fraction), 0.0
    shares = (test_fraction, val_fraction, 1 - test_fraction - val_fraction)
    size = Counter(d.group for d in drafts if d.split is None)
    positive = [s for s in shares if s > 0]
    cap = max(1.0, min(positive) * _MAX_LINKED_SHARE * sum(size.values())) if len(positive) > 1 else math.inf
    parent: dict[str, str] = {}

    def find(group: str) -> str:
        while parent.get(group, group) != group:
            parent[group] = group = parent.get(parent[group], parent[group])
        return group

    refused = 0
    links = Counter(tuple(sorted((d.group, d.source))) for d in drafts if d.source)
    for (a, b), _ in sorted(links.items(), key=lambda item: (-item[1], item[0])):  # most fakes first
        ra, rb = sorted((find(a), find(b)))
        merge = ra != rb and size[ra] + size[rb] <= cap
        refused += ra != rb and not merge
        if merge:  # the root stays the smallest member
            parent[rb], size[ra] = ra, size[ra] + size[rb]
    fixed: dict[str, set[str]] = defaultdict(set)
    for draft in (d for d in drafts if d.split):
        fixed[find(draft.group)].add(draft.split)
    dealt = assign_splits(sorted({find(d.group) for d in drafts if d.split is None}), seed=seed,
                          val_fraction=val_fraction, test_fraction=test_fraction)
    videos = []
    for d in drafts:
        split, root = d.split, find(d.group)
        if split is None:
            known = fixed.get(root, ())
            split = next(iter(known)) if len(known) == 1 and not official_test else dealt[root]
        videos.append(LabelledVideo(d.uri, d.label, d.manipulation, d.group, split, d.video_id,
                                    split_given=d.split is not None))
    if refused:
        logger.warning("refused %d source-face links that would make a group of over %d videos", refused, cap)
    splits_of: dict[str, set[str]] = defaultdict(set)
    for video in videos:
        splits_of[video.group].add(video.split)
    crossing = sorted(g for g, found in splits_of.items() if len(found) > 1)
    if crossing:
        logger.warning("%d groups span several splits, as given (e.g. %s)", len(crossing), crossing[:5])
    leaks = sum(1 for v, d in zip(videos, drafts)
                if d.source in splits_of and v.split not in splits_of[d.source])
    if leaks:
        logger.warning("%d fakes are in another split than their source face's videos", leaks)
    return sorted(videos, key=lambda v: v.video_id)


def _read_json(fs, spec: str, kind: type):
    try:
        value = json.loads(fs.cat_file(spec))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {spec}: {e}") from None
    if not isinstance(value, kind):
        raise InputError(f"{spec} holds a JSON {type(value).__name__}, expected a {kind.__name__}")
    return value


def _is_video(path: str) -> bool:
    return _MEDIA.media_type(path) == "video"


def _stem(path: str) -> str:
    return posixpath.splitext(path)[0]
