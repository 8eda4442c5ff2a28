"""Single-file checkpoints holding the model card and both models' weights.

A checkpoint is ``torch.save`` of a plain dict::

    {"format": "deepfake-scan-checkpoint", "version": 1, "card": card.to_dict(),
     "frame_state": {...}, "sequence_state": {...} or None}

so it loads with ``torch.load(..., weights_only=True)``: a file that needs any
other object to unpickle is refused, never executed. Checkpoints are read and
written through fsspec, so local paths, ``memory://`` and ``gs://`` all work.

A checkpoint spec is a path/URL, or ``scheme:rest`` for a registered scheme:
``untrained[:ARCH]`` gives deterministic random weights; ``sbi:PATH`` loads the
Self-Blended Images authors' released B4 weights (``models/sbi.py``).

``load_checkpoint`` builds the models (workers, through ``transforms.checkpoints``);
``read_card`` gives only the card and the SHA-256 (the driver). The byte-level
pieces both this module and ``models.sbi`` use live in ``models.checkpoint_io``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from typing import Callable

import fsspec
import torch
from torch import nn

from models.card import ModelCard
from models.checkpoint_io import (
    CheckpointError,
    LoadedCheckpoint,
    load_state,
    read_bytes,
    ready,
    state_mismatch,
    unpickle,
)
from models.frame import calibrate_batchnorm, default_input_size
from models.registry import create_model, list_models
from models.sbi import load_sbi, sbi_card

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "deepfake-scan-checkpoint"
CHECKPOINT_VERSION = 1
DEFAULT_UNTRAINED_ARCH = "efficientnet-b0"
UNTRAINED_SEED = 0
_CHUNK_BYTES = 1 << 20


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a local file or fsspec URL, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with fsspec.open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(
    path: str,
    card: ModelCard,
    frame_model: nn.Module,
    sequence_model: nn.Module | None = None,
    half: bool = False,
) -> str:
    """Write card and weights to ``path`` (local path or fsspec URL) in one file.

    Local files are written to a temporary file and renamed, so readers never
    see a partial checkpoint. The models are checked against the card first, so
    every saved file loads back. ``card.embedding_dim`` is filled in if 0.

    Args:
        half: Store floating-point parameters as float16 (about half the size;
            buffers such as BatchNorm statistics stay float32); loading converts
            them back to float32.

    Returns:
        Hex SHA-256 of the written bytes.

    Raises:
        ValueError: If the models do not match the card.
    """
    card = _card_matching_models(card, frame_model, sequence_model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": card.to_dict(),
        "frame_state": _portable_state(frame_model, half),
        "sequence_state": None if sequence_model is None else _portable_state(sequence_model, half),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    _write_atomic(path, data)
    sha = hashlib.sha256(data).hexdigest()
    logger.info("saved checkpoint %s (%s, %.1f MB, sha256 %s)", path, card.name, len(data) / 1e6, sha[:12])
    return sha


def load_checkpoint(spec: str | None, map_location: str = "cpu") -> LoadedCheckpoint:
    """Load models from a checkpoint spec.

    Args:
        spec: ``None``/``"untrained"``/``"untrained:ARCH"`` for deterministic random
            weights, ``"sbi:PATH"`` for the SBI authors' released weights, otherwise
            a local path or fsspec URL of a saved checkpoint.
        map_location: Device to load tensors onto and place the models on.

    Raises:
        CheckpointError: With a one-line reason when the checkpoint cannot be used.
    """
    scheme, rest = _scheme_of(spec)
    if scheme is not None:
        return scheme.load(rest, map_location)
    return _load_file(rest, map_location)


def read_card(spec: str | None) -> tuple[ModelCard, str | None]:
    """The card of a checkpoint spec and the SHA-256 of its bytes, without building any model.

    For the driver: it needs the card (name, threshold, how crops are cut) and the
    fingerprint, not the weights. ``untrained[:ARCH]`` has no bytes (sha256 None).

    Raises:
        CheckpointError: With a one-line reason when the checkpoint cannot be used.
    """
    scheme, rest = _scheme_of(spec)
    if scheme is not None:
        return scheme.card(rest)
    _, card, sha = _read_file(rest)
    return card, sha


@dataclass(frozen=True)
class _Scheme:
    """A ``scheme:rest`` checkpoint spec: how to load it, and how to read only its card."""

    load: Callable[[str, str], LoadedCheckpoint]
    card: Callable[[str], tuple[ModelCard, str | None]]


def _scheme_of(spec: str | None) -> tuple[_Scheme | None, str]:
    """``(scheme, rest)`` for ``scheme:rest`` specs, ``(None, spec)`` for files and URLs."""
    if spec is None or spec == "untrained":
        return _SCHEMES["untrained"], ""
    name, sep, rest = spec.partition(":")
    if sep and name in _SCHEMES and not rest.startswith("//"):
        return _SCHEMES[name], rest
    return None, spec


def _untrained_card(arch: str) -> tuple[ModelCard, None]:
    arch = arch or DEFAULT_UNTRAINED_ARCH
    _check_arch(arch, "frame", f"untrained:{arch}")
    note = f"random weights (seed {UNTRAINED_SEED}); for tests and smoke runs only"
    card = ModelCard(name="untrained", frame_arch=arch, input_size=default_input_size(arch),
                     training={"note": note})
    return card, None


def _load_untrained(arch: str, map_location: str) -> LoadedCheckpoint:
    card, _ = _untrained_card(arch)
    source = f"untrained:{card.frame_arch}"
    with torch.random.fork_rng(devices=[]):  # fixed weights, caller's RNG untouched
        torch.manual_seed(UNTRAINED_SEED)
        frame_model, sequence_model = _build_models(card, True, source)
        # BatchNorm statistics of one seeded noise image at the input size; with the
        # default statistics an untrained model's outputs do not depend on its input.
        calibrate_batchnorm(frame_model, torch.randn(1, 3, card.input_size, card.input_size))
    card = replace(card, embedding_dim=frame_model.embedding_dim)
    logger.warning("using UNTRAINED %s models: scores are meaningless", card.frame_arch)
    return ready(card, frame_model, sequence_model, None, source, map_location)


def _sbi_card(path: str) -> tuple[ModelCard, str]:
    """``sbi:PATH``: the authors' card, once the file is known to hold an SBI state dict."""
    source = f"sbi:{path}"
    data = read_bytes(path)
    payload = unpickle(data, source)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{source} is not an SBI checkpoint (expected a dict with a 'model' state dict)")
    return sbi_card(), hashlib.sha256(data).hexdigest()


_SCHEMES: dict[str, _Scheme] = {
    "untrained": _Scheme(_load_untrained, _untrained_card),
    "sbi": _Scheme(load_sbi, _sbi_card),
}


def _read_file(source: str, map_location: str = "cpu") -> tuple[dict, ModelCard, str]:
    """Payload, card and SHA-256 of one of our checkpoint files, checked but not built."""
    data = read_bytes(source)
    sha = hashlib.sha256(data).hexdigest()
    payload = unpickle(data, source, map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{source} is not a deepfake-scan checkpoint (format {found!r})")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{source} has checkpoint version {payload.get('version')!r}; "
                              f"this code reads version {CHECKPOINT_VERSION}")
    try:
        card = ModelCard.from_dict(payload.get("card"))
    except ValueError as err:
        raise CheckpointError(f"{source} has an invalid model card: {err}") from None
    return payload, card, sha


def _load_file(source: str, map_location: str) -> LoadedCheckpoint:
    payload, card, sha = _read_file(source, map_location)
    frame_state, sequence_state = payload.get("frame_state"), payload.get("sequence_state")
    with torch.random.fork_rng(devices=[]):  # random init is overwritten; keep caller's RNG
        frame_model, sequence_model = _build_models(card, sequence_state is not None, source)
    if card.embedding_dim and card.embedding_dim != frame_model.embedding_dim:
        raise CheckpointError(f"{source}: card embedding_dim {card.embedding_dim} but "
                              f"{card.frame_arch} produces {frame_model.embedding_dim}")
    load_state(frame_model, frame_state, card.frame_arch, source)
    if sequence_model is not None:
        load_state(sequence_model, sequence_state, card.sequence_arch, source)
    logger.info("loaded checkpoint %s (%s, sha256 %s)", source, card.name, sha[:12])
    return ready(card, frame_model, sequence_model, sha, source, map_location)


def _check_arch(name: str, kind: str, source: str) -> None:
    known = list_models(kind)
    if name not in known:
        raise CheckpointError(
            f"{source} needs unknown {kind} architecture {name!r}; known: {', '.join(known)}"
        )


def _build_models(
    card: ModelCard, with_sequence: bool, source: str
) -> tuple[nn.Module, nn.Module | None]:
    """Freshly initialised models as the card describes them (frame, sequence or None)."""
    if card.aggregator == "bilstm" and not with_sequence:
        raise CheckpointError(f"{source}: card aggregator is 'bilstm' but there is no sequence model")
    if with_sequence and card.sequence_arch is None:
        raise CheckpointError(f"{source} has a sequence model but its card names no sequence_arch")
    _check_arch(card.frame_arch, "frame", source)
    if with_sequence:
        _check_arch(card.sequence_arch, "sequence", source)
    try:
        frame = create_model(
            card.frame_arch,
            num_classes=len(card.class_names),
            manipulation_classes=len(card.manipulation_classes),
            **card.frame_kwargs,
        )
        sequence = None
        if with_sequence:
            sequence = create_model(
                card.sequence_arch, input_dim=frame.embedding_dim, **card.sequence_kwargs
            )
    except (TypeError, ValueError) as err:  # e.g. an argument the constructor does not take
        raise CheckpointError(f"{source}: cannot build the models its card describes: {err}") from None
    return frame, sequence


def _card_matching_models(
    card: ModelCard, frame_model: nn.Module, sequence_model: nn.Module | None
) -> ModelCard:
    """Check the models are what the card rebuilds; return the card with embedding_dim set."""
    embedding_dim = int(getattr(frame_model, "embedding_dim", 0))
    if card.embedding_dim and card.embedding_dim != embedding_dim:
        raise ValueError(f"card embedding_dim {card.embedding_dim} but the frame model's is {embedding_dim}")
    with torch.device("meta"):  # shapes only: no memory, no RNG use
        built = _build_models(card, sequence_model is not None, "model card")
    pairs = ((card.frame_arch, built[0], frame_model), (card.sequence_arch, built[1], sequence_model))
    for arch, want, given in pairs:
        if given is not None:
            problem = state_mismatch({k: v.shape for k, v in want.state_dict().items()}, given.state_dict())
            if problem:
                raise ValueError(f"model does not match the card's {arch}: {problem}")
    return replace(card, embedding_dim=embedding_dim)


def _portable_state(model: nn.Module, half: bool) -> dict[str, torch.Tensor]:
    """CPU, contiguous copy of the state dict; floating parameters as float16 when ``half``.

    Buffers (BatchNorm statistics) stay float32: they are small, and running
    variances can fall below float16's normal range, where it keeps few digits.
    """
    buffers = {name for name, _ in model.named_buffers()}
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if half and value.is_floating_point() and key not in buffers:
            halved = value.to(torch.float16)
            if bool(torch.isfinite(value).all()) and not bool(torch.isfinite(halved).all()):
                raise ValueError(f"{key} overflows float16; save with half=False")
            value = halved
        state[key] = value
    return state


def _write_atomic(path: str, data: bytes) -> None:
    protocol, local_path = fsspec.core.split_protocol(path)
    if protocol not in (None, "file", "local"):
        with fsspec.open(path, "wb") as f:  # object stores publish the object on close
            f.write(data)
        return
    directory = os.path.dirname(os.path.abspath(local_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(local_path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints are meant to be shared
        os.replace(tmp, local_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


__all__ = [
    "CheckpointError",
    "LoadedCheckpoint",
    "file_sha256",
    "load_checkpoint",
    "read_card",
    "save_checkpoint",
]
