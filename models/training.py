"""Training loops for the frame and sequence models (pure torch, no Beam).

The training job (``pipeline/train.py``) reads the face table, builds these
datasets and calls these functions; its per-epoch validation uses
``predict_frames``, while calibration runs the scan's own predictors
(``models.inference``). Preprocessing is ``FacePreprocess``, the same object the
scanner uses, applied to whole uint8 batches.
"""
from __future__ import annotations

import logging
import random
from contextlib import nullcontext
from dataclasses import dataclass
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
        img = decode_crop(sample.png)
        target, manipulation = sample.target, sample.manipulation
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            img, target, manipulation = self.augment(img, target, rng, manipulation)
        known = manipulation in self.manipulation_classes
        return np.ascontiguousarray(img), target, self.manipulation_classes.index(manipulation) if known else -1


def collate_crops(batch):
    crops, targets, manipulations = zip(*batch)
    return (
        np.stack(crops),
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


def train_frame_epoch(
    model: nn.Module,
    loader: DataLoader,
    preprocess: FacePreprocess,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
    after_step: Optional[Callable[[nn.Module], None]] = None,
) -> dict:
    """One epoch of the frame model; returns mean losses and training accuracy.

    ``after_step(model)`` runs after every optimizer step (e.g. a weight average's update).

    With a manipulation head, its cross-entropy over the crops whose method is
    known is added to the loss (``manipulation`` in the result).
    """
    model.train()
    totals = {"loss": 0.0, "ce": 0.0, "contrastive": 0.0, "manipulation": 0.0}
    correct = seen = 0
    batches = progress(loader) if progress else loader
    for crops, targets, manipulations in batches:
        x = preprocess(crops).to(device, non_blocking=True)
        y = targets.to(device)
        with autocast_for(device):
            out = model(x)
        losses = loss_fn(out["logits"].float(), out["embedding"].float(), y)
        known = manipulations.to(device) >= 0
        if "manipulation_logits" in out and bool(known.any()):
            losses["manipulation"] = nn.functional.cross_entropy(
                out["manipulation_logits"].float()[known], manipulations.to(device)[known]
            )
            losses["loss"] = losses["loss"] + losses["manipulation"]
        else:
            losses["manipulation"] = torch.zeros(())
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        n = len(y)
        for key in totals:
            totals[key] += float(losses[key].detach()) * n
        correct += int((out["logits"].argmax(1) == y).sum())
        seen += n
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{totals['loss'] / seen:.4f}")
    return {**{k: v / max(seen, 1) for k, v in totals.items()}, "accuracy": correct / max(seen, 1)}


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
