"""What the frame stage validates on, and how it reports it.

The items are the fixed validation crops (:func:`pipeline.train_data.validation_crops`:
real crops and the original fakes) and, with ``data.val_families``, every real
crop's copy by each validation-only family (``models.validation_families``),
labelled fake. An item is the key ``(crop, variant)``: variant 0 is the crop as
the table holds it, variant ``k`` its copy by the ``k``-th family (1-based). The
copies are made in the stream's workers (``pipeline.train_stream.FaceCrops``),
seeded by ``(seed, crop, k)``, so every epoch validates on the same pseudo-fakes.
Early stopping and ``val_auc``/``val_log_loss`` take all items; the AUC of each
fake manipulation against all reals is reported too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from models.align import face_template
from models.crops import CropSpec
from models.labels import FAKE_INDEX, REAL_INDEX
from models.metrics import roc_auc
from pipeline.train_config import TrainConfig
from pipeline.train_data import FaceIndex, validation_crops

logger = logging.getLogger(__name__)

UNKNOWN = "unknown"  # a validation fake whose video names no manipulation


@dataclass(frozen=True)
class ValidationSet:
    """The frame stage's validation items, sorted by ``(crop, variant)``."""

    crops: np.ndarray  # (M,) int64: the chosen crops, sorted
    numbers: np.ndarray  # (N,) int64: each item's crop
    variants: np.ndarray  # (N,) int64: 0 the crop itself, k its copy by family k (1-based)
    labels: np.ndarray  # (N,) int64 class index
    manipulations: tuple[str, ...]  # (N,): "" for a real item
    families: tuple[str, ...] = ()
    landmarks: Optional[np.ndarray] = None  # the crops' five points, when there are families
    seed: int = 0

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def source_families(self) -> Optional[tuple]:
        """``FaceCrops``'s ``families`` argument: ``(names, seed, landmarks)``, or None without families."""
        return (self.families, self.seed, self.landmarks) if self.families else None

    def same_items(self, numbers: np.ndarray, variants: np.ndarray) -> bool:
        """Whether ``(numbers, variants)``, sorted as the set is, are exactly its items."""
        return np.array_equal(numbers, self.numbers) and np.array_equal(variants, self.variants)


def item_order(numbers: np.ndarray, variants: np.ndarray) -> np.ndarray:
    """The order that sorts items by ``(crop, variant)``."""
    return np.lexsort((variants, numbers))


def validation_set(config: TrainConfig, index: FaceIndex, crop: CropSpec) -> ValidationSet:
    """The validation crops of ``index`` and, per ``data.val_families``, each real one's edited copies."""
    crops = validation_crops(index, config.data.val_frames_per_track)
    videos = index.track_video[index.track_of(crops)]
    labels = index.targets(index.track_of(crops))
    names = [(index.video_manipulation[v] or UNKNOWN) if y == FAKE_INDEX else "" for v, y in zip(videos, labels)]
    families = tuple(config.data.val_families)
    real = np.flatnonzero(labels == REAL_INDEX)
    numbers = np.concatenate([crops] + [crops[real]] * len(families)).astype(np.int64)
    variants = np.concatenate([np.zeros(len(crops), np.int64)]
                              + [np.full(len(real), k, np.int64) for k in range(1, len(families) + 1)])
    all_labels = np.concatenate([labels] + [np.full(len(real), FAKE_INDEX, np.int64)] * len(families))
    all_names = names + [name for name in families for _ in real]
    order = item_order(numbers, variants)
    landmarks = face_template(crop.size, crop.margin) if families else None
    return ValidationSet(crops=crops, numbers=numbers[order], variants=variants[order],
                         labels=all_labels[order].astype(np.int64),
                         manipulations=tuple(all_names[i] for i in order), families=families,
                         landmarks=landmarks, seed=config.seed)


def auc_by_manipulation(items: ValidationSet, probabilities: np.ndarray) -> dict[str, Optional[float]]:
    """The AUC of each fake manipulation's items against all real items (None when undefined)."""
    manipulations = np.array(items.manipulations, dtype=object)
    real = items.labels == REAL_INDEX
    out: dict[str, Optional[float]] = {}
    for name in sorted({m for m, y in zip(items.manipulations, items.labels) if y == FAKE_INDEX}):
        chosen = real | ((manipulations == name) & (items.labels == FAKE_INDEX))
        try:
            out[name] = float(roc_auc(items.labels[chosen], probabilities[chosen]))
        except ValueError:  # no real items
            out[name] = None
    return out


def log_aucs(epoch: int, aucs: dict[str, Optional[float]]) -> None:
    """One INFO line: each manipulation's validation AUC."""
    shown = ", ".join(f"{name} {'n/a' if auc is None else f'{auc:.4f}'}" for name, auc in aucs.items())
    logger.info("frame epoch %d: validation AUC by manipulation (vs all reals): %s", epoch + 1, shown or "none")
