"""The face mesh every held-out family warps and masks by, fitted to five landmarks.

A sparse mesh in the unit ArcFace layout of :mod:`models.align` (the five
landmarks, brows, jaw line, inner points, forehead, neck and a fixed outer
ring), fitted to a face by an affine least-squares fit with the landmarks kept
exact. Its Delaunay triangles drive piecewise-affine warps; its hull is the
inner face a swap replaces. Sizes are in pixels of the ArcFace crop the five
landmarks fill (:func:`face_size`, about the face height).
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from models.align import estimate_similarity, face_template

# A sparse face mesh in the unit ArcFace layout of models.align (x right, y down):
# the five landmarks first, then brows, jaw line (temple to temple), inner points,
# forehead, neck and a fixed outer ring that bounds every warp.
_BROWS = [(0.24, 0.37), (0.34, 0.34), (0.44, 0.36), (0.56, 0.36), (0.66, 0.34), (0.76, 0.37)]
_JAW = [(0.14, 0.40), (0.14, 0.55), (0.17, 0.70), (0.23, 0.83), (0.32, 0.93), (0.42, 0.99),
        (0.50, 1.00), (0.58, 0.99), (0.68, 0.93), (0.77, 0.83), (0.83, 0.70), (0.86, 0.55),
        (0.86, 0.40)]
_INNER = [(0.50, 0.47), (0.43, 0.67), (0.57, 0.67), (0.50, 0.78), (0.50, 0.87), (0.50, 0.94),
          (0.26, 0.62), (0.74, 0.62)]
_FOREHEAD = [(0.30, 0.22), (0.50, 0.20), (0.70, 0.22)]
_NECK = [(0.02, 0.70), (0.06, 0.92), (0.22, 1.10), (0.50, 1.18), (0.78, 1.10), (0.94, 0.92),
         (0.98, 0.70)]  # fixed: a moving jaw stretches the skin below it, not the whole neck
_RING = [(0.5 + 0.78 * np.cos(a), 0.6 + 0.78 * np.sin(a))
         for a in np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)]
# Indices into face_points' rows of the points the families move or mask by.
N_LANDMARKS, BROW0, JAW0 = 5, 5, 5 + len(_BROWS)
INNER0 = JAW0 + len(_JAW)
UPPER_LIP, LOWER_LIP, CHIN, LEFT_CHEEK, RIGHT_CHEEK = (INNER0 + i for i in (3, 4, 5, 6, 7))
# The swapped region: brows, cheeks and the lower jaw line. The temples and outer cheeks are
# left out: five landmarks cannot tell where a turned face's contour meets the background.
FACE_HULL = [*range(BROW0, JAW0), *range(JAW0 + 3, JAW0 + 10), LEFT_CHEEK, RIGHT_CHEEK]


def _template() -> np.ndarray:
    five = face_template(1, 0.0).astype(np.float64)
    rest = np.array(_BROWS + _JAW + _INNER + _FOREHEAD + _NECK + _RING, dtype=np.float64)
    return np.vstack([five, rest])


@functools.lru_cache(maxsize=1)
def _mesh() -> tuple[np.ndarray, np.ndarray]:
    """The template points and their Delaunay triangles (index triples), computed once."""
    points = _template()
    scale = 1000.0
    subdiv = cv2.Subdiv2D((-1000, -1000, 3000, 3000))
    for x, y in points * scale:
        subdiv.insert((float(x), float(y)))
    triangles = []
    for tri in subdiv.getTriangleList().reshape(-1, 3, 2) / scale:
        dist = np.linalg.norm(points[None, :, :] - tri[:, None, :], axis=2)
        index = dist.argmin(axis=1)
        if dist[np.arange(3), index].max() < 1e-6:  # drop triangles touching subdiv's outer box
            triangles.append(index)
    return points, np.array(triangles, dtype=np.int64)


def face_points(landmarks: np.ndarray) -> np.ndarray:
    """The mesh points of a face: the template fitted (affine) to the landmarks, landmarks exact."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2) or not np.all(np.isfinite(landmarks)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {landmarks.shape}")
    template = _mesh()[0]
    design = np.hstack([template[:N_LANDMARKS], np.ones((N_LANDMARKS, 1))])
    affine, *_ = np.linalg.lstsq(design, landmarks, rcond=None)  # (3, 2)
    points = np.hstack([template, np.ones((len(template), 1))]) @ affine
    points[:N_LANDMARKS] = landmarks
    return points


def face_size(landmarks: np.ndarray) -> float:
    """Side in pixels of the ArcFace crop the five landmarks fill (about the face height)."""
    matrix = estimate_similarity(_mesh()[0][:N_LANDMARKS], np.asarray(landmarks, np.float64))
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2].astype(np.float64)))))


def face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of the face's right and down directions in the image."""
    across = landmarks[1] - landmarks[0]
    across = across / max(np.linalg.norm(across), 1e-6)
    return across, np.array([-across[1], across[0]])


def piecewise_affine_maps(src_points: np.ndarray, dst_points: np.ndarray,
                          shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``cv2.remap`` maps taking each mesh triangle of ``src_points`` onto ``dst_points``.

    Returns ``map_x``, ``map_y`` (float32 ``HxW``, identity off the mesh) and the
    boolean ``HxW`` mesh coverage in the destination.
    """
    height, width = shape
    triangles = _mesh()[1]
    index = np.zeros((height, width), dtype=np.int32)
    inverse = np.zeros((len(triangles) + 1, 2, 3), dtype=np.float64)
    inverse[0, :, :2] = np.eye(2)
    for t, tri in enumerate(triangles, start=1):
        dst, src = dst_points[tri].astype(np.float32), src_points[tri].astype(np.float32)
        if abs(np.cross(dst[1] - dst[0], dst[2] - dst[0])) < 1e-6:
            inverse[t] = inverse[0]
            continue
        inverse[t] = cv2.getAffineTransform(dst, src)
        cv2.fillConvexPoly(index, np.round(dst * 16).astype(np.int32), t, lineType=cv2.LINE_8,
                           shift=4)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    m = inverse[index]
    map_x = m[..., 0, 0] * xs + m[..., 0, 1] * ys + m[..., 0, 2]
    map_y = m[..., 1, 0] * xs + m[..., 1, 1] * ys + m[..., 1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32), index > 0


def hull_mask(shape: tuple[int, int], points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Filled convex hull of ``points`` scaled about its centroid, uint8 0/255."""
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull = hull.mean(axis=0) + scale * (hull - hull.mean(axis=0))
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 255, lineType=cv2.LINE_AA,
                       shift=4)
    return mask


def face_mask(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """The inner face a swap replaces (brows, cheeks, lower jaw line), as a boolean ``HxW`` mask."""
    return hull_mask(shape, face_points(landmarks)[FACE_HULL]) > 127
