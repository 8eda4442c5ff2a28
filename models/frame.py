"""Frame-level classifier: an EfficientNet backbone, pooled embedding and linear head.

Backbones are built by name only (random weights; nothing is downloaded): the
B0-B7 family by ``efficientnet_pytorch`` itself, EfficientNet-Lite0/1/2 from the
same package's building blocks (:class:`EfficientNetLite`). ImageNet weights for
the Lite family come from :mod:`models.pretrained`. The backbone's own
classifier is never built, so a state dict holds only the weights this model uses.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import BlockArgs, GlobalParams, efficientnet, round_filters, round_repeats
from torch import nn
from torch.nn import functional as F

from models.registry import register_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiteSpec:
    """Scaling of one EfficientNet-Lite variant (the TensorFlow reference's table).

    Attributes:
        width: Channel multiplier of the blocks (not of the stem or head).
        depth: Repeat multiplier of the blocks (not of the first or last stage).
        input_size: Native square input side in pixels.
        dropout: Dropout before the ImageNet classifier.
    """

    width: float
    depth: float
    input_size: int
    dropout: float


# EfficientNet-Lite stem width, as in B0; Lite never scales it.
_LITE_STEM_CHANNELS = 32
_LITE_SPECS: dict[str, LiteSpec] = {
    "efficientnet-lite0": LiteSpec(width=1.0, depth=1.0, input_size=224, dropout=0.2),
    "efficientnet-lite1": LiteSpec(width=1.0, depth=1.1, input_size=240, dropout=0.2),
    "efficientnet-lite2": LiteSpec(width=1.1, depth=1.2, input_size=260, dropout=0.3),
}

# Native input resolution of each EfficientNet variant (Tan & Le 2019).
_INPUT_SIZES: dict[str, int] = {
    "efficientnet-b0": 224,
    "efficientnet-b1": 240,
    "efficientnet-b2": 260,
    "efficientnet-b3": 300,
    "efficientnet-b4": 380,
    "efficientnet-b5": 456,
    "efficientnet-b6": 528,
    "efficientnet-b7": 600,
    **{arch: spec.input_size for arch, spec in _LITE_SPECS.items()},
}


def default_input_size(arch: str) -> int:
    """Native square input size in pixels of an EfficientNet ``arch``.

    Raises:
        ValueError: For an architecture without a known size.
    """
    try:
        return _INPUT_SIZES[arch]
    except KeyError:
        raise ValueError(
            f"unknown frame architecture {arch!r}; valid: {', '.join(_INPUT_SIZES)}"
        ) from None


class EfficientNetLite(EfficientNet):
    """EfficientNet-Lite: B0's blocks without squeeze-excitation, and ReLU6 for swish.

    Lite also keeps the stem (32 channels), the head (1280) and the repeats of the
    first and last stage fixed while it scales everything else. The parent class
    would scale stem and head with the width, so :func:`lite_arguments` hands it
    block arguments that are already scaled and global parameters without
    coefficients, for which the parent's rounding is the identity.

    The activations keep the parent's attribute name ``_swish``, which its forward
    calls; here each one is a ``ReLU6``.
    """

    def __init__(self, blocks_args: list[BlockArgs], global_params: GlobalParams):
        super().__init__(blocks_args, global_params)
        self._swish = nn.ReLU6()
        for block in self._blocks:
            block._swish = nn.ReLU6()

    def set_swish(self, memory_efficient: bool = True) -> None:
        """A no-op: Lite has no swish to switch, and its ReLU6 must stay."""


def lite_arguments(
    spec: LiteSpec, include_top: bool = False, num_classes: int = 1000
) -> tuple[list[BlockArgs], GlobalParams]:
    """``efficientnet_pytorch`` block and global arguments of an EfficientNet-Lite variant.

    The blocks are B0's with ``se_ratio`` None, their channels scaled by
    ``spec.width`` and their repeats by ``spec.depth``, except the first and last
    stage's repeats; the first block takes the unscaled stem's 32 channels.
    """
    blocks_args, params = efficientnet(
        width_coefficient=spec.width,
        depth_coefficient=spec.depth,
        image_size=spec.input_size,
        dropout_rate=spec.dropout,
        num_classes=num_classes,
        include_top=include_top,
    )
    last = len(blocks_args) - 1
    scaled = [
        args._replace(
            se_ratio=None,
            input_filters=_LITE_STEM_CHANNELS if i == 0 else round_filters(args.input_filters, params),
            output_filters=round_filters(args.output_filters, params),
            num_repeat=args.num_repeat if i in (0, last) else round_repeats(args.num_repeat, params),
        )
        for i, args in enumerate(blocks_args)
    ]
    return scaled, params._replace(width_coefficient=None, depth_coefficient=None)


def build_backbone(arch: str, include_top: bool = False, num_classes: int = 1000) -> EfficientNet:
    """A randomly initialised EfficientNet ``arch`` (B0-B7 or Lite0-2).

    Args:
        arch: Frame architecture name, e.g. ``"efficientnet-lite0"``.
        include_top: Also build the network's own dropout and ``num_classes``-way ``_fc``.
        num_classes: Width of ``_fc`` when ``include_top``.

    Raises:
        ValueError: For an unknown architecture, listing the valid ones.
    """
    default_input_size(arch)  # validates the name
    spec = _LITE_SPECS.get(arch)
    if spec is None:
        return EfficientNet.from_name(arch, include_top=include_top, num_classes=num_classes)
    return EfficientNetLite(*lite_arguments(spec, include_top=include_top, num_classes=num_classes))


class FrameModel(nn.Module):
    """EfficientNet features -> global average pool (embedding) -> dropout -> linear.

    Attributes:
        arch: Backbone name, e.g. ``"efficientnet-b0"`` or ``"efficientnet-lite0"``.
        num_classes: Width of the linear head.
        embedding_dim: Width of the pooled embedding (1280 for b0 and every Lite, 1792 for b4).
    """

    def __init__(
        self,
        arch: str = "efficientnet-b0",
        num_classes: int = 2,
        dropout: float = 0.2,
        manipulation_classes: int = 0,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.arch = arch
        self.num_classes = num_classes
        # include_top=False: the backbone builds neither its dropout nor its 1000-way _fc.
        self.backbone = build_backbone(arch, include_top=False)
        self.embedding_dim: int = self.backbone._conv_head.out_channels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.embedding_dim, num_classes)
        # Optional second head: which method made a fake (trained on fakes only).
        self.manipulation_head = (
            nn.Linear(self.embedding_dim, manipulation_classes) if manipulation_classes > 0 else None
        )

    def for_inference(self) -> "FrameModel":
        """Use the plain swish (x * sigmoid(x)): faster, and traceable, when nothing is trained.

        A Lite backbone has ReLU6 instead of swish and keeps it.
        """
        self.backbone.set_swish(memory_efficient=False)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last feature map ``[B, embedding_dim, h, w]`` (what Grad-CAM looks at)."""
        return self.backbone.extract_features(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Classify a batch of normalised face crops.

        Args:
            x: Images ``[B, 3, H, W]``, normalised as the model card says.

        Returns:
            ``{"logits": [B, num_classes], "embedding": [B, embedding_dim]}``, plus
            ``"manipulation_logits"`` when the model has a manipulation head.
        """
        features = self.features(x)
        embedding = F.adaptive_avg_pool2d(features, 1).flatten(1)
        dropped = self.dropout(embedding)
        out = {"logits": self.head(dropped), "embedding": embedding}
        if self.manipulation_head is not None:
            out["manipulation_logits"] = self.manipulation_head(dropped)
        return out


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor | Iterable[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``images`` (one batch, or several).

    A freshly initialised EfficientNet keeps the default statistics (mean 0,
    variance 1), which do not match its activations: in eval mode the signal
    then shrinks block after block until the outputs no longer depend on the
    input. Untrained smoke-test weights are calibrated with this; trained
    weights never need it; a weight average (EMA) does, since the statistics of
    the moving weights do not fit the averaged ones. Use images at the size the
    model will see: statistics taken at another size do not carry over. Several
    batches are averaged with equal weight.

    Returns:
        ``model``, in the train/eval mode it had before.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the statistics outright
        model.train()
        for batch in [images] if isinstance(images, torch.Tensor) else images:
            model(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


def _constructor(arch: str) -> Callable[..., FrameModel]:
    def build(num_classes: int = 2, dropout: float = 0.2, manipulation_classes: int = 0) -> FrameModel:
        return FrameModel(arch, num_classes=num_classes, dropout=dropout, manipulation_classes=manipulation_classes)

    build.__name__ = build.__qualname__ = arch.replace("-", "_")
    build.__doc__ = f"{arch} frame classifier (input {_INPUT_SIZES[arch]} px)."
    return build


for _arch in _INPUT_SIZES:
    register_model(_arch, kind="frame")(_constructor(_arch))
