"""Training loops for the frame and sequence models (pure torch, no Beam).

The training job (``pipeline/frame_stage.py``, ``pipeline/sequence_stage.py``)
streams the face table (``models.streaming``) into :class:`CropBatch` batches
and calls these functions; its per-epoch validation runs the frame model in eval
mode, while calibration runs the scan's own predictors (``models.inference``).
Preprocessing is ``FacePreprocess``, the same object the scanner uses, applied
to whole uint8 batches on the training device; :class:`MixedPrecision` is the
autocast (and, for fp16, the gradient scaler) of a step.
"""
from __future__ import annotations

import logging
import random
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.preprocess import FacePreprocess, decode_crop
from models.sequence import pad_tracks

logger = logging.getLogger(__name__)


def set_batchnorm_momentum(model: nn.Module, momentum: float = 0.1) -> nn.Module:
    """Use PyTorch's usual BatchNorm momentum.

    efficientnet-pytorch keeps TensorFlow's 0.99 decay (momentum 0.01), so on a
    short run from scratch the running statistics lag far behind the weights and
    eval-mode outputs collapse to a constant.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return model


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class CropSample:
    png: bytes
    target: int  # class index
    video_id: str
    manipulation: str = ""  # method that made a fake ("" for real crops)


@dataclass
class CropBatch:
    """A batch of face crops as the frame loop takes it; the streamed ones say where they came from."""

    crops: torch.Tensor  # uint8 [N, S, S, 3]: a quarter of float32's bytes to pin and copy
    targets: torch.Tensor  # int64 [N] class index
    manipulations: torch.Tensor  # int64 [N] manipulation index, -1: none or unknown
    index: Optional[np.ndarray] = None  # int64 [N]: each crop's place in the face index (streamed batches)
    boxes: Optional[np.ndarray] = None  # float32 [N, 4], when the stream reads them
    blended: Optional[np.ndarray] = None  # bool [N]: a self-blended copy of its crop
    variant: Optional[np.ndarray] = None  # int64 [N]: 0 the crop, k its copy by validation family k (1-based)
    position: Optional[dict] = None  # the stream's position after this batch (models.streaming)

    def __len__(self) -> int:
        return len(self.targets)

    def pin_memory(self) -> "CropBatch":
        """Called by the DataLoader's pinning thread: page-locked tensors copy to the GPU asynchronously."""
        return replace(self, crops=self.crops.pin_memory(), targets=self.targets.pin_memory(),
                       manipulations=self.manipulations.pin_memory())


class CropDataset(Dataset):
    """Face crops with their class and manipulation index (-1: none or unknown).

    ``augment(img, target, rng, manipulation) -> (img, target, manipulation)`` runs
    when training (it may turn a real crop into a self-blended fake). Randomness
    comes from a generator seeded by (seed, epoch, index), so an epoch is
    reproducible whatever the number of loader workers.
    """

    def __init__(
        self,
        samples: Sequence[CropSample],
        augment: Optional[Callable] = None,
        seed: int = 0,
        manipulation_classes: Sequence[str] = (),
    ):
        self.samples = list(samples)
        self.augment = augment
        self.seed = seed
        self.manipulation_classes = list(manipulation_classes)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        return augmented_crop(decode_crop(sample.png), sample.target, sample.manipulation, self.augment,
                              (self.seed, self.epoch, index), self.manipulation_classes)


def augmented_crop(img: np.ndarray, target: int, manipulation: str, augment: Optional[Callable], key: tuple,
                   manipulation_classes: Sequence[str]) -> tuple[np.ndarray, int, int]:
    """One training crop: augmented with a generator seeded by ``key``, its manipulation as an index."""
    if augment is not None:
        img, target, manipulation = augment(img, target, np.random.default_rng(key), manipulation)
    known = manipulation in manipulation_classes
    return np.ascontiguousarray(img), target, list(manipulation_classes).index(manipulation) if known else -1


def collate_crops(batch) -> CropBatch:
    crops, targets, manipulations = zip(*batch)
    return CropBatch(
        torch.from_numpy(np.stack(crops)),
        torch.tensor(targets, dtype=torch.int64),
        torch.tensor(manipulations, dtype=torch.int64),
    )


def crop_loader(dataset: CropDataset, batch_size: int, shuffle: bool, workers: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_crops,
        generator=generator,
        persistent_workers=False,
    )


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class MixedPrecision:
    """Autocast and, for fp16, a gradient scaler: how the frame loop steps at ``precision``.

    ``auto`` is bf16 on a GPU that computes it natively, fp16 (scaled) on an older
    GPU, and fp32 on the CPU. bf16 keeps fp32's exponent range, so it needs no scaler.

    Raises:
        ValueError: If ``precision`` is unknown, or fp16 is asked of the CPU.
    """

    def __init__(self, device: torch.device, precision: str = "auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{precision}' (valid: {', '.join(PRECISIONS)})")
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16") \
                if device.type == "cuda" else "fp32"
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA device (use bf16 or fp32 on the CPU)")
        self.device = device
        self.precision = precision
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward and optimizer step (scaled for fp16: a step with inf/nan gradients is skipped)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


class FrameTotals:
    """Running sums of one frame epoch's losses and accuracy; a resumed epoch continues them."""

    KEYS = ("loss", "ce", "contrastive", "manipulation")

    def __init__(self, state: Optional[dict] = None):
        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.correct = self.seen = 0
        if state is not None:
            self.sums, self.correct, self.seen = dict(state["sums"]), state["correct"], state["seen"]

    def add(self, losses: dict, correct: int, n: int) -> None:
        for key in self.KEYS:
            self.sums[key] += float(losses[key].detach()) * n
        self.correct += correct
        self.seen += n

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "correct": self.correct, "seen": self.seen}

    @classmethod
    def merged(cls, states: Sequence[dict]) -> "FrameTotals":
        """The totals of several ranks together."""
        out = cls()
        for state in states:
            out.sums = {k: out.sums[k] + state["sums"][k] for k in cls.KEYS}
            out.correct += state["correct"]
            out.seen += state["seen"]
        return out

    def summary(self) -> dict:
        seen = max(self.seen, 1)
        return {**{k: v / seen for k, v in self.sums.items()}, "accuracy": self.correct / seen}


def train_frame_epoch(
    model: nn.Module,
    batches: Iterable[CropBatch],
    preprocess: FacePreprocess,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    after_step: Optional[Callable[[CropBatch], None]] = None,
    precision: Optional[MixedPrecision] = None,
    totals: Optional[FrameTotals] = None,
) -> dict:
    """Train the frame model on ``batches``; returns mean losses and training accuracy.

    ``after_step(batch)`` runs after every optimizer step (a weight average's update,
    a saved position). Crops go to ``device`` as uint8 (pinned, asynchronously) and
    are normalised there. With a manipulation head, its cross-entropy over the crops
    whose method is known is added to the loss (``manipulation`` in the result).
    ``totals`` carries the sums of a resumed epoch.
    """
    model.train()
    precision = precision or MixedPrecision(device, "fp32")
    totals = totals if totals is not None else FrameTotals()
    batches = progress(batches) if progress else batches
    for batch in batches:
        x = preprocess(batch.crops.to(device, non_blocking=True))
        y = batch.targets.to(device, non_blocking=True)
        manipulations = batch.manipulations.to(device, non_blocking=True)
        with precision.autocast():
            out = model(x)
        losses = loss_fn(out["logits"].float(), out["embedding"].float(), y)
        known = manipulations >= 0
        if "manipulation_logits" in out and bool(known.any()):
            losses["manipulation"] = nn.functional.cross_entropy(
                out["manipulation_logits"].float()[known], manipulations[known]
            )
            losses["loss"] = losses["loss"] + losses["manipulation"]
        else:
            losses["manipulation"] = torch.zeros(())
        precision.step(losses["loss"], optimizer)
        totals.add(losses, int((out["logits"].argmax(1) == y).sum()), len(y))
        if after_step is not None:
            after_step(batch)
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{totals.sums['loss'] / max(totals.seen, 1):.4f}")
    return totals.summary()


def weight_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights.

    Averaging the last few hundred steps smooths the epoch-to-epoch swings a
    small training set causes; update it with ``ema.update_parameters(model)``.
    Its BatchNorm statistics must be recomputed (``models.frame.calibrate_batchnorm``)
    before it is evaluated: the statistics of the moving weights do not fit the
    averaged ones (early in a run from scratch, eval outputs collapse to a constant).
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


@torch.inference_mode()
def predict_frames(
    model: nn.Module,
    crops: Iterable[np.ndarray],
    preprocess: FacePreprocess,
    device: torch.device,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(N, C)`` and embeddings ``(N, D)`` of uint8 crops, in eval mode."""
    model.eval()
    logits, embeddings, batch = [], [], []

    def flush():
        with autocast_for(device):
            out = model(preprocess(np.stack(batch)).to(device))
        logits.append(out["logits"].float().cpu().numpy())
        embeddings.append(out["embedding"].float().cpu().numpy())
        batch.clear()

    for crop in crops:
        batch.append(crop)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(embeddings)


class EarlyStopping:
    """Stops after ``patience`` epochs without improving ``mode`` ("min"/"max") by ``min_delta``."""

    def __init__(self, patience: int, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode}")
        self.patience, self.mode, self.min_delta = patience, mode, min_delta
        self.best: Optional[float] = None
        self.bad_epochs = 0

    def step(self, value: float) -> bool:
        """Record an epoch's value; True when it is the best so far."""
        better = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


def train_sequence_epoch(
    model: nn.Module,
    tracks: Sequence[np.ndarray],
    labels: np.ndarray,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    rng: np.random.Generator,
) -> float:
    """One epoch of the BiLSTM over track embeddings; returns the mean BCE loss."""
    model.train()
    order = rng.permutation(len(tracks))
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x, lengths = pad_tracks([tracks[i] for i in idx])
        y = torch.from_numpy(labels[idx].astype(np.float32))
        loss = nn.functional.binary_cross_entropy_with_logits(model(x, lengths), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / max(len(order), 1)


@torch.inference_mode()
def predict_sequences(model: nn.Module, tracks: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """Fake probability per track."""
    model.eval()
    out = []
    for start in range(0, len(tracks), batch_size):
        x, lengths = pad_tracks(tracks[start : start + batch_size])
        out.append(torch.sigmoid(model(x, lengths)).numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
