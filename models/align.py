"""Five-point face alignment shared by scanning, training and sample generation.

A face is aligned by the similarity transform (rotation, uniform scale,
translation) that best maps its five landmarks (left eye, right eye, nose,
left mouth corner, right mouth corner, in image coordinates) onto a fixed
template, then warped into a square crop. The template is the widely used
ArcFace 112x112 layout, shrunk by ``margin`` on every side so the crop keeps
some context around the face (blending boundaries live there).
"""
from __future__ import annotations

import cv2
import numpy as np

# ArcFace reference landmarks for a 112x112 crop, as fractions of the side.
_ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
) / 112.0


def face_template(size: int, margin: float) -> np.ndarray:
    """Template landmark positions, shape ``(5, 2)``, for a ``size`` x ``size`` crop.

    ``margin`` is the extra context on each side as a fraction of the tight face
    box: 0 gives the plain ArcFace layout, 0.25 a crop 1.5 times as wide.
    """
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return (size * (_ARCFACE_112 + margin) / (1.0 + 2.0 * margin)).astype(np.float32)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` (Umeyama 1991).

    Returns the ``2x3`` affine matrix ``M`` with ``dst ~= M @ [x, y, 1]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching (n>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= 1e-12:
        raise ValueError("source points are degenerate (all equal)")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]]).astype(np.float32)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``2x3`` affine matrix to ``(n, 2)`` points."""
    points = np.asarray(points, dtype=np.float32)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(
    frame: np.ndarray, landmarks: np.ndarray, size: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """Warp one face of ``frame`` (HxWx3 uint8) into a ``size`` x ``size`` aligned crop.

    Returns the crop and the ``2x3`` matrix that maps frame coordinates to crop
    coordinates. Pixels outside the frame are filled by reflection so that the
    border does not look like a manipulation boundary.
    """
    matrix = alignment_matrix(landmarks, size, margin)
    return warp_face(frame, matrix, size), matrix


def alignment_matrix(landmarks: np.ndarray, size: int, margin: float) -> np.ndarray:
    """The ``2x3`` matrix mapping frame coordinates to the aligned crop's."""
    return estimate_similarity(landmarks, face_template(size, margin))


def warp_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``frame`` under ``matrix``; outside pixels reflect the frame's own."""
    return cv2.warpAffine(
        frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def align_faces(frame: np.ndarray, landmarks: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Aligned crops for every face of one frame: ``(k, size, size, 3)`` uint8."""
    crops = [align_face(frame, pts, size, margin)[0] for pts in np.asarray(landmarks)]
    if not crops:
        return np.empty((0, size, size, 3), dtype=np.uint8)
    return np.stack(crops)
