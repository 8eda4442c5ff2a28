"""Face-crop preprocessing, defined once for training and scanning.

Both the training data loader and the scanner build a :class:`FacePreprocess`
from the model card, so the pixels a model sees at scan time are prepared
exactly as they were during training.
"""
from __future__ import annotations

import logging
from typing import Sequence, Union

import numpy as np
import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)

Crops = Union[np.ndarray, torch.Tensor, Sequence[np.ndarray]]


class FacePreprocess:
    """uint8 RGB crops ``[N, H, W, 3]`` -> normalised float32 ``[N, 3, S, S]`` in channels_last.

    Pixels are scaled to [0, 1] and normalised per channel with ``mean``/``std``;
    crops whose side is not ``input_size`` are resized with antialiased bilinear
    interpolation (which commutes with the per-channel normalisation).
    """

    def __init__(self, *, input_size: int, mean: Sequence[float], std: Sequence[float]):
        if int(input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {input_size}")
        mean_t = torch.as_tensor(tuple(mean), dtype=torch.float32)
        std_t = torch.as_tensor(tuple(std), dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,):
            raise ValueError(f"mean and std need 3 values each, got {tuple(mean)} and {tuple(std)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.input_size = int(input_size)
        self.mean = tuple(mean_t.tolist())
        self.std = tuple(std_t.tolist())
        # x_norm = (x / 255 - mean) / std = x * scale + shift
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1)
        self._shift = (-mean_t / std_t).view(1, 3, 1, 1)

    @classmethod
    def from_card(cls, card) -> FacePreprocess:
        """Preprocessing for the model described by a :class:`~models.card.ModelCard`."""
        return cls(input_size=card.input_size, mean=card.mean, std=card.std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(input_size={self.input_size}, mean={self.mean}, std={self.std})"

    def __call__(self, crops: Crops) -> torch.Tensor:
        """Prepare a batch of crops for the frame model.

        Args:
            crops: uint8 RGB crops as an ``[N, H, W, 3]`` numpy array or torch tensor,
                or a list of ``[H, W, 3]`` arrays (sizes may differ).

        Returns:
            Float32 ``[N, 3, input_size, input_size]``, channels_last, on the input's device.
        """
        if isinstance(crops, (list, tuple)):
            return self._from_list(crops)
        return self._process(_as_uint8_nhwc(crops))

    def _from_list(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        if not crops:
            return self._empty(torch.device("cpu"))
        arrays = [_as_uint8_nhwc(c[None] if getattr(c, "ndim", 0) == 3 else c) for c in crops]
        if len({tuple(a.shape[1:]) for a in arrays}) == 1:
            return self._process(torch.cat(arrays))
        out = torch.cat([self._process(a) for a in arrays])  # mixed sizes: resize one by one
        return out.contiguous(memory_format=torch.channels_last)

    def _empty(self, device: torch.device) -> torch.Tensor:
        s = self.input_size
        return torch.empty((0, 3, s, s), dtype=torch.float32, device=device).contiguous(
            memory_format=torch.channels_last
        )

    def _process(self, nhwc: torch.Tensor) -> torch.Tensor:
        if nhwc.shape[0] == 0:
            return self._empty(nhwc.device)
        # permute of NHWC is an NCHW view with channels_last strides: no copy until .float().
        x = nhwc.permute(0, 3, 1, 2).to(torch.float32)
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        x = x * self._scale.to(x.device) + self._shift.to(x.device)
        return x.contiguous(memory_format=torch.channels_last)


def _as_uint8_nhwc(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate ``[N, H, W, 3]`` uint8 crops and view them as a torch tensor."""
    if isinstance(crops, np.ndarray):
        # torch.from_numpy rejects negative strides (e.g. BGR->RGB via [..., ::-1])
        # and warns on read-only arrays; copy in those cases only.
        if not crops.flags.writeable or any(st < 0 for st in crops.strides):
            crops = np.array(crops, copy=True)
        tensor = torch.from_numpy(crops)
    elif isinstance(crops, torch.Tensor):
        tensor = crops
    else:
        kind = type(crops).__name__
        raise TypeError(f"crops must be a numpy array, torch tensor or list of arrays, got {kind}")
    if tensor.dtype != torch.uint8:
        raise ValueError(f"crops must be uint8 RGB, got dtype {tensor.dtype}")
    if tensor.dim() != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"crops must have shape [N, H, W, 3], got {list(tensor.shape)}")
    return tensor


def encode_crop(crop: np.ndarray) -> bytes:
    """An aligned face crop (``S x S x 3`` uint8 RGB) as lossless PNG bytes.

    Lossless on purpose: re-compressing crops would add an artefact of its own.
    """
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding of a face crop failed")
    return buf.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    """Bytes written by :func:`encode_crop` back to ``S x S x 3`` uint8 RGB."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("a stored face crop is not a valid PNG")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
