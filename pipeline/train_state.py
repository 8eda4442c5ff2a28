"""What a training run keeps on disk as it goes: ``state.pt`` to resume from, ``metrics.jsonl`` to read.

The frame stage writes ``OUTPUT/state.pt`` after every epoch and every
``frame.save_every_steps`` steps within one (to a temporary file that is then
moved over the old one, so a killed run leaves the last whole state): the
models, optimizer, scheduler, gradient scaler, early stopping, torch's random
state, and, within an epoch, the data position, each rank's loader streams
(which row group, how far into it, the shuffle buffer's rows, the generator's
state; ``models.streaming``) and the epoch's running losses. The sequence stage
writes ``OUTPUT/sequence_state.pt`` after each of its epochs. ``--resume
OUTPUT/state.pt`` continues from both: mid-epoch with the samples an
uninterrupted run would have seen next. The layout of these files lives here
and nowhere else: :func:`save_state` and :func:`save_sequence_state` write them,
:func:`load_state` checks them, :func:`restore_state` puts the frame stage back
together.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any, Optional

import fsspec
import numpy as np
import torch

from models.training import EarlyStopping
from pipeline.train_config import TrainConfig

logger = logging.getLogger(__name__)

STATE_FORMAT = "deepfake-scan-training-state"
SEQUENCE_FORMAT = "deepfake-scan-sequence-state"


@dataclass
class FrameTraining:
    """The frame stage's moving parts: everything an epoch changes and a resumed run needs back."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler scheduler
    early: EarlyStopping
    ema: Optional[torch.optim.swa_utils.AveragedModel] = None  # the weight average, when frame.ema_decay > 0
    scaler: Optional[torch.amp.GradScaler] = None  # fp16 training's loss scale


def save_state(path: str, config: TrainConfig, epoch: int, parts: FrameTraining,
               best_state: Optional[dict], data: Optional[dict] = None) -> None:
    """Write the frame stage's state atomically to ``path``.

    Args:
        epoch: The last whole frame epoch (0-based; -1 before the first ends).
        data: Within epoch ``epoch + 1``: ``{"epoch", "world", "ranks": [per rank:
            {"stream": StreamTracker.state(), "totals": FrameTotals.state_dict()}]}``;
            None at the end of an epoch.
    """
    state = {
        "format": STATE_FORMAT,
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "epoch": epoch,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "early_stopping": parts.early.state_dict(),
        "best_model": best_state,
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "data": data,
    }
    _write(path, state)


def save_sequence_state(path: str, frame_epoch: int, epoch: int, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, early: EarlyStopping, best: Optional[dict],
                        rng: np.random.Generator) -> None:
    """Write the sequence stage's state after its epoch ``epoch`` (0-based) to ``path``.

    ``frame_epoch`` names the frame model it learnt from (``state.pt``'s epoch):
    a resumed run that trains the frame model further starts the sequence stage afresh.
    """
    _write(path, {"format": SEQUENCE_FORMAT, "frame_epoch": frame_epoch, "epoch": epoch, "model": model.state_dict(),
                  "optimizer": optimizer.state_dict(), "early_stopping": early.state_dict(), "best_model": best,
                  "rng": rng.bit_generator.state})


def sequence_state_path(state_path: str) -> str:
    """``sequence_state.pt`` beside a frame state file."""
    return state_path.rsplit("/", 1)[0] + "/sequence_state.pt" if "/" in state_path else "sequence_state.pt"


def _write(path: str, state: dict) -> None:
    with fsspec.open(path + ".tmp", "wb") as f:
        torch.save(state, f)
    fs, local = fsspec.core.url_to_fs(path)
    fs.mv(local + ".tmp", local)


def load_state(path: str) -> dict:
    """A state file written by :func:`save_state` (tensors on the CPU), with ``sequence``: the
    sequence stage's state beside it, or None.

    Raises:
        ValueError: If ``path`` is not a training state file.
    """
    with fsspec.open(path, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a deepfake-scan training state file")
    state.setdefault("data", None)
    sequence, state["sequence"] = sequence_state_path(path), None
    fs, local = fsspec.core.url_to_fs(sequence)
    if fs.exists(local):
        with fsspec.open(sequence, "rb") as f:
            state["sequence"] = torch.load(f, map_location="cpu", weights_only=True)
    return state


def restore_state(parts: FrameTraining, state: dict) -> tuple[Optional[dict], int, Optional[dict]]:
    """Load ``state`` into ``parts``; returns the best weights so far, the epoch to continue at, and
    the data position within it (None: from its start)."""
    parts.model.load_state_dict(state["model"])
    if parts.ema is not None and state.get("ema") is not None:
        parts.ema.load_state_dict(state["ema"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.early.load_state_dict(state["early_stopping"])
    if parts.scaler is not None and state.get("scaler") is not None:
        parts.scaler.load_state_dict(state["scaler"])
    if state.get("rng") is not None:
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["best_model"], state["epoch"] + 1, state.get("data")


def restore_sequence_rng(state: dict) -> np.random.Generator:
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return rng


class MetricsLog:
    """``OUTPUT/metrics.jsonl``: one JSON line per epoch and stage, also logged.

    A fresh run empties the file; a resumed one appends to it, so the file tells
    the whole run's story.
    """

    def __init__(self, path: str, append: bool, enabled: bool = True):
        self.path = path
        self.enabled = enabled  # only rank 0 writes
        if enabled and not append:
            with fsspec.open(path, "w") as f:
                f.write("")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with fsspec.open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()})
