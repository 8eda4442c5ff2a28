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
"""
from __future__ import annotations

from dataclasses import dataclass

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
