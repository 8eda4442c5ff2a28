"""Face-crop preprocessing, defined once for training and scanning.

Both the training data loader and the scanner build a :class:`FacePreprocess`
from the model card, so the pixels a model sees at scan time are prepared
exactly as they were during training. Crops are cut at the model's input size
(``models.crops``); a crop of any other size is refused, never resized to fit.
"""
from __future__ import annotations

import logging
from typing import Sequence, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

Crops = Union[np.ndarray, torch.Tensor, Sequence[np.ndarray]]


class CropSizeError(ValueError):
    """A face crop is not the size the model takes."""


class FacePreprocess:
    """uint8 RGB crops ``[N, S, S, 3]`` -> normalised float32 ``[N, 3, S, S]`` in channels_last.

    Pixels 0..255 map linearly onto ``pixel_range`` and are then normalised per
    channel with ``mean``/``std`` (``(0, 0, 0)``/``(1, 1, 1)``: not at all). Crops
    whose side is not ``input_size`` raise :class:`CropSizeError`: they were cut
    for another model, and resizing them would silently feed this one pixels it
    was never trained on.
    """

    def __init__(
        self,
        *,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        pixel_range: Sequence[float] = (0.0, 1.0),
    ):
        if int(input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {input_size}")
        mean_t = torch.as_tensor(tuple(mean), dtype=torch.float32)
        std_t = torch.as_tensor(tuple(std), dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,):
            raise ValueError(f"mean and std need 3 values each, got {tuple(mean)} and {tuple(std)}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        low, high = (float(v) for v in pixel_range)
        if not low < high:
            raise ValueError(f"pixel_range must be (low, high) with low < high, got {tuple(pixel_range)}")
        self.input_size = int(input_size)
        self.mean = tuple(mean_t.tolist())
        self.std = tuple(std_t.tolist())
        self.pixel_range = (low, high)
        # x_norm = (low + x / 255 * (high - low) - mean) / std = x * scale + shift
        self._scale = ((high - low) / (255.0 * std_t)).view(1, 3, 1, 1)
        self._shift = ((low - mean_t) / std_t).view(1, 3, 1, 1)

    @classmethod
    def from_card(cls, card) -> FacePreprocess:
        """Preprocessing for the model described by a :class:`~models.card.ModelCard`."""
        return cls(input_size=card.input_size, mean=card.mean, std=card.std, pixel_range=card.pixel_range)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(input_size={self.input_size}, pixel_range={self.pixel_range}, "
                f"mean={self.mean}, std={self.std})")

    def __call__(self, crops: Crops) -> torch.Tensor:
        """Prepare a batch of crops for the frame model.

        Args:
            crops: uint8 RGB crops as an ``[N, S, S, 3]`` numpy array or torch tensor,
                or a list of ``[S, S, 3]`` arrays, ``S`` being ``input_size``.

        Returns:
            Float32 ``[N, 3, input_size, input_size]``, channels_last, on the input's device.

        Raises:
            CropSizeError: If a crop is not ``input_size`` x ``input_size``.
        """
        if isinstance(crops, (list, tuple)):
            if not crops:
                return self._empty(torch.device("cpu"))
            arrays = [_as_uint8_nhwc(c[None] if getattr(c, "ndim", 0) == 3 else c) for c in crops]
            for a in arrays:
                self._check_size(a)
            return self._process(torch.cat(arrays))
        return self._process(self._check_size(_as_uint8_nhwc(crops)))

    def _check_size(self, nhwc: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if nhwc.shape[0] and tuple(nhwc.shape[1:3]) != (s, s):
            height, width = nhwc.shape[1:3]
            raise CropSizeError(
                f"face crops are {width}x{height} px but the model takes {s}x{s}: crops must be cut at "
                "the model's input size (its card's crop spec), they are never resized to fit"
            )
        return nhwc

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
