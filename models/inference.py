"""Running the frame and sequence models on batches: the one place for that math.

The Beam model handler, the training job's calibration, evaluation and
benchmarks call these; none of them repeats the preprocessing, autocast or
probability computation.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import nullcontext
from typing import Sequence

import numpy as np
import torch

from models.checkpoint import LoadedCheckpoint
from models.device import describe_device, native_bf16
from models.preprocess import FacePreprocess
from models.sequence import pad_tracks

logger = logging.getLogger(__name__)


class FramePredictor:
    """Face crops (uint8 RGB) -> fake probabilities and pooled embeddings.

    ``optimize`` (CPU only) traces and freezes the model with TorchScript:
    BatchNorm folds into the convolutions and oneDNN fuses the activations,
    about 1.5x faster per crop than eager mode on two cores (see README,
    Performance). It falls back to eager mode, with a warning, if tracing fails.
    ``precision``: ``bf16`` runs under bfloat16 autocast, ``fp32`` does not,
    ``auto`` picks bf16 where the device computes it natively (CUDA Ampere and
    later; CPUs with AMX or AVX512-BF16). bf16 moves probabilities by about 1e-3.
    """

    def __init__(
        self, checkpoint: LoadedCheckpoint, device: torch.device, optimize: bool = False, precision: str = "auto"
    ):
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"unknown precision '{precision}' (valid: auto, fp32, bf16)")
        self.card = checkpoint.card
        self.device = device
        self.bf16 = precision == "bf16" or (precision == "auto" and native_bf16(device))
        self.device_name = describe_device(device) + (" bf16" if self.bf16 else "")
        self.preprocess = FacePreprocess.from_card(checkpoint.card)
        model = checkpoint.frame_model.to(device).eval()
        model.for_inference()
        self.model = model.to(memory_format=torch.channels_last)
        if optimize and device.type == "cpu":
            with self._autocast():  # traced under autocast, the casts are part of the graph
                self.model = _frozen(self.model, checkpoint.card.input_size)
        self.fake_index = checkpoint.card.fake_index
        self.temperature = float(checkpoint.card.temperature)

    def _autocast(self):
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def __call__(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(probabilities (N,), embeddings (N, D))`` as float32 arrays."""
        logits, embeddings = self.outputs(crops)
        return self.fake_probabilities(logits), embeddings

    def outputs(self, crops: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(logits (N, C), embeddings (N, D))`` as float32 arrays, before the temperature."""
        batch = self.preprocess(crops).contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            out = self.model(batch)
        return out["logits"].float().cpu().numpy(), out["embedding"].float().cpu().numpy()

    def fake_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The card's fake probability of raw ``logits`` (see :func:`fake_probabilities`)."""
        return fake_probabilities(logits, self.fake_index, self.temperature)


def fake_probabilities(logits: np.ndarray, fake_index: int, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)[:, fake_index]`` of ``(N, C)`` logits, float32 ``(N,)``."""
    scaled = torch.from_numpy(np.ascontiguousarray(logits, np.float32)) / float(temperature)
    return torch.softmax(scaled, dim=1)[:, fake_index].numpy().astype(np.float32)


# How far the frozen graph's logits may stray from eager mode's before it is refused.
# In fp32 only summation order differs. bf16 keeps 8 significant bits, and the frozen
# graph folds BatchNorm into the convolutions before rounding: on the demo Lite0 that
# moves logits by ~0.03, as much as bf16 eager mode differs from fp32 (~0.02). A broken
# trace (a dropped branch, a wrong constant) is off by far more.
_TRACE_ATOL = {"fp32": 1e-4, "bf16": 5e-2}


def _frozen(model: torch.nn.Module, input_size: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):  # a fixed, non-degenerate example; caller's RNG untouched
        torch.manual_seed(0)
        example = torch.randn(2, 3, input_size, input_size).contiguous(memory_format=torch.channels_last)
    atol = _TRACE_ATOL["bf16" if torch.is_autocast_enabled("cpu") else "fp32"]
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            frozen = torch.jit.freeze(torch.jit.trace(model, example, strict=False))
            reference, traced = model(example), frozen(example)
        if not torch.allclose(reference["logits"].float(), traced["logits"].float(), atol=atol):
            raise RuntimeError("traced outputs differ from the model's")
        return frozen
    except Exception as e:  # an architecture TorchScript cannot trace: eager mode still works
        logger.warning("frame model not optimized for CPU (%s: %s); running it in eager mode",
                       type(e).__name__, e)
        return model


class SequencePredictor:
    """Tracks (sequences of frame embeddings) -> fake probability per track."""

    def __init__(self, checkpoint: LoadedCheckpoint, device: torch.device):
        if checkpoint.sequence_model is None:
            raise ValueError("the checkpoint has no sequence model")
        self.device = device
        model = checkpoint.sequence_model
        # The model may be shared with other threads that are running it (one copy per
        # worker process): nn.LSTM.to() rebuilds its flat weight list even when nothing
        # moves, which breaks a forward pass in flight. Move it only when it must move.
        if any(p.device != device for p in model.parameters()):
            model = model.to(device)
        self.model = model.eval()

    def __call__(self, tracks: Sequence[np.ndarray]) -> np.ndarray:
        """``tracks``: arrays of shape ``(T_i, D)``. Returns ``(len(tracks),)`` float32."""
        if not tracks:
            return np.zeros((0,), np.float32)
        padded, lengths = pad_tracks(tracks)
        with torch.inference_mode():
            logits = self.model(padded.to(self.device), lengths)
        return torch.sigmoid(logits.float()).cpu().numpy().astype(np.float32)
