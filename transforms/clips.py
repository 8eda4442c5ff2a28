"""What a decoder hands back: a file's description, decoded clips, and the clip held in the decoder process.

Every decoder (``transforms.decoders``) describes a file with a ``Probe`` and
answers a request for frames with a ``Clip``. The scan keeps a decoded clip
where it was decoded (``HeldClip``) and takes only small copies and face crops
out of it. The frame helpers at the end are shared by the decoders.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from models.crops import CropSpec


@dataclass
class Probe:
    """What a decoder learned about a file before decoding frames."""

    num_frames: int
    fps: float
    width: int  # display size of the source (after rotation), in pixels
    height: int
    duration_s: float
    codec: Optional[str]
    decoded_width: int  # size of the frames ``read`` returns (after rotation and downscaling)
    decoded_height: int
    rotation: int = 0  # degrees counterclockwise applied to decoded frames for display
    container_frames: Optional[int] = None  # frame count written in the container header, if any
    notes: list[str] = field(default_factory=list)
    keyframes: Optional[list[int]] = None  # indices of the frames a seek lands on, when the index tells

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Clip:
    """Frames a decoder returned for one request."""

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    timestamps: list[float]  # seconds
    indices: list[int]  # frame index of each returned frame (a subset of those asked for)
    notes: list[str] = field(default_factory=list)


class HeldClip:
    """A decoded clip kept where it was decoded: only small copies and face crops leave it.

    The full-resolution frames of a 1080p clip are 150 MB; the worker needs a
    downscaled copy of a few of them for detection and the faces' crops (aligned,
    ``warp``, or cut around their boxes, ``crop_boxes``), so that is all that
    crosses the process boundary.
    """

    def __init__(self, clip: Clip):
        self.clip = clip

    def summary(self) -> dict:
        frames = self.clip.frames
        repeats = repeated_frames(frames) if len(frames) > 1 else 0
        return {"shape": list(frames.shape), "timestamps": self.clip.timestamps, "indices": self.clip.indices,
                "notes": self.clip.notes, "repeats": repeats}

    def downscaled(self, positions: Sequence[int], width: int, height: int) -> np.ndarray:
        """``(len(positions), height, width, 3)`` copies (area interpolation) of the held frames."""
        import cv2

        frames = self.clip.frames
        if (width, height) == (frames.shape[2], frames.shape[1]):
            return np.ascontiguousarray(frames[list(positions)])
        out = np.empty((len(positions), height, width, 3), np.uint8)
        for k, pos in enumerate(positions):
            cv2.resize(frames[pos], (width, height), dst=out[k], interpolation=cv2.INTER_AREA)
        return out

    def warp(self, positions: Sequence[int], matrices: np.ndarray, size: int) -> np.ndarray:
        """Aligned ``size`` x ``size`` crops: frame ``positions[k]`` warped by ``matrices[k]`` (2x3)."""
        from models.align import warp_face

        out = np.empty((len(positions), size, size, 3), np.uint8)
        for k, (pos, matrix) in enumerate(zip(positions, np.asarray(matrices, np.float32).reshape(-1, 2, 3))):
            out[k] = warp_face(self.clip.frames[pos], matrix, size)
        return out

    def crop_boxes(self, positions: Sequence[int], boxes: np.ndarray, spec: CropSpec) -> np.ndarray:
        """``box`` crops (``models.crops.cut_box_crop``): the face at ``boxes[k]`` of frame ``positions[k]``.

        Args:
            positions: Frame positions within the held clip.
            boxes: ``(len(positions), 4)`` boxes ``x0, y0, x1, y1`` in the held frames' pixels.
            spec: The crop spec, policy ``box``.

        Returns:
            ``(len(positions), spec.size, spec.size, 3)`` uint8.
        """
        from models.crops import cut_box_crop

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) != len(positions):
            raise ValueError(f"{len(positions)} frame positions but {len(boxes)} boxes")
        out = np.empty((len(positions), spec.size, spec.size, 3), np.uint8)
        for k, (pos, box) in enumerate(zip(positions, boxes)):
            out[k] = cut_box_crop(self.clip.frames[pos], box, spec)
        return out


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled down so the longer side is at most ``max_side`` (even sizes)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counterclockwise, multiples of 90) to ``(n, H, W, 3)`` frames."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=turns, axes=(1, 2))) if turns else frames


def repeated_frames(frames: np.ndarray) -> int:
    """How many frames are byte-identical to the frame before them.

    Decoders that cannot decode a frame sometimes hand back the previous one
    instead of failing; in camera footage two identical consecutive frames are
    rare, so the count is recorded as a warning (static screen content can
    repeat honestly, so it never changes a status by itself). Every 16th row is
    compared first, so differing frames (nearly all) cost little.
    """
    return sum(
        1
        for i in range(1, len(frames))
        if np.array_equal(frames[i, ::16], frames[i - 1, ::16]) and np.array_equal(frames[i], frames[i - 1])
    )
