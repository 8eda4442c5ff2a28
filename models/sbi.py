"""Loading the Self-Blended Images authors' released detectors as a frame model.

Shiohara and Yamasaki (CVPR 2022) released EfficientNet-B4 checkpoints: a dict
whose ``"model"`` entry is their detector's state dict, an efficientnet-pytorch
B4 with a 2-class head stored under ``net.``. We map those weights onto
``FrameModel`` (backbone <- ``net.*``, head <- ``net._fc``), which computes the
same function, and describe them with a card that feeds them as the authors'
inference code does (``src/inference/preprocess.py`` and ``inference_video.py``
in github.com/mapooon/SelfBlendedImages):

- crops: the detector box grown by an eighth of its width (left, right) and of
  its height (top, bottom), truncated to integer pixels and clamped to the frame,
  then resized bilinearly to 380x380 (``models.crops``, policy ``box``);
- pixels: RGB, divided by 255, no mean/std normalisation;
- output: ``softmax(logits)[:, 1]`` is the fake probability (class 1 = fake);
- aggregation (``sbi``): per frame the maximum over the faces at least half the
  area of the frame's largest, per video the mean over frames; no sequence model.

What still differs from their pipeline: they detect faces with RetinaFace
(ResNet-50), we with MTCNN, so the boxes, and with them the crops, differ.
"""
from __future__ import annotations

import hashlib
import logging

import torch

from models.card import ModelCard
from models.checkpoint_io import CheckpointError, LoadedCheckpoint, load_state, read_bytes, ready, unpickle
from models.frame import FrameModel

logger = logging.getLogger(__name__)

SBI_ARCH = "efficientnet-b4"
SBI_INPUT_SIZE = 380
# Their test phase: a margin of a quarter of the box side, halved (crop_face, phase='test').
SBI_BOX_MARGINS = (0.125, 0.125, 0.125, 0.125)


def sbi_card(name: str = "sbi-efficientnet-b4") -> ModelCard:
    """The card of the authors' released B4: their crops, pixels, classes and aggregation."""
    return ModelCard(
        name=name,
        frame_arch=SBI_ARCH,
        input_size=SBI_INPUT_SIZE,
        crop_policy="box",
        box_margins=SBI_BOX_MARGINS,
        pixel_range=(0.0, 1.0),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        class_names=("real", "fake"),
        fake_class="fake",
        threshold=0.5,
        precision="fp32",  # their inference runs fp32; bf16 moves scores by about their tolerance
        aggregator="sbi",
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
    data = read_bytes(path)
    payload = unpickle(data, source, map_location)
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise CheckpointError(f"{source} is not an SBI checkpoint (expected a dict with a 'model' state dict)")
    card = sbi_card()
    with torch.random.fork_rng(devices=[]):
        model = FrameModel(SBI_ARCH, num_classes=2, dropout=0.0)
    load_state(model, convert_sbi_state(payload["model"]), SBI_ARCH, source)
    card.embedding_dim = model.embedding_dim
    sha = hashlib.sha256(data).hexdigest()
    logger.info("loaded SBI checkpoint %s (sha256 %s)", path, sha[:12])
    return ready(card, model, None, sha, source, map_location)
