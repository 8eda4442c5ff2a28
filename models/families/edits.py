"""The two edit families: the target's own face changed, no donor.

- ``expression_reenact`` (Face2Face/NeuralTextures-style): the target's own mouth
  and jaw moved by a landmark-driven mesh warp, the region re-rendered smoother.
- ``attribute_inpaint`` (attribute-editing GANs): eyes or mouth removed by
  inpainting and re-synthesised closed, with texture and a lid or lip line.
"""
from __future__ import annotations

import cv2
import numpy as np

from models.families.compositing import FamilyResult, check_face, feathered_mask
from models.families.mesh import (
    CHIN,
    JAW0,
    LEFT_CHEEK,
    LOWER_LIP,
    N_LANDMARKS,
    RIGHT_CHEEK,
    UPPER_LIP,
    face_axes,
    face_size,
    piecewise_affine_maps,
)

EXPRESSION_REENACT = "expression_reenact"
ATTRIBUTE_INPAINT = "attribute_inpaint"


def expression_reenact(target: np.ndarray, landmarks: np.ndarray,
                       rng: np.random.Generator) -> FamilyResult:
    """Face2Face-style reenactment: a new mouth/jaw expression by mesh warp, re-rendered smoother.

    A smile moves the mouth corners 3-6 % of the face size out and 2-4 % up
    (cheeks and upper lip follow by a third); a jaw drop lowers the chin 4-8 %,
    as in speech (lower lip and jaw line follow, tapering to the temples). Eyes, brows
    and forehead stay fixed, as in reenactment that only transfers expression.
    The moved region is smoothed by a 0.4-0.9 % Gaussian, as neural rendering
    from a low-resolution texture does.
    """
    dst = check_face(target, landmarks, "target")
    height, width = target.shape[:2]
    size = face_size(landmarks)
    right, down = face_axes(dst[:N_LANDMARKS])
    expression = str(rng.choice(["smile", "jaw_drop"]))
    moved = dst.copy()
    if expression == "smile":
        out, up = rng.uniform(0.03, 0.06) * size, rng.uniform(0.02, 0.04) * size
        params = {"expression": expression, "out": out / size, "up": up / size}
        moved[3] += -out * right - up * down
        moved[4] += out * right - up * down
        moved[[LEFT_CHEEK, RIGHT_CHEEK, UPPER_LIP]] -= up / 3 * down
        moved[LEFT_CHEEK] -= out / 3 * right
        moved[RIGHT_CHEEK] += out / 3 * right
    else:
        drop = rng.uniform(0.04, 0.08) * size
        params = {"expression": expression, "drop": drop / size}
        moved[[CHIN, JAW0 + 6]] += drop * down
        moved[LOWER_LIP] += 0.8 * drop * down
        moved[[3, 4]] += 0.3 * drop * down
        for k, weight in ((5, 0.9), (4, 0.75), (3, 0.5), (2, 0.25)):  # jaw line, both sides
            moved[[JAW0 + k, JAW0 + 12 - k]] += weight * drop * down
    sigma = float(rng.uniform(0.004, 0.009)) * size
    params["smooth"] = sigma / size
    map_x, map_y, _ = piecewise_affine_maps(dst, moved, (height, width))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    support = ((np.abs(map_x - xs) + np.abs(map_y - ys)) > 0.05).astype(np.uint8) * 255
    warped = cv2.remap(target, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    feather = max(0.02 * size, 1.0)
    grown = cv2.dilate(support, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(2 * feather) + 1, 2 * int(2 * feather) + 1)))
    alpha = feathered_mask(grown, 0.0, feather)
    rendered = cv2.GaussianBlur(warped.astype(np.float32), (0, 0), max(sigma, 0.3))
    rendered = warped + alpha[..., None] * (rendered - warped)  # smooth only the re-rendered area
    image = target.astype(np.float32) + alpha[..., None] * (rendered - target)
    return FamilyResult(np.clip(np.rint(image), 0, 255).astype(np.uint8), alpha, params)


def _part_ellipses(landmarks: np.ndarray, part: str) -> list[tuple[np.ndarray, float, float]]:
    """Centre, half-width and half-height (pixels) of the eye or mouth regions to edit."""
    eye_distance = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    if part == "eyes":
        return [(landmarks[0], 0.26 * eye_distance, 0.14 * eye_distance),
                (landmarks[1], 0.26 * eye_distance, 0.14 * eye_distance)]
    mouth = float(np.linalg.norm(landmarks[4] - landmarks[3]))
    return [((landmarks[3] + landmarks[4]) / 2, 0.62 * mouth, 0.22 * eye_distance)]


def attribute_inpaint(target: np.ndarray, landmarks: np.ndarray,
                      rng: np.random.Generator) -> FamilyResult:
    """Attribute editing: eyes or mouth removed by inpainting and re-synthesised closed.

    The part (both eyes, or the mouth) is cut out by an ellipse, filled by
    ``cv2.inpaint`` (Telea), given back skin texture (noise at 60-100 % of the
    surrounding high-frequency level, as a generator would synthesise) and a
    soft closed-lid or closed-lip line at 35-60 % opacity, then feathered in.
    """
    points = check_face(target, landmarks, "target")[:N_LANDMARKS]
    height, width = target.shape[:2]
    size = face_size(landmarks)
    part = str(rng.choice(["eyes", "mouth"]))
    params = {"part": part, "texture": float(rng.uniform(0.6, 1.0)),
              "line_opacity": float(rng.uniform(0.35, 0.6)), "line_curve": float(rng.uniform(-0.3, 0.3))}
    right, down = face_axes(points)
    angle = float(np.degrees(np.arctan2(right[1], right[0])))
    hole = np.zeros((height, width), dtype=np.uint8)
    line = np.zeros((height, width), dtype=np.float32)
    for centre, half_w, half_h in _part_ellipses(points, part):
        cv2.ellipse(hole, tuple(int(v) for v in np.round(centre * 16)),
                    (int(round(half_w * 16)), int(round(half_h * 16))), angle, 0, 360, 255, -1,
                    cv2.LINE_AA, 4)
        t = np.linspace(-1.0, 1.0, 15)[:, None]
        bow = params["line_curve"] * half_h * (1 - t ** 2) + 0.25 * half_h * (part == "eyes")
        curve = centre + 0.75 * half_w * t * right + bow * down
        cv2.polylines(line, [np.round(curve * 16).astype(np.int32)], False, 1.0,
                      max(1, int(round(0.015 * size))), cv2.LINE_AA, shift=4)
    hole = np.where(hole > 0, 255, 0).astype(np.uint8)
    radius = max(3, int(round(0.04 * size)))
    filled = cv2.inpaint(target, hole, radius, cv2.INPAINT_TELEA).astype(np.float32)
    ring = cv2.dilate(hole, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) & ~hole
    gray = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY).astype(np.float32)
    detail = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    level = float(detail[ring > 0].std()) if np.any(ring) else 0.0
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 0.7)
    noise *= params["texture"] * level / max(float(noise.std()), 1e-6)
    filled += noise[..., None]
    skin = target[ring > 0].mean(axis=0) if np.any(ring) else filled.mean(axis=(0, 1))
    line = cv2.GaussianBlur(line, (0, 0), max(0.008 * size, 0.5)) * params["line_opacity"]
    filled += line[..., None] * (0.45 * skin.astype(np.float32) - filled)  # lashes / lip shadow
    alpha = feathered_mask(hole, 0.0, max(0.01 * size, 0.5))
    image = target.astype(np.float32) + alpha[..., None] * (filled - target)
    return FamilyResult(np.clip(np.rint(image), 0, 255).astype(np.uint8), alpha, params)
