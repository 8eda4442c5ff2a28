"""Landmark-guided face blending: self-blended images and face swaps.

This is the one implementation of face manipulation in deepfake-scan. Training
uses it to make self-blended pseudo-fakes (Shiohara & Yamasaki, "Detecting
Deepfakes with Self-Blended Images", CVPR 2022): a face is blended with a
slightly transformed, colour- and sharpness-shifted copy of itself, so the only
evidence left is the blending boundary and the statistics mismatch inside it.
The sample archive uses it for both self-blends and donor face swaps.

Everything is plain numpy/OpenCV and deterministic given a
``np.random.Generator``. Landmarks are the five MTCNN points (left eye, right
eye, nose, left mouth corner, right mouth corner) in ``(x, y)`` pixels.
Geometric ranges are fractions of the face size (see :func:`face_size`), so a
parameter set means the same thing for a 128-pixel training crop and a
1080p frame; colour offsets are in 8-bit levels and sharpness sigmas in pixels.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import cv2
import numpy as np

from models.align import estimate_similarity, face_template

logger = logging.getLogger(__name__)

SELF_BLEND = "self_blend"
FACE_SWAP = "face_swap"
MANIPULATIONS: tuple[str, ...] = (SELF_BLEND, FACE_SWAP)

Range = tuple[float, float]


def manipulation_names() -> tuple[str, ...]:
    """Names of the manipulations produced here, as used in manifest ``manipulation`` columns."""
    return MANIPULATIONS


def _as_range(value: float | tuple[float, float], name: str) -> Range:
    """A ``(low, high)`` range from a number or a pair; raises on ``low > high``."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{name}: range low {low} > high {high}")
    return low, high


@dataclass(frozen=True)
class BlendParams:
    """Ranges from which :func:`blend_face` draws one manipulation.

    Every range is a ``(low, high)`` pair sampled uniformly; a number fixes the value.

    Attributes:
        scale: Extra scale of the source about the face centre.
        translate: Shift magnitude of the source, fraction of the face size
            (direction uniform).
        rotate_deg: Extra rotation of the source, degrees.
        colour_gain: Per-channel ``|gain - 1|`` of the source, random sign per channel.
        colour_offset: Per-channel ``|offset|`` of the source in 8-bit levels, random sign.
        hue_shift_deg: Hue rotation of the source, degrees.
        saturation_scale: Saturation factor of the source.
        blur_sigma: Gaussian blur sigma (pixels) when the source is softened.
        sharpen: Unsharp-mask amount when the source is sharpened instead.
        sharpen_prob: Probability of sharpening rather than blurring the source.
        mask_expand: Scale of the mask polygon about its centroid.
        mask_blur: Soft-edge Gaussian sigma, fraction of the face size.
        mask_morph: Erosion (negative) / dilation (positive) radius, fraction of the face size.
        blend_ratio: Peak opacity of the source inside the mask.
    """

    scale: Range = (0.95, 1.05)
    translate: Range = (0.0, 0.03)
    rotate_deg: Range = (-3.0, 3.0)
    # Strong enough for a B0 trained from scratch on a few thousand synthetic crops to
    # learn within a CPU session; the first, subtler ranges (gain 0.02-0.06, offset 3-8,
    # blur 0.6-1.2) left the demo model at chance after several epochs.
    colour_gain: Range = (0.06, 0.14)
    colour_offset: Range = (6.0, 16.0)
    hue_shift_deg: Range = (-8.0, 8.0)
    saturation_scale: Range = (0.75, 1.25)
    blur_sigma: Range = (1.0, 2.2)
    sharpen: Range = (1.0, 2.0)
    sharpen_prob: float = 0.5
    mask_expand: Range = (1.2, 1.6)
    mask_blur: Range = (0.02, 0.05)
    mask_morph: Range = (-0.03, 0.03)
    blend_ratio: Range = (0.85, 1.0)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.name == "sharpen_prob":
                continue
            low, high = _as_range(getattr(self, field.name), field.name)
            object.__setattr__(self, field.name, (low, high))
        if not 0.0 <= self.sharpen_prob <= 1.0:
            raise ValueError(f"sharpen_prob must be in [0, 1], got {self.sharpen_prob}")
        checks = {
            "scale": self.scale[0] > 0,
            "translate": self.translate[0] >= 0,
            "colour_gain": 0 <= self.colour_gain[0] and self.colour_gain[1] < 1,
            "colour_offset": self.colour_offset[0] >= 0,
            "saturation_scale": self.saturation_scale[0] >= 0,
            "blur_sigma": self.blur_sigma[0] > 0,
            "sharpen": self.sharpen[0] >= 0,
            "mask_expand": self.mask_expand[0] > 0,
            "mask_blur": self.mask_blur[0] >= 0,
            "blend_ratio": 0 < self.blend_ratio[0] and self.blend_ratio[1] <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"BlendParams out of range: {', '.join(bad)} = "
                             + ", ".join(str(getattr(self, name)) for name in bad))


@dataclass(frozen=True)
class BlendSample:
    """The values one :func:`blend_face` call actually drew (pixels unless noted)."""

    manipulation: str
    scale: float
    translate: tuple[float, float]
    rotate_deg: float
    colour_gain: tuple[float, float, float]
    colour_offset: tuple[float, float, float]
    hue_shift_deg: float
    saturation_scale: float
    sharpness: str  # "blur" or "sharpen"
    sharpness_amount: float  # blur sigma, or unsharp-mask amount
    mask_expand: float
    mask_blur: float
    mask_morph: float
    blend_ratio: float


@dataclass(frozen=True)
class BlendResult:
    """Output of :func:`blend_face`.

    Attributes:
        image: Manipulated image, uint8 ``HxWx3``.
        mask: Effective source opacity, float32 ``HxW`` in ``[0, 1]``; the image
            equals the target exactly where it is 0.
        params: The values drawn for this manipulation.
    """

    image: np.ndarray
    mask: np.ndarray
    params: BlendSample


def face_size(landmarks: np.ndarray) -> float:
    """Side in pixels of the ArcFace crop these landmarks fill: roughly the face height."""
    matrix = estimate_similarity(face_template(1, 0.0), _check_landmarks(landmarks))
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2].astype(np.float64)))))


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {points.shape}")
    return points


def _check_image(image: np.ndarray, name: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 HxWx3, got {image.dtype} {image.shape}")


def _mask_polygon(landmarks: np.ndarray, expand: float) -> np.ndarray:
    """Face polygon: hull of the landmarks and of an oval extrapolated from them.

    The oval lives in the face's own (possibly sheared) frame spanned by the
    eye-to-eye and mouth-to-eye vectors, so it follows roll, scale and some yaw;
    it reaches a little above the brows, below the lower lip and onto the cheeks.
    """
    left_eye, right_eye, _, left_mouth, right_mouth = landmarks
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
    up, across = eye_mid - mouth_mid, right_eye - left_eye
    centre = (eye_mid + mouth_mid) / 2
    angles = np.linspace(0.0, 2.0 * np.pi, _OVAL_POINTS, endpoint=False)[:, None]
    oval = centre + 0.85 * np.cos(angles) * across + 0.82 * np.sin(angles) * up
    points = np.vstack([landmarks, oval])
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    centroid = hull.mean(axis=0)
    return centroid + expand * (hull - centroid)


_OVAL_POINTS = 24


def _render_mask(
    shape: tuple[int, int], landmarks: np.ndarray, expand: float, morph_px: float, blur_px: float
) -> np.ndarray:
    """Filled, eroded/dilated and blurred face polygon as float32 ``HxW`` in ``[0, 1]``."""
    height, width = shape
    polygon = _mask_polygon(landmarks, expand)
    radius = int(round(abs(morph_px)))
    kernel_half = int(np.ceil(3.0 * blur_px)) if blur_px > 0 else 0
    pad = radius + kernel_half + 2
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


def landmark_mask(
    shape: tuple[int, int],
    landmarks: np.ndarray,
    rng: np.random.Generator,
    *,
    expand: float | tuple[float, float] = BlendParams.mask_expand,
    blur_sigma: float | tuple[float, float] = BlendParams.mask_blur,
    morph: float | tuple[float, float] = BlendParams.mask_morph,
) -> np.ndarray:
    """Soft face mask shaped by five landmarks.

    The hull of the landmarks and of points extrapolated to the brows, forehead,
    cheeks and chin is scaled about its centroid by ``expand``, filled, eroded or
    dilated by ``morph`` and blurred with sigma ``blur_sigma`` (both fractions of
    :func:`face_size`). Scalars fix a value, pairs are sampled uniformly; the
    defaults are those of :class:`BlendParams`.

    Args:
        shape: ``(height, width)`` of the mask.
        landmarks: ``(5, 2)`` face landmarks in pixels.
        rng: Source of randomness.
        expand: Polygon scale about its centroid.
        blur_sigma: Soft-edge sigma as a fraction of the face size.
        morph: Erosion (negative) / dilation (positive) radius as a fraction of the face size.

    Returns:
        float32 ``HxW`` mask in ``[0, 1]``, exactly 0 away from the face.
    """
    points = _check_landmarks(landmarks)
    size = face_size(points)
    expand_value = rng.uniform(*_as_range(expand, "expand"))
    morph_value = rng.uniform(*_as_range(morph, "morph")) * size
    blur_value = rng.uniform(*_as_range(blur_sigma, "blur_sigma")) * size
    return _render_mask(tuple(shape[:2]), points, expand_value, morph_value, blur_value)


def _signed(rng: np.random.Generator, bounds: Range, count: int) -> np.ndarray:
    """``count`` magnitudes drawn from ``bounds`` with independent random signs."""
    magnitude = rng.uniform(bounds[0], bounds[1], size=count)
    return magnitude * rng.choice([-1.0, 1.0], size=count)


def _sample(params: BlendParams, rng: np.random.Generator, size: float, kind: str) -> BlendSample:
    """Draw one manipulation; the order of draws is fixed so results are reproducible."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(*params.translate) * size
    sharpen = bool(rng.random() < params.sharpen_prob)
    return BlendSample(
        manipulation=kind,
        scale=float(rng.uniform(*params.scale)),
        translate=(float(shift * np.cos(angle)), float(shift * np.sin(angle))),
        rotate_deg=float(rng.uniform(*params.rotate_deg)),
        colour_gain=tuple(float(g) for g in 1.0 + _signed(rng, params.colour_gain, 3)),
        colour_offset=tuple(float(o) for o in _signed(rng, params.colour_offset, 3)),
        hue_shift_deg=float(rng.uniform(*params.hue_shift_deg)),
        saturation_scale=float(rng.uniform(*params.saturation_scale)),
        sharpness="sharpen" if sharpen else "blur",
        sharpness_amount=float(rng.uniform(*(params.sharpen if sharpen else params.blur_sigma))),
        mask_expand=float(rng.uniform(*params.mask_expand)),
        mask_blur=float(rng.uniform(*params.mask_blur) * size),
        mask_morph=float(rng.uniform(*params.mask_morph) * size),
        blend_ratio=float(rng.uniform(*params.blend_ratio)),
    )


def _jitter_matrix(sample: BlendSample, centre: np.ndarray) -> np.ndarray:
    """3x3 scale/rotation about ``centre`` followed by the sampled shift."""
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D(
        (float(centre[0]), float(centre[1])), sample.rotate_deg, sample.scale
    )
    matrix[:2, 2] += sample.translate
    return matrix


_UNSHARP_SIGMA = 1.5


def _restyle(source: np.ndarray, sample: BlendSample) -> np.ndarray:
    """Apply the sampled colour and sharpness mismatch to a float32 RGB image in ``[0, 255]``."""
    hsv = cv2.cvtColor(source / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    hsv[..., 0] = np.mod(hsv[..., 0] + sample.hue_shift_deg, 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * sample.saturation_scale, 0.0, 1.0)
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    image = image * np.float32(sample.colour_gain) + np.float32(sample.colour_offset)
    if sample.sharpness == "blur":
        image = cv2.GaussianBlur(image, (0, 0), sample.sharpness_amount)
    else:
        smooth = cv2.GaussianBlur(image, (0, 0), _UNSHARP_SIGMA)
        image = image + sample.sharpness_amount * (image - smooth)
    return np.clip(image, 0.0, 255.0)


def blend_face(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    rng: np.random.Generator,
    *,
    source: np.ndarray | None = None,
    source_landmarks: np.ndarray | None = None,
    params: BlendParams | None = None,
) -> BlendResult:
    """Blend a (self- or donor-) source face into ``target`` inside a soft landmark mask.

    Without ``source`` this is a self-blend: the source is the target itself,
    slightly rescaled, shifted and rotated. With ``source`` (and its
    ``source_landmarks``) the donor face is first aligned onto the target by
    the similarity transform between the two landmark sets, then jittered the
    same way. The source then gets a colour shift and is blurred or sharpened,
    and ``image = mask * source + (1 - mask) * target``.

    Args:
        target: uint8 ``HxWx3`` image holding the face to manipulate.
        target_landmarks: ``(5, 2)`` landmarks of that face.
        rng: Source of randomness; the same generator state gives the same result.
        source: Optional uint8 ``HxWx3`` donor image (any size).
        source_landmarks: ``(5, 2)`` landmarks of the donor face; required with ``source``.
        params: Sampling ranges; defaults to ``BlendParams()``.

    Returns:
        The manipulated image, the effective mask and the drawn values.
    """
    _check_image(target, "target")
    target_points = _check_landmarks(target_landmarks)
    if source is None:
        if source_landmarks is not None:
            raise ValueError("source_landmarks given without a source image")
        kind, source, base = SELF_BLEND, target, np.eye(3)
    else:
        if source_landmarks is None:
            raise ValueError("a source image needs source_landmarks")
        _check_image(source, "source")
        kind, base = FACE_SWAP, np.eye(3)
        base[:2] = estimate_similarity(_check_landmarks(source_landmarks), target_points)
    params = params or BlendParams()
    size = face_size(target_points)
    sample = _sample(params, rng, size, kind)
    height, width = target.shape[:2]
    mask = _render_mask((height, width), target_points, sample.mask_expand,
                        sample.mask_morph, sample.mask_blur) * np.float32(sample.blend_ratio)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        logger.warning("empty face mask; returning the target unchanged")
        return BlendResult(target.copy(), mask, sample)
    # Work on the mask's bounding box only, padded so filters see real pixels.
    pad = int(np.ceil(3.0 * max(sample.sharpness_amount, _UNSHARP_SIGMA))) + 2
    y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, height)
    x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, width)
    warp = _jitter_matrix(sample, target_points.mean(axis=0)) @ base
    warp[:2, 2] -= (x0, y0)
    warped = cv2.warpAffine(source, warp[:2], (int(x1 - x0), int(y1 - y0)),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    styled = _restyle(warped.astype(np.float32), sample)
    region = target[y0:y1, x0:x1].astype(np.float32)
    alpha = mask[y0:y1, x0:x1, None]
    blended = np.clip(np.rint(region + alpha * (styled - region)), 0, 255).astype(np.uint8)
    image = target.copy()
    image[y0:y1, x0:x1] = np.where(alpha > 0, blended, target[y0:y1, x0:x1])
    logger.debug("%s: ratio %.2f, %s %.2f", kind, sample.blend_ratio, sample.sharpness,
                 sample.sharpness_amount)
    return BlendResult(image, mask, sample)
