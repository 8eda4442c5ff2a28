"""Manipulation families for the frame stage's validation only: neither trained on nor tested on.

Training sees real faces and self-blends (:mod:`models.manipulate`: an alpha blend
of a colour/sharpness/resample/JPEG-mismatched copy of the face under a face
mask). The test families (:mod:`models.families`) stand for face swaps,
reenactment and inpainting. Validation that holds only alpha blends saturates:
it cannot tell two training recipes apart on seamless manipulations. The
families here give early stopping fakes made by other mechanisms again, so the
epoch that generalises best is kept, without validating on the test families
(which would leak the test into model selection):

- ``copy_move`` (copy-move forgery, as in image tampering): one facial part is
  replaced by the mirrored copy of its counterpart from the other side of the
  same face, pasted with a small feathered edge. The pixels are the face's own,
  with its colour, noise and compression; only the mirrored content and a thin
  seam are evidence.
- ``liquify`` (beauty-app "liquify"/reshape filters): a smooth radial bulge or
  pinch of an eye, both eyes or the nose, resampled bilinearly. Nothing is pasted
  or blended: a purely geometric edit whose only trace is the local resampling.

Each takes an RGB uint8 ``HxWx3`` crop, the five MTCNN landmarks (left eye, right
eye, nose, left and right mouth corner; ``(x, y)`` crop pixels; for aligned crops
``models.align.face_template(size, margin)``) and a ``np.random.Generator`` for
every random choice, and returns a new crop that differs visibly from the input.
Sizes are fractions of the face size (the side of the ArcFace crop the landmarks
fill, about the face height).

This module shares no code with the training manipulations or the test families
(a test checks it): it draws on :mod:`models.align` only.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from models.align import estimate_similarity, face_template

COPY_MOVE = "copy_move"
LIQUIFY = "liquify"
VALIDATION_FAMILIES = (COPY_MOVE, LIQUIFY)

# The real technique each family stands for.
TECHNIQUES = {
    COPY_MOVE: "copy-move forgery: a facial part replaced by its mirrored counterpart",
    LIQUIFY: "beauty-app liquify: a local radial bulge or pinch warp",
}

COPY_PARTS = ("eye", "cheek")
SIDES = ("left", "right")
LIQUIFY_CENTRES = ("left_eye", "right_eye", "both_eyes", "nose")

# A change is visible when this many pixels move by this many grey levels (any channel).
VISIBLE_LEVELS = 4
VISIBLE_PIXELS = 4


def face_size(landmarks: np.ndarray) -> float:
    """Side in pixels of the ArcFace crop the five landmarks fill (the scale of their similarity fit)."""
    matrix = estimate_similarity(face_template(1, 0.0), landmarks).astype(np.float64)
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def visibly_changed(before: np.ndarray, after: np.ndarray) -> bool:
    """Whether at least ``VISIBLE_PIXELS`` pixels differ by ``VISIBLE_LEVELS`` levels or more."""
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(axis=2)
    return int((diff >= VISIBLE_LEVELS).sum()) >= VISIBLE_PIXELS


def _check(crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    if not isinstance(crop, np.ndarray) or crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"the crop must be uint8 HxWx3, got {getattr(crop, 'dtype', type(crop))} "
                         f"{getattr(crop, 'shape', '')}")
    points = np.asarray(landmarks, np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"landmarks must be five finite (x, y) points, got shape {points.shape}")
    if np.linalg.norm(points[1] - points[0]) < 1e-3:
        raise ValueError("the eye landmarks coincide")
    return points


def _axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of the face's left-to-right and top-to-bottom directions in the crop."""
    across = (points[1] - points[0]) / np.linalg.norm(points[1] - points[0])
    return across, np.array([-across[1], across[0]])


def _unchanged(name: str) -> ValueError:
    return ValueError(f"{name}: the crop is too flat around the face parts for any edit to change it visibly")


# --- copy-move ---------------------------------------------------------------------------------


def _part_centre(points: np.ndarray, part: str, side: str, size: float) -> np.ndarray:
    """Where ``part`` of the face's ``side`` (image left or right) is."""
    i = SIDES.index(side)
    if part == "eye":
        return points[i]
    across, _ = _axes(points)
    outward = across if side == "right" else -across
    return points[i] + 0.55 * (points[3 + i] - points[i]) + 0.03 * size * outward  # cheek: below the eye


def copy_move_part(crop: np.ndarray, landmarks: np.ndarray, part: str, side: str, feather: float) -> np.ndarray:
    """The crop with ``part`` of ``side`` replaced by the mirrored ``part`` of the other side.

    The copy is the crop reflected about the face's vertical axis, shifted so the
    other side's landmark (eye, or the cheek point below it) lands exactly on this
    side's. It is pasted inside an ellipse around the part (eye: 0.14 x 0.09 face
    sizes; cheek: 0.08), its edge feathered by a Gaussian of ``feather`` face sizes.
    """
    points = _check(crop, landmarks)
    if part not in COPY_PARTS or side not in SIDES:
        raise ValueError(f"copy_move: part must be one of {', '.join(COPY_PARTS)} and side one of "
                         f"{', '.join(SIDES)}; got {part!r}, {side!r}")
    size = face_size(points)
    across, down = _axes(points)
    target = _part_centre(points, part, side, size)
    source = _part_centre(points, part, SIDES[1 - SIDES.index(side)], size)
    # Output pixel p takes the crop at T(p) = H p + t, H the reflection about the axis along `down`.
    reflect = np.eye(2) - 2.0 * np.outer(across, across)
    shift = source - reflect @ target
    copy = cv2.warpAffine(crop, np.hstack([reflect, shift[:, None]]).astype(np.float64),
                          (crop.shape[1], crop.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)
    semi = (0.14, 0.09) if part == "eye" else (0.08, 0.08)
    mask = np.zeros(crop.shape[:2], np.uint8)
    angle = float(np.degrees(np.arctan2(across[1], across[0])))
    scale = 16  # cv2.ellipse takes fixed-point coordinates: sub-pixel placement
    centre = tuple(int(round(v * scale)) for v in target)
    axes = tuple(max(int(round(s * size * scale)), scale) for s in semi)
    cv2.ellipse(mask, centre, axes, angle, 0, 360, 255, thickness=-1, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(feather * size, 0.6))[..., None]
    out = crop.astype(np.float32) * (1.0 - mask) + copy.astype(np.float32) * mask
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def copy_move(crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copy-move forgery inside the face: one eye or cheek replaced by its mirrored counterpart.

    Stands for copy-move tampering (a region of the image pasted elsewhere in the
    same image). Kept out of training because the training blends paste a
    *mismatched* copy of the whole face, and the detector should not be tuned to a
    seamless, same-source paste; kept out of testing because it stands for no
    deepfake family the tests report on. The part, side and feather (0.5-1.5 % of
    the face size) are drawn from ``rng``; when that edit is invisible (a flat or
    perfectly symmetric face) the other parts are tried in turn.
    """
    points = _check(crop, landmarks)
    part, side = COPY_PARTS[rng.integers(len(COPY_PARTS))], SIDES[rng.integers(len(SIDES))]
    feather = float(rng.uniform(0.005, 0.015))
    tries = [(part, side)] + [(p, s) for p in COPY_PARTS for s in SIDES if (p, s) != (part, side)]
    for p, s in tries:
        out = copy_move_part(crop, points, p, s, feather)
        if visibly_changed(crop, out):
            return out
    raise _unchanged(COPY_MOVE)


# --- liquify -----------------------------------------------------------------------------------


def liquify_at(crop: np.ndarray, landmarks: np.ndarray, centre: str, radius: float, strength: float) -> np.ndarray:
    """The crop bulged (``strength`` > 0) or pinched (< 0) in discs of ``radius`` face sizes.

    Output pixel ``p`` at ``u = |p - c| / r`` from a centre ``c`` samples the crop
    at ``c + (p - c) (1 - strength (1 - u^2)^2)``: a smooth, monotone radial map
    (|strength| < 1) equal to the identity at the disc's rim, so pixels outside
    every disc are the crop's own. Resampled bilinearly; nothing blended.
    """
    points = _check(crop, landmarks)
    if centre not in LIQUIFY_CENTRES:
        raise ValueError(f"liquify: centre must be one of {', '.join(LIQUIFY_CENTRES)}; got {centre!r}")
    if not 0 < abs(strength) < 1 or radius <= 0:
        raise ValueError(f"liquify: need 0 < |strength| < 1 and radius > 0, got {strength}, {radius}")
    centres = {"left_eye": [points[0]], "right_eye": [points[1]], "both_eyes": [points[0], points[1]],
               "nose": [points[2]]}[centre]
    r = radius * face_size(points)
    height, width = crop.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    map_x, map_y, inside = xs.copy(), ys.copy(), np.zeros((height, width), bool)
    for cx, cy in centres:
        dx, dy = xs - cx, ys - cy
        u2 = (dx * dx + dy * dy) / (r * r)
        weight = np.where(u2 < 1.0, (1.0 - u2) ** 2, 0.0)
        map_x -= strength * weight * dx
        map_y -= strength * weight * dy
        inside |= u2 < 1.0
    warped = cv2.remap(crop, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT_101)
    return np.where(inside[..., None], warped, crop)


def liquify(crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Beauty-app liquify: an eye, both eyes or the nose enlarged (bulge) or shrunk (pinch).

    Stands for the reshape filters of photo and video beauty apps. Kept out of
    training because no training manipulation moves geometry without blending
    (self-blends only misalign a whole pasted copy); kept out of testing because
    the test families' geometric edit (expression reenactment) is a mesh warp of
    the mouth and jaw with smoothing, and validating on it would leak the test.
    Centre, radius (0.1-0.25 face sizes; 0.1-0.15 for both eyes, whose discs then
    do not overlap) and strength (0.25-0.6, bulge or pinch) are drawn from
    ``rng``; when the edit is invisible the other centres are tried at full strength.
    """
    points = _check(crop, landmarks)
    centre = LIQUIFY_CENTRES[rng.integers(len(LIQUIFY_CENTRES))]
    radius = float(rng.uniform(0.1, 0.15 if centre == "both_eyes" else 0.25))
    strength = float(rng.uniform(0.25, 0.6)) * (1.0 if rng.random() < 0.5 else -1.0)
    out = liquify_at(crop, points, centre, radius, strength)
    if visibly_changed(crop, out):
        return out
    for other in LIQUIFY_CENTRES:
        out = liquify_at(crop, points, other, 0.15 if other == "both_eyes" else 0.25, 0.9 * np.sign(strength))
        if visibly_changed(crop, out):
            return out
    raise _unchanged(LIQUIFY)


_APPLY: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    COPY_MOVE: copy_move,
    LIQUIFY: liquify,
}


def apply_validation_family(name: str, crop: np.ndarray, landmarks: np.ndarray,
                            rng: np.random.Generator) -> np.ndarray:
    """``crop`` manipulated by the validation family ``name`` (a new uint8 array, visibly changed).

    Raises:
        ValueError: If ``name`` is not one of ``VALIDATION_FAMILIES``, or the crop or
            landmarks are malformed, or the crop is too flat to change visibly.
    """
    if name not in _APPLY:
        raise ValueError(f"unknown validation family {name!r}; valid names: {', '.join(VALIDATION_FAMILIES)}")
    return _APPLY[name](crop, landmarks, rng)
