"""Soft face masks shaped by five landmarks: where a blend puts its source face.

Landmarks are the five MTCNN points (left eye, right eye, nose, left mouth
corner, right mouth corner) in ``(x, y)`` pixels. Sizes are fractions of
:func:`face_size`, so the same numbers mean the same mask on a 128-pixel
training crop and on a 1080p frame. A mask is an outline (one of
:data:`OUTLINES`: the whole face, or one part of it) scaled about its centroid,
optionally moved by an affine map and bent by a smooth random displacement
field, then filled, eroded or dilated and blurred into a soft edge. Everything is plain numpy/OpenCV and
deterministic given its inputs.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from models.align import estimate_similarity, face_template

logger = logging.getLogger(__name__)

# "face": brows to chin, cheek to cheek (the sample archive's mask); "hull": the convex
# hull of the five landmarks; "oval": a smooth ellipse; "inner": brows, eyes, nose and
# mouth without cheeks, forehead or jaw.
MASK_OUTLINES: tuple[str, ...] = ("face", "hull", "oval", "inner")
# Local parts, for edits of one region as attribute editing and local re-rendering make:
# "eyes": a band over both eyes; "nose": the nose; "mouth": the lips and mouth corners.
PART_OUTLINES: tuple[str, ...] = ("eyes", "nose", "mouth")
OUTLINES: tuple[str, ...] = MASK_OUTLINES + PART_OUTLINES  # every outline a mask can take
FACE_OUTLINE = "face"

# Defaults of the sample archive's blends (see models.manipulate.BlendParams).
DEFAULT_EXPAND = (1.2, 1.6)
DEFAULT_BLUR = (0.02, 0.05)
DEFAULT_MORPH = (-0.03, 0.03)

_OVAL_POINTS = 24
_ELASTIC_GRID = 5  # control points per side of the displacement field: a few bumps per edge


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """``landmarks`` as a float64 ``(5, 2)`` array; raises unless finite and of that shape."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {points.shape}")
    return points


def face_size(landmarks: np.ndarray) -> float:
    """Side in pixels of the ArcFace crop these landmarks fill: roughly the face height."""
    matrix = estimate_similarity(face_template(1, 0.0), check_landmarks(landmarks))
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2].astype(np.float64)))))


def _ellipse(centre: np.ndarray, across: np.ndarray, up: np.ndarray, rx: float,
             ry: float) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * np.pi, _OVAL_POINTS, endpoint=False)[:, None]
    return centre + rx * np.cos(angles) * across + ry * np.sin(angles) * up


def mask_polygon(landmarks: np.ndarray, expand: float, outline: str = FACE_OUTLINE) -> np.ndarray:
    """Vertices ``(n, 2)`` of a face outline scaled by ``expand`` about its centroid.

    Outlines live in the face's own (possibly sheared) frame spanned by the
    eye-to-eye and mouth-to-eye vectors, so they follow roll, scale and some yaw.
    ``"face"`` is the hull of the landmarks and of an oval reaching a little above
    the brows, below the lower lip and onto the cheeks.
    """
    if outline not in OUTLINES:
        raise ValueError(f"unknown mask outline {outline!r}; expected one of {OUTLINES}")
    left_eye, right_eye, nose, left_mouth, right_mouth = landmarks
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
    up, across = eye_mid - mouth_mid, right_eye - left_eye
    centre = (eye_mid + mouth_mid) / 2
    if outline == "face":
        points = np.vstack([landmarks, _ellipse(centre, across, up, 0.85, 0.82)])
    elif outline == "hull":
        points = landmarks
    elif outline == "oval":
        points = _ellipse(centre + 0.1 * up, across, up, 0.75, 0.95)
    elif outline == "eyes":
        points = _ellipse(eye_mid, across, up, 1.0, 0.3)
    elif outline == "nose":
        points = _ellipse(nose + 0.2 * (eye_mid - nose), across, up, 0.32, 0.45)
    elif outline == "mouth":
        points = _ellipse(mouth_mid, across, up, 0.6, 0.24)
    else:  # inner: brows above the eyes, a little below the lower lip, no cheeks
        brows = [left_eye - 0.2 * across + 0.3 * up, right_eye + 0.2 * across + 0.3 * up]
        chin = [left_mouth - 0.05 * across - 0.2 * up, right_mouth + 0.05 * across - 0.2 * up]
        points = np.vstack([landmarks, brows, chin, [nose + 0.2 * (nose - centre)]])
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centroid = hull.mean(axis=0)
    return centroid + expand * (hull - centroid)


def displacement_maps(shape: tuple[int, int], amplitude_px: float, seed: int,
                      grid: int = _ELASTIC_GRID) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps of a smooth random displacement field of typical size ``amplitude_px``.

    ``grid`` control points per side are drawn from ``seed`` and interpolated (bicubic)
    to ``shape``; displacements are clipped to three times the amplitude.
    """
    height, width = shape
    coarse = np.random.default_rng(seed).standard_normal((grid, grid, 2))
    limit = 3.0 * amplitude_px
    field = cv2.resize(coarse.astype(np.float32) * np.float32(amplitude_px), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    field = np.clip(field, -limit, limit)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return xs + field[..., 0], ys + field[..., 1]


def _elastic(roi: np.ndarray, amplitude_px: float, seed: int) -> np.ndarray:
    """Warp ``roi`` by a smooth random displacement field of typical size ``amplitude_px``."""
    map_x, map_y = displacement_maps(roi.shape, amplitude_px, seed)
    return cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def render_mask(
    shape: tuple[int, int],
    landmarks: np.ndarray,
    expand: float,
    morph_px: float,
    blur_px: float,
    *,
    outline: str = FACE_OUTLINE,
    affine: np.ndarray | None = None,
    elastic_px: float = 0.0,
    elastic_seed: int = 0,
) -> np.ndarray:
    """Filled, deformed, eroded/dilated and blurred face outline as float32 ``HxW`` in ``[0, 1]``.

    Args:
        shape: ``(height, width)`` of the mask.
        landmarks: ``(5, 2)`` face landmarks in pixels.
        expand: Outline scale about its centroid.
        morph_px: Erosion (negative) / dilation (positive) radius in pixels.
        blur_px: Soft-edge Gaussian sigma in pixels.
        outline: One of :data:`OUTLINES`.
        affine: Optional ``2x3`` map (pixels) applied to the outline's vertices.
        elastic_px: Typical displacement of the elastic deformation in pixels (0: none).
        elastic_seed: Seed of the displacement field.
    """
    height, width = shape
    polygon = mask_polygon(landmarks, expand, outline)
    if affine is not None:
        matrix = np.asarray(affine, dtype=np.float64).reshape(2, 3)
        polygon = polygon @ matrix[:, :2].T + matrix[:, 2]
    radius = int(round(abs(morph_px)))
    kernel_half = int(np.ceil(3.0 * blur_px)) if blur_px > 0 else 0
    pad = radius + kernel_half + 2 + (int(np.ceil(3.0 * elastic_px)) if elastic_px > 0 else 0)
    x0 = max(int(np.floor(polygon[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(polygon[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(polygon[:, 0].max())) + pad + 1, width)
    y1 = min(int(np.ceil(polygon[:, 1].max())) + pad + 1, height)
    mask = np.zeros((height, width), dtype=np.float32)
    if x1 <= x0 or y1 <= y0:
        logger.warning("face mask polygon lies outside the %dx%d image", width, height)
        return mask
    roi = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    shift = 4  # sub-pixel polygon vertices
    vertices = np.round((polygon - [x0, y0]) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(roi, [vertices], 255, lineType=cv2.LINE_AA, shift=shift)
    if elastic_px > 0:
        roi = _elastic(roi, elastic_px, elastic_seed)
    if radius >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        roi = cv2.dilate(roi, kernel) if morph_px > 0 else cv2.erode(roi, kernel)
    soft = roi.astype(np.float32) / 255.0
    if kernel_half > 0:
        size = 2 * kernel_half + 1
        soft = cv2.GaussianBlur(soft, (size, size), blur_px, borderType=cv2.BORDER_CONSTANT)
    mask[y0:y1, x0:x1] = np.clip(soft, 0.0, 1.0)
    mask[mask < 1e-4] = 0.0  # no faint float dust far from the face
    return mask


def as_range(value: float | tuple[float, float], name: str) -> tuple[float, float]:
    """A ``(low, high)`` range from a number or a pair; raises on ``low > high``."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{name}: range low {low} > high {high}")
    return low, high


def landmark_mask(
    shape: tuple[int, int],
    landmarks: np.ndarray,
    rng: np.random.Generator,
    *,
    expand: float | tuple[float, float] = DEFAULT_EXPAND,
    blur_sigma: float | tuple[float, float] = DEFAULT_BLUR,
    morph: float | tuple[float, float] = DEFAULT_MORPH,
    outline: str = FACE_OUTLINE,
) -> np.ndarray:
    """Soft face mask shaped by five landmarks.

    The outline (by default the hull of the landmarks and of points extrapolated
    to the brows, forehead, cheeks and chin) is scaled about its centroid by
    ``expand``, filled, eroded or dilated by ``morph`` and blurred with sigma
    ``blur_sigma`` (both fractions of :func:`face_size`). Scalars fix a value,
    pairs are sampled uniformly; the defaults are those of the sample archive.

    Args:
        shape: ``(height, width)`` of the mask.
        landmarks: ``(5, 2)`` face landmarks in pixels.
        rng: Source of randomness.
        expand: Outline scale about its centroid.
        blur_sigma: Soft-edge sigma as a fraction of the face size.
        morph: Erosion (negative) / dilation (positive) radius as a fraction of the face size.
        outline: One of :data:`OUTLINES`.

    Returns:
        float32 ``HxW`` mask in ``[0, 1]``, exactly 0 away from the face.
    """
    points = check_landmarks(landmarks)
    size = face_size(points)
    expand_value = rng.uniform(*as_range(expand, "expand"))
    morph_value = rng.uniform(*as_range(morph, "morph")) * size
    blur_value = rng.uniform(*as_range(blur_sigma, "blur_sigma")) * size
    return render_mask(tuple(shape[:2]), points, expand_value, morph_value, blur_value,
                       outline=outline)
