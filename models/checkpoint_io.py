"""The low-level pieces every checkpoint reader shares: bytes in, trusted tensors out.

``models.checkpoint`` (our own format and the spec schemes) and ``models.sbi``
(the Self-Blended Images authors' released weights) both read bytes through
fsspec, unpickle them with ``weights_only=True``, load a state dict into a
freshly built model and hand back a ``LoadedCheckpoint``. Those pieces live
here, so neither reader imports the other's internals and there is no import
circle: ``models.checkpoint`` imports ``models.sbi``, which imports only this.
"""
from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass

import fsspec
import torch
from torch import nn

from models.card import ModelCard
from models.frame import FrameModel
from models.sequence import TrackLSTM

_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint could not be found, read, trusted or matched to its architecture."""


@dataclass(eq=False)  # identity semantics: one shared copy per process (Beam's Shared holds a weakref)
class LoadedCheckpoint:
    """Models ready for inference (eval mode) and the card describing them."""

    card: ModelCard
    frame_model: FrameModel
    sequence_model: TrackLSTM | None
    sha256: str | None
    source: str


def read_bytes(source: str) -> bytes:
    """All bytes of a local path or fsspec URL.

    Raises:
        CheckpointError: If it is missing or cannot be read.
    """
    try:
        with fsspec.open(source, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {source}") from None
    except (OSError, ImportError, ValueError) as err:
        raise CheckpointError(f"could not read checkpoint {source}: {err}") from None


def unpickle(data: bytes, source: str, map_location: str = "cpu") -> object:
    """``torch.load`` of ``data`` with ``weights_only=True``: plain containers and tensors only.

    Raises:
        CheckpointError: If the bytes are not a PyTorch file, or ask to import anything.
    """
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        looks_saved = data.startswith(_ZIP_MAGIC) or data[:1] == b"\x80"  # torch zip or raw pickle
        if "Weights only load failed" in message and looks_saved:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
            detail = f"it asks to import {found.group(1)}" if found else "it holds non-tensor objects"
            raise CheckpointError(
                f"checkpoint {source} was refused: it is not a plain weights file ({detail}, "
                "which could run code when loaded)"
            ) from None
        raise CheckpointError(f"checkpoint {source} is not a PyTorch weights file") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/... for non-torch bytes
        kind = type(err).__name__
        raise CheckpointError(f"checkpoint {source} is not a PyTorch weights file ({kind})") from None


def load_state(model: nn.Module, state: object, arch: str, source: str) -> None:
    """Load ``state`` into ``model`` strictly; float16 tensors go back to the model's dtype.

    Raises:
        CheckpointError: If ``state`` is not a dict of tensors or does not fit ``model``.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: {arch} weights are not a dict of tensors")
    expected = model.state_dict()
    problem = state_mismatch({k: v.shape for k, v in expected.items()}, state)
    if problem:
        raise CheckpointError(f"{source}: weights do not match architecture {arch}: {problem}")
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)


def state_mismatch(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> str | None:
    """One-line description of how ``state`` differs from ``expected`` shapes, or None."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k])}"
        for k in expected if k in state and state[k].shape != expected[k]
    ]
    parts = [
        f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", shapes))
        if items
    ]
    return "; ".join(parts) or None


def ready(card: ModelCard, frame_model: nn.Module, sequence_model: nn.Module | None,
          sha: str | None, source: str, map_location: str = "cpu") -> LoadedCheckpoint:
    """Models moved to ``map_location`` in eval mode, wrapped with their card."""
    device = torch.device(map_location)
    frame_model.to(device).eval()
    if sequence_model is not None:
        sequence_model.to(device).eval()
    return LoadedCheckpoint(card=card, frame_model=frame_model, sequence_model=sequence_model,
                            sha256=sha, source=source)
