"""The faces every synthetic set is filmed from: scikit-image's photos, with their landmarks.

The astronaut portrait and the first 100 faces of scikit-image's LFW subset
(``lfw0`` ... ``lfw99``) ship with scikit-image, so no set needs a download.
An LFW face is a small gray crop: it is upscaled, smoothed and tinted one of
five skin tones. MTCNN finds each face once (its five landmarks and box, rounded
to a quarter pixel so detector noise never reaches the output bytes); a
portrait at another size is drawn afresh at that size, not resampled from a
smaller one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import cv2
import numpy as np
import skimage.data

from models.torchvision_compat import import_facenet_mtcnn

logger = logging.getLogger(__name__)

ASTRONAUT = "astronaut"
LFW_FACES = 100  # the first 100 images of scikit-image's LFW subset are faces

_LFW_SIZE = 150  # canonical upscaled LFW portrait, reliably detected by MTCNN
_ASTRONAUT_CROP = (slice(0, 215), slice(115, 335))  # head; little of the suit's folds
_SKIN_TONES = ((0.86, 0.66, 0.55), (0.74, 0.54, 0.42), (0.56, 0.39, 0.29),
               (0.92, 0.75, 0.63), (0.66, 0.48, 0.35))
_SHADOW = np.array([0.07, 0.05, 0.045])


@dataclass(frozen=True)
class Portrait:
    """A face photo with its MTCNN landmarks and face box (x1, y1, x2, y2), in its pixels."""

    image: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray


class Faces(Protocol):
    """What filming reads of a face source: a portrait per identity, at a face height in pixels.

    :class:`FaceSource` is one; the training set restyles its portraits, and the
    cross-manipulation set manipulates them, by wrapping or extending it.
    """

    def portrait(self, identity: str, face_px: float) -> Portrait: ...


def lfw_identities(count: int) -> list[str]:
    """The first ``count`` LFW identities (at most all 100), in order."""
    return [f"lfw{i}" for i in range(min(count, LFW_FACES))]


def scale_portrait(canonical: Portrait, face_px: float,
                   draw: Optional[Callable[[tuple[int, int]], np.ndarray]] = None) -> Portrait:
    """``canonical`` scaled so that its face box is ``face_px`` tall.

    ``draw(size)`` makes the image at the new ``(width, height)``; by default the
    canonical image is resized. Landmarks and box follow the scale exactly.
    """
    scale = face_px / float(canonical.box[3] - canonical.box[1])
    height, width = canonical.image.shape[:2]
    size = (max(int(round(width * scale)), 2), max(int(round(height * scale)), 2))
    if draw is None:
        flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        image = cv2.resize(canonical.image, size, interpolation=flags)
    else:
        image = draw(size)
    factor = np.array(size, dtype=np.float64) / (width, height)
    box = (canonical.box.reshape(2, 2) + 0.5) * factor - 0.5
    return Portrait(image, (canonical.landmarks + 0.5) * factor - 0.5, box.ravel())


class FaceSource:
    """Portraits of the source identities; MTCNN is built on first use."""

    def __init__(self) -> None:
        self._detector = None
        self._canonical: dict[str, Portrait] = {}
        self._lfw: np.ndarray | None = None

    def portrait(self, identity: str, face_px: float) -> Portrait:
        """The identity's portrait scaled so that its face box is ``face_px`` tall."""
        canonical = self._canonical_portrait(identity)
        if identity == ASTRONAUT:
            return scale_portrait(canonical, face_px)
        return scale_portrait(canonical, face_px, lambda size: self._source(identity, size[0]))

    def _detect(self, rgb: np.ndarray, identity: str) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks of the most confident face MTCNN finds; RuntimeError if none."""
        if self._detector is None:
            self._detector = import_facenet_mtcnn()(keep_all=True, device="cpu", min_face_size=60)
        boxes, probs, points = self._detector.detect(rgb, landmarks=True)
        if boxes is None:
            raise RuntimeError(f"MTCNN finds no face in source photo {identity!r}")
        best = int(np.argmax(probs))
        box = np.asarray(boxes[best], dtype=np.float64)
        points = np.asarray(points[best], dtype=np.float64)
        # Quarter-pixel rounding keeps float noise of the detector out of the output bytes.
        return np.round(box * 4) / 4, np.round(points * 4) / 4

    def _source(self, identity: str, size: int = _LFW_SIZE) -> np.ndarray:
        """The identity's photo; an LFW face is upscaled to ``size`` and tinted a skin tone."""
        if identity == ASTRONAUT:
            return np.ascontiguousarray(skimage.data.astronaut()[_ASTRONAUT_CROP])
        if not identity.startswith("lfw") or not 0 <= int(identity[3:]) < LFW_FACES:
            raise ValueError(f"unknown identity {identity!r}")
        if self._lfw is None:
            self._lfw = skimage.data.lfw_subset()[:LFW_FACES]
        index = int(identity[3:])
        gray = self._lfw[index].astype(np.float32)
        low, high = np.percentile(gray, (1, 99))
        gray = np.clip((gray - low) / max(high - low, 1e-3), 0, 1)
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
        gray = np.clip(cv2.GaussianBlur(gray, (0, 0), 0.25 * size / 25), 0, 1)  # no pixel blocks
        tone = np.asarray(_SKIN_TONES[index % len(_SKIN_TONES)])
        stops = np.stack([_SHADOW, tone, 1.0 - 0.3 * (1.0 - tone)])  # shadow, skin, highlight
        rgb = np.stack([np.interp(gray, (0.0, 0.5, 1.0), stops[:, c]) for c in range(3)], axis=-1)
        return np.round(255 * rgb).astype(np.uint8)

    def _canonical_portrait(self, identity: str) -> Portrait:
        if identity not in self._canonical:
            image = self._source(identity)
            if identity == ASTRONAUT:
                box, points = self._detect(image, identity)
            else:  # MTCNN needs context around the tight LFW crop
                pad = _LFW_SIZE // 2
                canvas = np.full((2 * _LFW_SIZE, 2 * _LFW_SIZE, 3), 128, np.uint8)
                canvas[pad:pad + _LFW_SIZE, pad:pad + _LFW_SIZE] = image
                box, points = self._detect(canvas, identity)
                box, points = box - pad, points - pad
            self._canonical[identity] = Portrait(image, points, box)
            logger.debug("landmarks of %s: %s", identity, points.tolist())
        return self._canonical[identity]
