"""Face-table crops as streams of batches, and per-crop outputs too many to hold.

:class:`FaceCrops` is the :class:`~models.streaming.StreamSource` the training
stages read: the crops they chose on the index (``pipeline.train_data``), read
one row group at a time, decoded (and augmented, or self-blended) in the
DataLoader's workers. :func:`stream_loader` runs a stream with workers and
pinned memory. :class:`EmbeddingStore` keeps frame embeddings (5 KB a crop for
an EfficientNet) on local disk, and :class:`TrackEmbeddings` reads them back a
track at a time for the sequence model and calibration.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from models.augment import self_blend_track
from models.labels import FAKE_INDEX, REAL, class_index
from models.preprocess import decode_crop
from models.streaming import ShuffledStream
from models.training import CropBatch, augmented_crop
from models.validation_families import apply_validation_family
from pipeline.train_data import FaceIndex


class FaceCrops:
    """The chosen ``crops`` of a face table as a stream source (``models.streaming.StreamSource``).

    Args:
        index: The face table's index.
        crops: Crop numbers to read (each once).
        augment: ``TrainAugment`` for training crops; its generator is seeded by
            ``(seed, epoch, crop)``, so a crop is augmented alike whatever the worker.
        manipulation_classes: The manipulation head's classes (others: -1).
        boxes: Also read each crop's detector box (calibration aggregates with it).
        blend: ``(TrainAugment, seed)``: follow each crop of a real video by a
            self-blended copy, one blend per track (``models.augment.self_blend_track``).
        families: ``(names, seed, landmarks)``: follow each crop of a real video by
            one fake copy per validation family (``models.validation_families``), the
            ``k``-th (1-based) made with a generator seeded by ``family_seed(seed, crop, k)``
            and marked ``variant == k`` in the batch; ``landmarks`` are the crops' five
            points (the aligned face template).
    """

    def __init__(self, index: FaceIndex, crops: np.ndarray, *, augment: Optional[Callable] = None, seed: int = 0,
                 epoch: int = 0, manipulation_classes: Sequence[str] = (), boxes: bool = False,
                 blend: Optional[tuple] = None, families: Optional[tuple] = None):
        self.index = index
        self.mask = np.zeros(index.num_crops, bool)
        self.mask[crops] = True
        self.counts = np.bincount(index.crop_unit[crops], minlength=index.num_units)
        self.augment, self.seed, self.epoch = augment, seed, epoch
        self.manipulation_classes = tuple(manipulation_classes)
        self.columns = ["frame_index", "crop_png"] + (["box"] if boxes else [])
        self.blend = blend
        self.families = families

    @property
    def num_units(self) -> int:
        return self.index.num_units

    def count(self, unit: int) -> int:
        return int(self.counts[unit])

    def read(self, unit: int) -> list[tuple[int, tuple]]:
        """``(row, (crop, png, box))`` of the chosen crops in ``unit``."""
        crops, rows = self.index.unit_rows(unit)
        chosen = self.mask[crops]
        crops, rows = crops[chosen], rows[chosen]
        table = self.index.read(unit, self.columns).take(pa.array(rows))
        if not np.array_equal(table.column("frame_index").to_numpy(), self.index.crop_frame[crops]):
            raise RuntimeError(f"the face table {self.index.groups.table} changed while training read it")
        pngs = table.column("crop_png").to_pylist()
        boxes = (np.array(table.column("box").to_pylist(), np.float32) if "box" in self.columns
                 else [None] * len(rows))
        return [(int(r), (int(c), png, box)) for r, c, png, box in zip(rows, crops, pngs, boxes)]

    def batch(self, items: list) -> CropBatch:
        crop_numbers = np.array([payload[0] for _, _, payload in items], np.int64)
        tracks = self.index.track_of(crop_numbers)
        videos = self.index.track_video[tracks]
        crops, targets, manipulations, numbers, boxes, blended, variants = [], [], [], [], [], [], []
        for (_, _, (crop, png, box)), track, video in zip(items, tracks, videos):
            label, manipulation = self.index.video_label[video], self.index.video_manipulation[video]
            img, target, m = augmented_crop(decode_crop(png), class_index(label), manipulation, self.augment,
                                            (self.seed, self.epoch, crop), self.manipulation_classes)
            copies = [(img, target, m, False, 0)]
            if self.blend is not None and label == REAL:
                augment, seed = self.blend
                (fake,) = self_blend_track(augment, [img], track_blend_seed(seed, int(track)))
                copies.append((fake, FAKE_INDEX, -1, True, 0))
            if self.families is not None and label == REAL:
                names, seed, landmarks = self.families
                for k, name in enumerate(names, start=1):
                    edited = apply_validation_family(name, img, landmarks, np.random.default_rng(
                        family_seed(seed, crop, k)))
                    copies.append((edited, FAKE_INDEX, -1, False, k))
            for img, target, m, is_blend, variant in copies:
                crops.append(img)
                targets.append(target)
                manipulations.append(m)
                numbers.append(crop)
                boxes.append(box)
                blended.append(is_blend)
                variants.append(variant)
        return CropBatch(
            torch.from_numpy(np.stack(crops)), torch.tensor(targets, dtype=torch.int64),
            torch.tensor(manipulations, dtype=torch.int64), index=np.array(numbers, np.int64),
            boxes=np.stack(boxes) if "box" in self.columns else None, blended=np.array(blended, bool),
            variant=np.array(variants, np.int64))


def track_blend_seed(seed: int, track: int) -> int:
    """The self-blend of a track's pseudo-fake copy: one draw per (run seed, track)."""
    return int(np.random.default_rng([seed, 11, track]).integers(2**31))


def family_seed(seed: int, crop: int, family: int) -> tuple[int, int, int, int]:
    """The generator seed of crop ``crop``'s copy by validation family ``family`` (1-based): the same every epoch."""
    return (seed, 23, int(crop), int(family))


def _as_is(batch):
    return batch


def stream_loader(stream: ShuffledStream, workers: int, pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over a stream that batches itself: ``workers`` processes decode, the main process trains.

    The loader seeds its workers from its own generator, not torch's global one, so
    starting a loader draws nothing from the random state a resumed run restored.
    """
    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=_as_is, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=2 if workers else None,
                      generator=torch.Generator().manual_seed(seed))


def plain_stream(index: FaceIndex, crops: np.ndarray, batch_size: int, **source) -> ShuffledStream:
    """The crops in table order, unshuffled, for a pass of inference (one rank)."""
    return ShuffledStream(FaceCrops(index, crops, **source), batch_size=batch_size, seed=0, shuffle=False)


class EmbeddingStore:
    """Float32 rows of ``dim`` values in a file on local disk, written and read by row number.

    A real dataset's embeddings (1280 floats a crop) do not fit in memory; a file
    read with ``pread`` holds none of them resident. The file is removed on
    :meth:`close`.
    """

    def __init__(self, rows: int, directory: Optional[str] = None):
        self.rows, self.dim = rows, None
        handle, self.path = tempfile.mkstemp(prefix="embeddings-", suffix=".f32", dir=directory)
        self._fd = handle

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, np.float32)
        if self.dim is None:
            self.dim = values.shape[1]
            os.ftruncate(self._fd, self.rows * self.dim * 4)
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run_rows, run_values in zip(np.split(rows, breaks), np.split(values, breaks)):
            os.pwrite(self._fd, run_values.tobytes(), int(run_rows[0]) * self.dim * 4)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a ``(stop - start, dim)`` array."""
        data = os.pread(self._fd, (stop - start) * self.dim * 4, start * self.dim * 4)
        return np.frombuffer(data, np.float32).reshape(stop - start, self.dim).copy()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            os.unlink(self.path)
            self._fd = None


class TrackEmbeddings(Sequence):
    """Each track's embeddings ``(T_i, D)``, read from an :class:`EmbeddingStore` when asked for."""

    def __init__(self, store: EmbeddingStore, bounds: np.ndarray):
        self.store, self.bounds = store, np.asarray(bounds, np.int64)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.store.read(int(self.bounds[i]), int(self.bounds[i + 1]))

    @property
    def dim(self) -> int:
        return self.store.dim
