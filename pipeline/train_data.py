"""The face table as training reads it: how its crops were cut, an index of its tracks, row groups on demand.

``deepfake-scan extract`` writes the table (``FACES_DIR/faces``: Parquet row
groups of at most ``transforms.face_table.FACE_ROWS_PER_GROUP`` crops, PNG bytes
included) and ``FACES_DIR/crop.json``; this module is the only place training
reads them, and it never holds the table.

:func:`build_index` reads the table's small columns (no pixels) once, row group
by row group, into a :class:`FaceIndex`: per crop its row group, row and frame
(12 bytes, plus 4 for the by-row-group order), per track its video and length,
per video its split, label and manipulation. The stages choose crops on the
index (:func:`epoch_crops`, :func:`validation_crops`, :func:`track_crops`), and
the streams (``pipeline.train_stream``) read the chosen crops' bytes one row
group at a time (:meth:`FaceIndex.read`).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from models.crops import ALIGNED, CropSpec
from models.labels import class_index
from pipeline.crop_record import read_crop_spec
from pipeline.train_config import TrainConfig
from transforms.face_schema import FACE_ROWS_PER_GROUP
from transforms.settings import ConfigError
from transforms.tables import IncompleteTableError, is_complete

logger = logging.getLogger(__name__)

# What the index reads of every row (the table has more: uri, group, timestamp, box, crop_png, ...).
INDEX_COLUMNS = ["split", "video_id", "label", "manipulation", "track_id", "frame_index"]


def face_table_crop(config: TrainConfig) -> CropSpec:
    """How the face table's crops were cut; stops in one line when the training config disagrees.

    Raises:
        ConfigError: If ``model.input_size``/``crop_policy``/``crop_margin``/``box_margins``
            describe other crops than the face table holds, or self-blending or
            validation families (``data.val_families``) are asked of crops that are not aligned.
    """
    table = read_crop_spec(config.data.faces)
    wanted = config.model.crop
    if not same_crops(table, wanted):
        raise ConfigError(
            f"the face table {config.data.faces} holds {table.describe()} crops but the training config "
            f"asks for {wanted.describe()} (model.input_size, model.crop_policy, model.crop_margin, "
            "model.box_margins): extract again with this config, or make them agree"
        )
    if table.policy != ALIGNED and config.augment.sbi_p > 0:
        raise ConfigError(f"augment.sbi_p={config.augment.sbi_p:g} self-blends on the aligned face template, "
                          f"but the face table holds {table.describe()} crops: set augment.sbi_p=0")
    if table.policy != ALIGNED and config.data.val_families:
        raise ConfigError(f"data.val_families edits the face parts where the aligned face template puts them, "
                          f"but the face table holds {table.describe()} crops: set data.val_families=[]")
    return table


def same_crops(a: CropSpec, b: CropSpec) -> bool:
    """Whether two specs cut the same crops (margins compared only where the policy uses them)."""
    if (a.policy, a.size) != (b.policy, b.size):
        return False
    if a.policy == ALIGNED:
        return abs(a.margin - b.margin) <= 1e-9
    return all(abs(x - y) <= 1e-9 for x, y in zip(a.box_margins, b.box_margins))


@dataclass
class RowGroups:
    """A table's Parquet row groups ("units"), read one at a time; this process keeps its last file open."""

    table: str  # the table folder (any fsspec URL)
    files: list[str]  # its Parquet files, as paths of the table's filesystem
    unit_file: np.ndarray  # (U,) int32
    unit_group: np.ndarray  # (U,) int32: the row group within its file
    _open: dict = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        return {**vars(self), "_open": {}}

    def __len__(self) -> int:
        return len(self.unit_file)

    def read(self, unit: int, columns: list[str]) -> pa.Table:
        """One row group's ``columns``."""
        file = int(self.unit_file[unit])
        if file not in self._open:
            self._open.clear()
            fs, _ = fsspec.core.url_to_fs(self.table)
            self._open[file] = pq.ParquetFile(fs.open(self.files[file], "rb"))
        return self._open[file].read_row_group(int(self.unit_group[unit]), columns=columns)


def list_row_groups(table: str) -> RowGroups:
    """The row groups of a complete table folder, from the files' footers.

    Raises:
        IncompleteTableError: If the folder holds no complete table (``_SUCCESS``).
    """
    if not is_complete(table):
        raise IncompleteTableError(f"{table} holds no complete table (no _SUCCESS marker)")
    fs, root = fsspec.core.url_to_fs(table)
    files = sorted(fs.glob(f"{root.rstrip('/')}/*.parquet"))
    unit_file, unit_group = [], []
    for i, path in enumerate(files):
        with fs.open(path, "rb") as f:
            groups = pq.ParquetFile(f).metadata.num_row_groups
        unit_file += [i] * groups
        unit_group += list(range(groups))
    return RowGroups(table, files, np.array(unit_file, np.int32), np.array(unit_group, np.int32))


@dataclass
class FaceIndex:
    """Where every crop of a face table is, and which track and video it belongs to; no pixels.

    Tracks are ordered by ``(split, video_id, track_id)`` and a track's crops by
    frame, so a crop is a number, a track is a range of crops, and the tracks of a
    split (or a video) are a range of tracks. ``kept`` marks each video's longest
    ``data.max_tracks_per_video`` tracks: what the models learn from and the frame
    stage validates on; calibration takes every validation track.
    """

    groups: RowGroups
    videos: list[str]  # (V,) video ids, ordered by (split, video_id)
    video_split: list[str]
    video_label: list[str]
    video_manipulation: list[str]
    track_video: np.ndarray  # (T,) int32
    track_id: np.ndarray  # (T,) int32
    track_start: np.ndarray  # (T + 1,) int64: track t holds crops track_start[t]:track_start[t + 1]
    kept: np.ndarray  # (T,) bool
    crop_unit: np.ndarray  # (N,) int32
    crop_row: np.ndarray  # (N,) int32
    crop_frame: np.ndarray  # (N,) int32
    unit_start: np.ndarray  # (U + 1,) int64: unit u holds crops unit_crops[unit_start[u]:unit_start[u + 1]]
    unit_crops: np.ndarray  # (N,) int32, by row within each unit

    @property
    def num_units(self) -> int:
        return len(self.groups)

    @property
    def num_crops(self) -> int:
        return len(self.crop_row)

    @property
    def nbytes(self) -> int:
        """The index's arrays, in bytes (what training keeps of the table)."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))

    def tracks(self, split: str, kept_only: bool = False) -> np.ndarray:
        """The track numbers of ``split`` (only the kept ones with ``kept_only``), in order."""
        split_of = np.array([self.video_split[v] == split for v in range(len(self.videos))], bool)
        chosen = split_of[self.track_video] if len(self.track_video) else np.zeros(0, bool)
        if kept_only:
            chosen &= self.kept
        return np.flatnonzero(chosen)

    def track_of(self, crops: np.ndarray) -> np.ndarray:
        """The track number of each crop."""
        return np.searchsorted(self.track_start, crops, side="right") - 1

    def targets(self, tracks: np.ndarray) -> np.ndarray:
        """The class index of each track's video."""
        return np.array([class_index(self.video_label[v]) for v in self.track_video[tracks]], np.int64)

    def unit_rows(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        """``(crops, rows)`` of one unit, by row."""
        crops = self.unit_crops[self.unit_start[unit]:self.unit_start[unit + 1]]
        return crops, self.crop_row[crops]

    def read(self, unit: int, columns: list[str]) -> pa.Table:
        """One row group's ``columns``."""
        return self.groups.read(unit, columns)

    def summary(self) -> dict:
        """Per split: videos, kept tracks and their crops, and videos per label and per manipulation."""
        out: dict[str, dict] = {}
        lengths = np.diff(self.track_start)
        for split in sorted(set(self.video_split)):
            tracks = self.tracks(split, kept_only=True)
            videos = sorted(set(self.track_video[tracks].tolist()))
            counts: dict[str, int] = defaultdict(int)
            for v in videos:
                counts[self.video_label[v]] += 1
                if self.video_manipulation[v]:
                    counts[f"fake:{self.video_manipulation[v]}"] += 1
            out[split] = {"videos": len(videos), "tracks": len(tracks), "crops": int(lengths[tracks].sum()),
                          **counts}
        return out

    def manipulations(self, split: str) -> set[str]:
        """The manipulations of ``split``'s fake videos."""
        return {m for s, label, m in zip(self.video_split, self.video_label, self.video_manipulation)
                if s == split and label == "fake" and m}


def build_index(faces_dir: str, max_tracks_per_video: int) -> FaceIndex:
    """Index the face table under ``faces_dir`` (see :class:`FaceIndex`), reading no pixels.

    Raises:
        ValueError: If the table has no training or no validation crops.
    """
    groups = list_row_groups(faces_dir.rstrip("/") + "/faces")
    code: dict[str, int] = {}
    meta: list[tuple[str, str, str]] = []  # (split, label, manipulation) per video code
    parts = []
    for unit in tqdm(range(len(groups)), desc="indexing the face table", unit="row group", leave=False):
        rows = groups.read(unit, INDEX_COLUMNS)
        encoded = pc.dictionary_encode(rows.column("video_id").combine_chunks())
        names = encoded.dictionary.to_pylist()
        local = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        _, first = np.unique(local, return_index=True)
        firsts = rows.take(pa.array(first))
        for name, split, label, manipulation in zip(
                names, *(firsts.column(c).to_pylist() for c in ("split", "label", "manipulation"))):
            if name not in code:
                code[name] = len(code)
                meta.append((split, label, manipulation or ""))
        to_global = np.array([code[n] for n in names], np.int32)
        parts.append((to_global[local], _ints(rows, "track_id"), _ints(rows, "frame_index"),
                      np.full(rows.num_rows, unit, np.int32), np.arange(rows.num_rows, dtype=np.int32)))
    video, track, frame, unit_of, row = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int32)
                                         for i in range(5))
    names = list(code)
    order = sorted(range(len(names)), key=lambda c: (meta[c][0], names[c]))  # videos by (split, video_id)
    rank = np.empty(len(names), np.int32)
    rank[order] = np.arange(len(names), dtype=np.int32)
    video = rank[video] if len(video) else video
    perm = np.lexsort((frame, track, video))
    video, track, frame, unit_of, row = (a[perm] for a in (video, track, frame, unit_of, row))
    new_track = np.ones(len(video), bool)
    new_track[1:] = (video[1:] != video[:-1]) | (track[1:] != track[:-1])
    starts = np.flatnonzero(new_track)
    track_video = video[starts].astype(np.int32)
    track_start = np.append(starts, len(video)).astype(np.int64)
    by_unit = np.lexsort((row, unit_of))
    index = FaceIndex(
        groups=groups,
        videos=[names[c] for c in order],
        video_split=[meta[c][0] for c in order],
        video_label=[meta[c][1] for c in order],
        video_manipulation=[meta[c][2] for c in order],
        track_video=track_video,
        track_id=track[starts].astype(np.int32),
        track_start=track_start,
        kept=_longest_tracks(track_video, np.diff(track_start), max_tracks_per_video),
        crop_unit=unit_of.astype(np.int32),
        crop_row=row.astype(np.int32),
        crop_frame=frame.astype(np.int32),
        unit_start=np.searchsorted(unit_of[by_unit], np.arange(len(groups) + 1)).astype(np.int64),
        unit_crops=by_unit.astype(np.int32),
    )
    largest = int(np.bincount(unit_of, minlength=1).max()) if len(unit_of) else 0
    if largest > 4 * FACE_ROWS_PER_GROUP:
        logger.warning("the face table has row groups of up to %d crops, and training reads a row group whole "
                       "(a few times its size in memory, per loader worker): extract it again for row groups of "
                       "%d crops", largest, FACE_ROWS_PER_GROUP)
    summary = index.summary()
    logger.info("face table: %d crops in %d row groups; index %.1f MB; %s", index.num_crops, index.num_units,
                index.nbytes / 2**20, summary)
    for split in ("train", "val"):
        if not summary.get(split, {}).get("tracks"):
            raise ValueError(f"the face table has no '{split}' crops; extract a dataset with a {split} split")
    return index


def _ints(rows: pa.Table, column: str) -> np.ndarray:
    return rows.column(column).to_numpy().astype(np.int32)


def _longest_tracks(track_video: np.ndarray, lengths: np.ndarray, per_video: int) -> np.ndarray:
    """Each video's ``per_video`` longest tracks (the lower track id first among equals)."""
    kept = np.zeros(len(track_video), bool)
    bounds = np.flatnonzero(np.diff(track_video, prepend=-1, append=-1))
    for a, b in zip(bounds[:-1], bounds[1:]):
        kept[a + np.argsort(-lengths[a:b], kind="stable")[:per_video]] = True
    return kept


def epoch_crops(index: FaceIndex, count: int, seed: int, epoch: int) -> np.ndarray:
    """The training crops of one frame epoch: ``count`` drawn at random from each kept training track.

    The draw depends only on ``(seed, epoch)``, so a resumed run draws what an
    uninterrupted one would have. Returns sorted crop numbers.
    """
    rng = np.random.default_rng((seed, epoch))
    return _pick(index, index.tracks("train", kept_only=True), count, rng)


def validation_crops(index: FaceIndex, count: int) -> np.ndarray:
    """The frame stage's validation crops: ``count`` evenly spaced over each kept validation track."""
    return _pick(index, index.tracks("val", kept_only=True), count, None)


def track_crops(index: FaceIndex, tracks: np.ndarray) -> np.ndarray:
    """Every crop of ``tracks``, in track and frame order."""
    if not len(tracks):
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(index.track_start[t], index.track_start[t + 1]) for t in tracks])


def _pick(index: FaceIndex, tracks: np.ndarray, count: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    """``count`` crops of every track: random without replacement, or evenly spaced when ``rng`` is None."""
    chosen = []
    for t in tracks:
        start, n = index.track_start[t], index.track_start[t + 1] - index.track_start[t]
        if n <= count:
            idx = np.arange(n)
        elif rng is None:
            idx = np.linspace(0, n - 1, count).round().astype(int)
        else:
            idx = np.sort(rng.choice(n, count, replace=False))
        chosen.append(start + idx)
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)
