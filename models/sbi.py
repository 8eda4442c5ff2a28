"""Loading the Self-Blended Images authors' released detectors as a frame model.

Shiohara and Yamasaki (CVPR 2022) released EfficientNet-B4 checkpoints: a dict
whose ``"model"`` entry is their detector's state dict, an efficientnet-pytorch
B4 with a 2-class head stored under ``net.``. It reads 380x380 face crops scaled
to [0, 1] without mean/std normalisation, and the fake probability is
``softmax(logits)[:, 1]``. We map those weights onto ``FrameModel`` (backbone
<- ``net.*``, head <- ``net._fc``), which computes the same function, and describe
it with a model card: no sequence model, so tracks are scored by the mean of
their frame probabilities. Their crops come from RetinaFace boxes with a margin,
ours from five-point alignment: scores are close to, not identical with, theirs.
"""
from __future__ import annotations

import hashlib
import logging

import torch

from models.card import ModelCard
from models.checkpoint import CheckpointError, LoadedCheckpoint, _load_state, _read_bytes, _ready, _unpickle
from models.frame import FrameModel

logger = logging.getLogger(__name__)

SBI_ARCH = "efficientnet-b4"
SBI_INPUT_SIZE = 380


def sbi_card(name: str = "sbi-efficientnet-b4") -> ModelCard:
    return ModelCard(
        name=name,
        frame_arch=SBI_ARCH,
        input_size=SBI_INPUT_SIZE,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        class_names=("real", "fake"),
        fake_class="fake",
        threshold=0.5,
        aggregator="mean",
        sequence_arch=None,
        frame_kwargs={"dropout": 0.0},
        training={"source": "Self-Blended Images (Shiohara & Yamasaki 2022), released weights"},
    )


def convert_sbi_state(state: dict) -> dict[str, torch.Tensor]:
    """Their detector's ``net.*`` keys -> ``FrameModel`` keys."""
    converted = {}
    for key, value in state.items():
        if key.startswith("module."):  # saved from DataParallel
            key = key[len("module.") :]
        if not key.startswith("net."):
            raise CheckpointError(f"unexpected key {key!r}: an SBI checkpoint's weights live under 'net.'")
        key = key[len("net.") :]
        converted["head." + key[len("_fc.") :] if key.startswith("_fc.") else "backbone." + key] = value
    return converted


def load_sbi(path: str, map_location: str = "cpu") -> LoadedCheckpoint:
    """``sbi:PATH`` -> a frame model with the SBI authors' weights."""
    source = f"sbi:{path}"
    data = _read_bytes(path)
    payload = _unpickle(data, source, map_location)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{source} is not an SBI checkpoint (expected a dict with a 'model' state dict)")
    card = sbi_card()
    with torch.random.fork_rng(devices=[]):
        model = FrameModel(SBI_ARCH, num_classes=2, dropout=0.0)
    _load_state(model, convert_sbi_state(payload["model"]), SBI_ARCH, source)
    card.embedding_dim = model.embedding_dim
    sha = hashlib.sha256(data).hexdigest()
    logger.info("loaded SBI checkpoint %s (sha256 %s)", path, sha[:12])
    return _ready(card, model, None, sha, source, map_location)
