"""How a face crop is cut from a frame: the one definition for training and scanning.

A model is trained on crops cut one way and must be shown crops cut the same way.
Its checkpoint's card names the way (``ModelCard.crop``); the scan, ``extract``,
``evaluate``, the report's thumbnails and Grad-CAM all cut crops from that spec.

Two policies:

- ``aligned``: the similarity transform of the face's five landmarks onto a fixed
  template (``models.align``), with ``margin`` context, into a ``size`` square;
- ``box``: the detector box grown by ``box_margins`` (left, top, right, bottom, as
  fractions of the box's width or height), clamped to the frame, and resized to
  ``size`` x ``size`` without keeping the aspect ratio (as the Self-Blended Images
  authors' released detectors were trained and published).

The ``box`` rule, exactly as the SBI authors' test phase cuts it (their
``crop_face(..., crop_by_bbox=True, phase='test')`` in ``src/utils/funcs.py`` and
``src/inference/preprocess.py``), for a box ``(x0, y0, x1, y1)`` in frame pixels
of a ``W`` x ``H`` frame, with ``w = x1 - x0`` and ``h = y1 - y0``::

    left   = max(0, int(x0 - w * m_left))
    top    = max(0, int(y0 - h * m_top))
    right  = min(W, int(x1 + w * m_right) + 1)
    bottom = min(H, int(y1 + h * m_bottom) + 1)
    crop   = cv2.resize(frame[top:bottom, left:right], (size, size))  # bilinear

``int`` truncates toward zero (Python's, not a floor), the far edges get one more
pixel, and the slice is then resized bilinearly (OpenCV's default interpolation)
to a square, whatever its aspect ratio. Their test-phase margins are a quarter of
the box halved: 0.125 on every side. A box lying wholly outside the frame (their
code fails on the empty slice) gets the one-pixel strip of the frame nearest it,
so a stray interpolated box costs a meaningless crop, never the input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from models.align import align_face

ALIGNED = "aligned"
BOX = "box"
POLICIES = (ALIGNED, BOX)


@dataclass(frozen=True)
class CropSpec:
    """Policy, size and margins of a model's face crops.

    Attributes:
        policy: ``"aligned"`` or ``"box"``.
        size: Side of the square crop in pixels (the model's input size).
        margin: ``aligned``: context on each side, as a fraction of the template's face box.
        box_margins: ``box``: growth on the left, top, right and bottom.
    """

    policy: str
    size: int
    margin: float = 0.25
    box_margins: tuple[float, float, float, float] = (0.125, 0.125, 0.125, 0.125)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"crop policy must be one of {list(POLICIES)}, got {self.policy!r}")
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"crop size must be a positive int, got {self.size!r}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"crop margin must be in [0, 2], got {self.margin}")
        margins = tuple(float(m) for m in self.box_margins)
        if len(margins) != 4 or any(not 0.0 <= m <= 2.0 for m in margins):
            raise ValueError(f"box margins must be 4 numbers in [0, 2], got {self.box_margins!r}")
        object.__setattr__(self, "box_margins", margins)

    def describe(self) -> str:
        """One line for messages and logs, e.g. ``aligned 224 px, margin 0.25``."""
        if self.policy == ALIGNED:
            return f"aligned {self.size} px, margin {self.margin:g}"
        return f"box {self.size} px, margins {'/'.join(f'{m:g}' for m in self.box_margins)}"


def box_crop_region(
    box: Sequence[float], frame_h: int, frame_w: int, box_margins: Sequence[float]
) -> tuple[int, int, int, int]:
    """The slice ``frame[y0:y1, x0:x1]`` a ``box`` crop takes, as ``(x0, y0, x1, y1)``.

    Args:
        box: ``(x0, y0, x1, y1)`` in the frame's pixels (floats, as the detector gives them).
        frame_h: Frame height in pixels.
        frame_w: Frame width in pixels.
        box_margins: Growth on the left, top, right and bottom, as fractions of the
            box's width (left, right) or height (top, bottom).

    Raises:
        ValueError: If the box or the frame size is not finite and positive.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"face box must be 4 finite numbers, got {tuple(box)}")
    if frame_h <= 0 or frame_w <= 0:
        raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
    m_left, m_top, m_right, m_bottom = (float(m) for m in box_margins)
    w, h = x1 - x0, y1 - y0
    left = max(0, int(x0 - w * m_left))
    top = max(0, int(y0 - h * m_top))
    right = min(frame_w, int(x1 + w * m_right) + 1)
    bottom = min(frame_h, int(y1 + h * m_bottom) + 1)
    # Only where the rule above gives an empty slice: the frame's edge strip nearest the box.
    left, top = min(left, frame_w - 1), min(top, frame_h - 1)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def cut_box_crop(frame: np.ndarray, box: Sequence[float], spec: CropSpec) -> np.ndarray:
    """The ``spec.size`` x ``spec.size`` x 3 uint8 ``box`` crop of one face of ``frame`` (H x W x 3 uint8)."""
    if spec.policy != BOX:
        raise ValueError(f"cut_box_crop needs a 'box' crop spec, got {spec.describe()}")
    x0, y0, x1, y1 = box_crop_region(box, frame.shape[0], frame.shape[1], spec.box_margins)
    return cv2.resize(frame[y0:y1, x0:x1], (spec.size, spec.size), interpolation=cv2.INTER_LINEAR)


def cut_aligned_crop(frame: np.ndarray, landmarks: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The ``aligned`` crop of one face from its five landmarks (see ``models.align``)."""
    if spec.policy != ALIGNED:
        raise ValueError(f"cut_aligned_crop needs an 'aligned' crop spec, got {spec.describe()}")
    return align_face(frame, landmarks, spec.size, spec.margin)[0]
