"""What the held-out families share once the mesh is placed: input checks, soft masks,
colour transfer, and the result every family returns.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.families.mesh import face_points


@dataclass(frozen=True)
class FamilyResult:
    """A manipulated image, where it changed (float32 ``HxW`` in ``[0, 1]``) and the drawn values."""

    image: np.ndarray
    mask: np.ndarray
    params: dict[str, float | str]


def check_face(image: np.ndarray, landmarks: np.ndarray, name: str) -> np.ndarray:
    """The face's mesh points, once ``image`` is known to be uint8 ``HxWx3`` (``ValueError`` naming it)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 HxWx3, got {image.dtype} {image.shape}")
    return face_points(landmarks)


def feathered_mask(mask: np.ndarray, erode_px: float, sigma_px: float) -> np.ndarray:
    """A 0/255 mask eroded then Gaussian-feathered, as float32 in ``[0, 1]``."""
    radius = int(round(erode_px))
    if radius >= 1:
        mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                         (2 * radius + 1, 2 * radius + 1)))
    soft = mask.astype(np.float32) / 255.0
    if sigma_px > 0.1:
        soft = cv2.GaussianBlur(soft, (0, 0), sigma_px)
    soft[soft < 1e-3] = 0.0
    return soft


_MAX_CONTRAST_GAIN = 1.3


def transfer_colour(source: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                     strength: float = 1.0) -> np.ndarray:
    """Reinhard colour transfer: match Lab mean and std of ``source`` to ``reference`` in ``mask``."""
    inside = mask > 0
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src[inside].mean(axis=0), src[inside].std(axis=0) + 1e-3
    r_mean, r_std = ref[inside].mean(axis=0), ref[inside].std(axis=0) + 1e-3
    # Contrast may fall freely but rise only a little, as colour-transfer tools clip it: an
    # unbounded gain turns a low-contrast donor's nostrils and lips into black holes.
    ratio = np.clip(r_std / s_std, 0.5, _MAX_CONTRAST_GAIN)
    matched = (src - s_mean) * ratio + r_mean
    lab = np.clip(src + strength * (matched - src), 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
