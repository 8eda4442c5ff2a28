"""Held-out manipulation families for cross-manipulation evaluation only.

The demo detector trains on real faces and self-blends (:mod:`models.manipulate`);
a detector is judged on what it never saw. Each family here stands for a
different real deepfake technique and leaves that technique's own evidence:

- ``graphics_swap`` (FaceSwap-style): a donor face warped onto the target by a
  piecewise-affine mesh, colour-transferred in Lab and Poisson-blended.
- ``neural_render`` (DeepFakes/FaceShifter-style): the donor face rendered at a
  generator's low resolution, smoothed as by a bottleneck, and brought back by
  zero-insertion transposed-convolution upsampling (periodic spectral traces).
- ``expression_reenact`` (Face2Face/NeuralTextures-style): the target's own mouth
  and jaw moved by a landmark-driven mesh warp, the region re-rendered smoother.
- ``attribute_inpaint`` (attribute-editing GANs): eyes or mouth removed by
  inpainting and re-synthesised closed, with texture and a lid or lip line.

Nothing used for training may import this module (a test checks it). Images are
uint8 ``HxWx3`` RGB, landmarks the five MTCNN points in ``(x, y)`` pixels, and
every random choice comes from the caller's ``np.random.Generator``. Geometric
amounts are fractions of the face size (the side of the ArcFace crop the
landmarks fill, about the face height). The module shares no code with the
training manipulations.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from models.align import estimate_similarity, face_template

logger = logging.getLogger(__name__)

GRAPHICS_SWAP = "graphics_swap"
NEURAL_RENDER = "neural_render"
EXPRESSION_REENACT = "expression_reenact"
ATTRIBUTE_INPAINT = "attribute_inpaint"

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
_N_LANDMARKS, _BROW0, _JAW0 = 5, 5, 5 + len(_BROWS)
_INNER0 = _JAW0 + len(_JAW)
_UPPER_LIP, _LOWER_LIP, _CHIN, _LEFT_CHEEK, _RIGHT_CHEEK = (_INNER0 + i for i in (3, 4, 5, 6, 7))
# The swapped region: brows, cheeks and the lower jaw line. The temples and outer cheeks are
# left out: five landmarks cannot tell where a turned face's contour meets the background.
_FACE_HULL = [*range(_BROW0, _JAW0), *range(_JAW0 + 3, _JAW0 + 10), _LEFT_CHEEK, _RIGHT_CHEEK]


@dataclass(frozen=True)
class FamilyResult:
    """A manipulated image, where it changed (float32 ``HxW`` in ``[0, 1]``) and the drawn values."""

    image: np.ndarray
    mask: np.ndarray
    params: dict[str, float | str]


@dataclass(frozen=True)
class Family:
    """One held-out manipulation family and the real technique it stands for."""

    name: str
    technique: str
    needs_donor: bool
    apply: Callable[..., FamilyResult]


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
    design = np.hstack([template[:_N_LANDMARKS], np.ones((_N_LANDMARKS, 1))])
    affine, *_ = np.linalg.lstsq(design, landmarks, rcond=None)  # (3, 2)
    points = np.hstack([template, np.ones((len(template), 1))]) @ affine
    points[:_N_LANDMARKS] = landmarks
    return points


def face_size(landmarks: np.ndarray) -> float:
    """Side in pixels of the ArcFace crop the five landmarks fill (about the face height)."""
    matrix = estimate_similarity(_mesh()[0][:_N_LANDMARKS], np.asarray(landmarks, np.float64))
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2].astype(np.float64)))))


def _face_axes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _hull_mask(shape: tuple[int, int], points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Filled convex hull of ``points`` scaled about its centroid, uint8 0/255."""
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    hull = hull.mean(axis=0) + scale * (hull - hull.mean(axis=0))
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 255, lineType=cv2.LINE_AA,
                       shift=4)
    return mask


def face_mask(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """The inner face a swap replaces (brows, cheeks, lower jaw line), as a boolean ``HxW`` mask."""
    return _hull_mask(shape, face_points(landmarks)[_FACE_HULL]) > 127


def _feather(mask: np.ndarray, erode_px: float, sigma_px: float) -> np.ndarray:
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


def _transfer_colour(source: np.ndarray, reference: np.ndarray, mask: np.ndarray,
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


def _check(image: np.ndarray, landmarks: np.ndarray, name: str) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 HxWx3, got {image.dtype} {image.shape}")
    return face_points(landmarks)


def graphics_swap(target: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                  donor: np.ndarray, donor_landmarks: np.ndarray) -> FamilyResult:
    """FaceSwap-style graphics swap: mesh warp of the donor, Lab colour transfer, Poisson blend.

    The mask is the convex hull of the brows, cheeks and lower jaw line (FaceSwap's
    landmark-hull mask) scaled by 0.95-1.05; colour transfer is 80-100 % as
    tools expose it as a strength; Poisson cloning (``cv2.seamlessClone``) makes
    the boundary gradient-consistent instead of alpha-blended.
    """
    dst = _check(target, landmarks, "target")
    src = _check(donor, donor_landmarks, "donor")
    height, width = target.shape[:2]
    size = face_size(landmarks)
    params = {"hull_scale": float(rng.uniform(0.95, 1.05)),
              "colour_strength": float(rng.uniform(0.8, 1.0))}
    map_x, map_y, covered = piecewise_affine_maps(src, dst, (height, width))
    warped = cv2.remap(donor, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = _hull_mask((height, width), dst[_FACE_HULL], params["hull_scale"])
    mask[~covered] = 0
    mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    warped = _transfer_colour(warped, target, mask, params["colour_strength"])
    # seamlessClone wants the mask clear of the image border: pad, clone, crop.
    pad = int(np.ceil(0.1 * size)) + 2
    padded = [cv2.copyMakeBorder(a, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
              for a in (warped, target)]
    padded_mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(padded_mask)
    cloned = cv2.seamlessClone(padded[0], padded[1], padded_mask, (x + w // 2, y + h // 2),
                               cv2.NORMAL_CLONE)[pad:pad + height, pad:pad + width]
    inside = mask > 0
    image = np.where(inside[..., None], cloned, target)
    return FamilyResult(image, inside.astype(np.float32), params)


def _decoder_kernel(rng: np.random.Generator, imbalance: float) -> np.ndarray:
    """A 4-tap 1-D transposed-convolution kernel whose two output phases gain ``1 +- imbalance``."""
    taps = np.array([0.25, 0.75, 0.75, 0.25]) * rng.uniform(0.9, 1.1, 4)
    taps[0::2] *= (1.0 + imbalance) / taps[0::2].sum()
    taps[1::2] *= (1.0 - imbalance) / taps[1::2].sum()
    return taps


def _transposed_upsample(low: np.ndarray, rng: np.random.Generator, imbalance: float) -> np.ndarray:
    """Double ``low`` (float32 HxWx3) by zero insertion and a fixed per-channel 4x4 kernel."""
    pad = 2
    padded = cv2.copyMakeBorder(low, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    height, width = padded.shape[:2]
    zeros = np.zeros((2 * height, 2 * width, 3), dtype=np.float32)
    zeros[0::2, 0::2] = padded
    out = np.empty_like(zeros)
    for c in range(3):  # a learned decoder has its own kernel per output channel
        scale = float(rng.uniform(0.7, 1.3))
        kernel = np.outer(_decoder_kernel(rng, imbalance * scale),
                          _decoder_kernel(rng, imbalance * scale))
        out[..., c] = cv2.filter2D(zeros[..., c], -1, kernel.astype(np.float32),
                                   borderType=cv2.BORDER_CONSTANT)
    return out[2 * pad:-2 * pad, 2 * pad:-2 * pad]


def neural_render(target: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                  donor: np.ndarray, donor_landmarks: np.ndarray) -> FamilyResult:
    """DeepFakes-style swap: donor face generated at low resolution, decoded, blended back.

    The face box is rendered at 1/2**k of the target's scale (k stages so the
    generator works near 64 px, as the original DeepFakes model), the identity
    comes from the similarity-aligned donor with a Reinhard colour match, a
    bilateral filter stands for the autoencoder's smooth skin, and each stage of
    the decoder doubles by zero insertion and a 4x4 kernel whose output phases
    gain 1 +- 0.8-2 % (2-D phases differ by up to 8 %): the checkerboard that
    transposed convolutions leave, seen as peaks at the Nyquist frequencies. The
    result goes back under a feathered, eroded hull mask as the DeepFakes
    converter does.
    """
    dst = _check(target, landmarks, "target")
    _check(donor, donor_landmarks, "donor")
    height, width = target.shape[:2]
    size = face_size(landmarks)
    params = {"imbalance": float(rng.uniform(0.008, 0.02)) * float(rng.choice([-1.0, 1.0])),
              "smooth_colour": float(rng.uniform(15.0, 35.0)),
              "smooth_space": float(rng.uniform(1.0, 2.0)),
              "erode": float(rng.uniform(0.02, 0.04)), "feather": float(rng.uniform(0.02, 0.04))}
    hull = _hull_mask((height, width), dst[_FACE_HULL])
    x, y, w, h = cv2.boundingRect(hull)
    if min(w, h) < 8:
        raise ValueError(f"the face lies (almost) outside the {width}x{height} image")
    stages = max(1, int(round(np.log2(max(w, h) / 64.0))))
    factor = 2 ** stages
    params["render_px"] = float(max(w, h) / factor)
    # Grow the box to a multiple of the factor, inside the image.
    w, h = min(-(-w // factor) * factor, width // factor * factor), min(
        -(-h // factor) * factor, height // factor * factor)
    x, y = min(max(x, 0), width - w), min(max(y, 0), height - h)
    box = (slice(y, y + h), slice(x, x + w))
    matrix = estimate_similarity(donor_landmarks, landmarks)
    aligned = cv2.warpAffine(donor, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)[box]
    low_size = (w // factor, h // factor)
    low = cv2.resize(aligned, low_size, interpolation=cv2.INTER_AREA)
    low_target = cv2.resize(target[box], low_size, interpolation=cv2.INTER_AREA)
    low_mask = cv2.resize(hull[box], low_size, interpolation=cv2.INTER_AREA)
    low = _transfer_colour(low, low_target, low_mask)
    low = cv2.bilateralFilter(low, 5, params["smooth_colour"], params["smooth_space"])
    rendered = low.astype(np.float32)
    for _ in range(stages):
        rendered = _transposed_upsample(rendered, rng, params["imbalance"])
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[box] = _feather(hull[box], params["erode"] * size, params["feather"] * size)
    image = target.copy()
    region = target[box].astype(np.float32)
    a = alpha[box][..., None]
    image[box] = np.clip(np.rint(region + a * (rendered - region)), 0, 255).astype(np.uint8)
    return FamilyResult(image, alpha, params)


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
    dst = _check(target, landmarks, "target")
    height, width = target.shape[:2]
    size = face_size(landmarks)
    right, down = _face_axes(dst[:_N_LANDMARKS])
    expression = str(rng.choice(["smile", "jaw_drop"]))
    moved = dst.copy()
    if expression == "smile":
        out, up = rng.uniform(0.03, 0.06) * size, rng.uniform(0.02, 0.04) * size
        params = {"expression": expression, "out": out / size, "up": up / size}
        moved[3] += -out * right - up * down
        moved[4] += out * right - up * down
        moved[[_LEFT_CHEEK, _RIGHT_CHEEK, _UPPER_LIP]] -= up / 3 * down
        moved[_LEFT_CHEEK] -= out / 3 * right
        moved[_RIGHT_CHEEK] += out / 3 * right
    else:
        drop = rng.uniform(0.04, 0.08) * size
        params = {"expression": expression, "drop": drop / size}
        moved[[_CHIN, _JAW0 + 6]] += drop * down
        moved[_LOWER_LIP] += 0.8 * drop * down
        moved[[3, 4]] += 0.3 * drop * down
        for k, weight in ((5, 0.9), (4, 0.75), (3, 0.5), (2, 0.25)):  # jaw line, both sides
            moved[[_JAW0 + k, _JAW0 + 12 - k]] += weight * drop * down
    sigma = float(rng.uniform(0.004, 0.009)) * size
    params["smooth"] = sigma / size
    map_x, map_y, _ = piecewise_affine_maps(dst, moved, (height, width))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    support = ((np.abs(map_x - xs) + np.abs(map_y - ys)) > 0.05).astype(np.uint8) * 255
    warped = cv2.remap(target, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    feather = max(0.02 * size, 1.0)
    grown = cv2.dilate(support, cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * int(2 * feather) + 1, 2 * int(2 * feather) + 1)))
    alpha = _feather(grown, 0.0, feather)
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
    points = _check(target, landmarks, "target")[:_N_LANDMARKS]
    height, width = target.shape[:2]
    size = face_size(landmarks)
    part = str(rng.choice(["eyes", "mouth"]))
    params = {"part": part, "texture": float(rng.uniform(0.6, 1.0)),
              "line_opacity": float(rng.uniform(0.35, 0.6)), "line_curve": float(rng.uniform(-0.3, 0.3))}
    right, down = _face_axes(points)
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
    alpha = _feather(hole, 0.0, max(0.01 * size, 0.5))
    image = target.astype(np.float32) + alpha[..., None] * (filled - target)
    return FamilyResult(np.clip(np.rint(image), 0, 255).astype(np.uint8), alpha, params)


_FAMILIES: dict[str, Family] = {
    family.name: family for family in (
        Family(GRAPHICS_SWAP, "graphics face swap (FaceSwap)", True, graphics_swap),
        Family(NEURAL_RENDER, "autoencoder/GAN face swap (DeepFakes, FaceShifter)", True,
               neural_render),
        Family(EXPRESSION_REENACT, "expression reenactment (Face2Face, NeuralTextures)", False,
               expression_reenact),
        Family(ATTRIBUTE_INPAINT, "local attribute editing / inpainting", False, attribute_inpaint),
    )
}


def family_names() -> tuple[str, ...]:
    """Names of the held-out families, as written in manifest ``manipulation`` columns."""
    return tuple(_FAMILIES)


def get_family(name: str) -> Family:
    """The family called ``name``; raises ``ValueError`` listing the valid names."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown manipulation family {name!r}; choose from {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def apply_family(name: str, target: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 donor: Optional[np.ndarray] = None,
                 donor_landmarks: Optional[np.ndarray] = None) -> FamilyResult:
    """Apply family ``name`` to ``target``; swap families need ``donor`` and its landmarks."""
    family = get_family(name)
    if not family.needs_donor:
        result = family.apply(target, landmarks, rng)
    elif donor is None or donor_landmarks is None:
        raise ValueError(f"{name} needs a donor image and donor landmarks")
    else:
        result = family.apply(target, landmarks, rng, donor, donor_landmarks)
    logger.debug("%s: %s", name, result.params)
    return result
