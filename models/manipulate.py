"""Landmark-guided face blending: self-blended images and face swaps.

This is the one implementation of face manipulation in deepfake-scan. Training
uses it to make self-blended pseudo-fakes (Shiohara & Yamasaki, "Detecting
Deepfakes with Self-Blended Images", CVPR 2022): a face is blended with a
slightly transformed, colour- and sharpness-shifted copy of itself, so the only
evidence left is the blending boundary and the statistics mismatch inside it.
The sample archive uses it for both self-blends and donor face swaps.

:class:`BlendParams` alone is the sample archive's recipe: every blend gets a
misalignment, a colour shift and a blur or sharpening, inside the ``"face"``
mask. Training adds a :class:`BlendVariety`: mask outline and deformation, and
which mismatches (misalignment, colour, sharpness, resampling, JPEG) a blend
gets, are then drawn at random too; its draws come after all of
:class:`BlendParams`' draws, so the sample archive's blends do not change.

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

from models.align import estimate_similarity
from models.face_mask import (
    DEFAULT_BLUR,
    DEFAULT_EXPAND,
    DEFAULT_MORPH,
    FACE_OUTLINE,
    MASK_OUTLINES,
    as_range,
    check_landmarks,
    face_size,
    landmark_mask,
    render_mask,
)

logger = logging.getLogger(__name__)

# face_size, landmark_mask and MASK_OUTLINES are re-exported: callers of the blending API
# need not know where masks are drawn.
__all__ = [
    "COLOUR", "FACE_SWAP", "JPEG", "MANIPULATIONS", "MASK_OUTLINES", "MISALIGN", "MISMATCHES",
    "RESAMPLE", "SELF_BLEND", "SHARPNESS", "BlendParams", "BlendResult", "BlendSample",
    "BlendVariety", "blend_face", "face_size", "landmark_mask", "manipulation_names",
]

SELF_BLEND = "self_blend"
FACE_SWAP = "face_swap"
MANIPULATIONS: tuple[str, ...] = (SELF_BLEND, FACE_SWAP)

# Source/target mismatches a blend can carry. The sample archive's blends always carry
# the first three; with a BlendVariety each is drawn with its own probability.
MISALIGN, COLOUR, SHARPNESS, RESAMPLE, JPEG = "misalign", "colour", "sharpness", "resample", "jpeg"
MISMATCHES: tuple[str, ...] = (MISALIGN, COLOUR, SHARPNESS, RESAMPLE, JPEG)
_APPEARANCE = (COLOUR, SHARPNESS, RESAMPLE, JPEG)  # a varied blend always carries one of these

Range = tuple[float, float]


def manipulation_names() -> tuple[str, ...]:
    """Names of the manipulations produced here, as used in manifest ``manipulation`` columns."""
    return MANIPULATIONS


def _check_probability(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


@dataclass(frozen=True)
class BlendVariety:
    """Training-only variety of blends, on top of the ranges of :class:`BlendParams`.

    Each blend draws a mask outline, whether the mask is deformed, and which
    mismatches it carries; at least one appearance mismatch (colour, sharpness,
    resampling or JPEG) is always applied, so no pseudo-fake equals its real
    crop. Ranges are ``(low, high)`` pairs sampled uniformly.

    Attributes:
        mask_outlines: Mask outlines drawn uniformly (see ``models.face_mask.MASK_OUTLINES``).
        mask_deform_p: Probability of deforming the mask (affine, then elastic).
        mask_affine: Magnitude ``m`` of the mask's affine map: its linear part is
            ``I + U(-m, m)`` per entry, its shift ``U(-m/2, m/2)`` face sizes per axis.
        mask_elastic: Typical elastic displacement of the mask edge, fraction of the face size.
        misalign_p: Probability of misaligning the source (scale, shift, rotation).
        colour_p: Probability of the colour mismatch (gain, offset, hue, saturation,
            brightness, contrast).
        brightness: ``|factor - 1|`` of the source's brightness, random sign.
        contrast: ``|factor - 1|`` of the source's contrast about its mean, random sign.
        sharpness_p: Probability of blurring or sharpening the source.
        resample_p: Probability of shrinking the source and scaling it back up
            (area or nearest-neighbour down, bilinear up).
        resample_scale: Shrink factor of that resampling.
        jpeg_p: Probability of JPEG-compressing the source (the target keeps its own
            compression), at a quality from ``jpeg_quality``.
        jpeg_quality: JPEG quality range, integers in ``[1, 100]``.
        full_blend_p: Probability of a blend ratio of exactly 1; otherwise it is
            drawn from ``BlendParams.blend_ratio``.
    """

    mask_outlines: tuple[str, ...] = MASK_OUTLINES
    mask_deform_p: float = 0.5
    mask_affine: Range = (0.0, 0.08)
    mask_elastic: Range = (0.0, 0.02)
    misalign_p: float = 0.5
    colour_p: float = 0.6
    brightness: Range = (0.0, 0.1)
    contrast: Range = (0.0, 0.15)
    sharpness_p: float = 0.5
    resample_p: float = 0.3
    resample_scale: Range = (0.3, 0.75)
    jpeg_p: float = 0.3
    jpeg_quality: Range = (30, 90)
    full_blend_p: float = 0.5

    def __post_init__(self) -> None:
        outlines = tuple(str(o) for o in (
            [self.mask_outlines] if isinstance(self.mask_outlines, str) else self.mask_outlines))
        unknown = sorted(set(outlines) - set(MASK_OUTLINES))
        if not outlines or unknown:
            raise ValueError(f"mask_outlines must name some of {MASK_OUTLINES}, got {outlines}")
        object.__setattr__(self, "mask_outlines", outlines)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_p"):
                object.__setattr__(self, field.name, _check_probability(field.name, value))
            elif field.name != "mask_outlines":
                object.__setattr__(self, field.name, as_range(value, field.name))
        checks = {
            "mask_affine": 0 <= self.mask_affine[0] and self.mask_affine[1] < 0.5,
            "mask_elastic": self.mask_elastic[0] >= 0,
            "brightness": 0 <= self.brightness[0] and self.brightness[1] < 1,
            "contrast": 0 <= self.contrast[0] and self.contrast[1] < 1,
            "resample_scale": 0 < self.resample_scale[0] and self.resample_scale[1] <= 1,
            "jpeg_quality": 1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100
            and all(float(q).is_integer() for q in self.jpeg_quality),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"BlendVariety out of range: {', '.join(bad)} = "
                             + ", ".join(str(getattr(self, name)) for name in bad))

    def probabilities(self) -> dict[str, float]:
        """Mismatch name -> probability of applying it."""
        return {MISALIGN: self.misalign_p, COLOUR: self.colour_p, SHARPNESS: self.sharpness_p,
                RESAMPLE: self.resample_p, JPEG: self.jpeg_p}


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
        variety: Training-only variety (mask outline and deformation, random choice of
            mismatches); ``None``, the default, is the sample archive's recipe.
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
    mask_expand: Range = DEFAULT_EXPAND
    mask_blur: Range = DEFAULT_BLUR
    mask_morph: Range = DEFAULT_MORPH
    blend_ratio: Range = (0.85, 1.0)
    variety: BlendVariety | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if field.name in ("sharpen_prob", "variety"):
                continue
            low, high = as_range(getattr(self, field.name), field.name)
            object.__setattr__(self, field.name, (low, high))
        if not 0.0 <= self.sharpen_prob <= 1.0:
            raise ValueError(f"sharpen_prob must be in [0, 1], got {self.sharpen_prob}")
        if self.variety is not None and not isinstance(self.variety, BlendVariety):
            raise ValueError(f"variety must be a BlendVariety or None, got {self.variety!r}")
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
    """The values one :func:`blend_face` call actually drew and applied (pixels unless noted).

    A mismatch that was not applied holds its neutral value (scale 1, gain 1,
    sharpness ``"none"``, resample 1, JPEG quality 0, ...); ``mismatches`` names
    those that were.
    """

    manipulation: str
    scale: float
    translate: tuple[float, float]
    rotate_deg: float
    colour_gain: tuple[float, float, float]
    colour_offset: tuple[float, float, float]
    hue_shift_deg: float
    saturation_scale: float
    sharpness: str  # "blur", "sharpen" or "none"
    sharpness_amount: float  # blur sigma, or unsharp-mask amount
    mask_expand: float
    mask_blur: float
    mask_morph: float
    blend_ratio: float
    mismatches: tuple[str, ...] = (MISALIGN, COLOUR, SHARPNESS)
    mask_outline: str = FACE_OUTLINE
    mask_affine: tuple[float, ...] | None = None  # 2x3 map of the mask outline, row-major
    mask_elastic: float = 0.0  # typical displacement of the elastic deformation
    mask_elastic_seed: int = 0
    brightness: float = 1.0
    contrast: float = 1.0
    resample: float = 1.0  # shrink factor before scaling back up; 1: none
    resample_interpolation: str = ""  # "area" or "nearest" when resampled
    jpeg_quality: int = 0  # quality of the source's JPEG round trip; 0: none


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


def _check_image(image: np.ndarray, name: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 HxWx3, got {image.dtype} {image.shape}")


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


def _vary(sample: BlendSample, variety: BlendVariety, rng: np.random.Generator, size: float,
          centre: np.ndarray) -> BlendSample:
    """Draw a training blend's variety after :func:`_sample`; a fixed number of draws.

    Every value is drawn whether or not it is used, so one decision does not shift
    the draws of the next; mismatches that are off get their neutral values.
    """
    outline = variety.mask_outlines[int(rng.integers(len(variety.mask_outlines)))]
    deform = bool(rng.random() < variety.mask_deform_p)
    magnitude = rng.uniform(*variety.mask_affine)
    linear = np.eye(2) + rng.uniform(-magnitude, magnitude, size=(2, 2))
    shift = rng.uniform(-magnitude / 2, magnitude / 2, size=2) * size
    affine = np.hstack([linear, (centre - linear @ centre + shift)[:, None]])  # about the centre
    elastic = float(rng.uniform(*variety.mask_elastic) * size)
    elastic_seed = int(rng.integers(2**31))
    chances = variety.probabilities()
    applied = {name: bool(rng.random() < p) for name, p in chances.items()}
    brightness, contrast = (float(1.0 + _signed(rng, r, 1)[0])
                            for r in (variety.brightness, variety.contrast))
    resample = float(rng.uniform(*variety.resample_scale))
    interpolation = "nearest" if rng.random() < 0.5 else "area"
    low, high = (int(q) for q in variety.jpeg_quality)
    quality = int(rng.integers(low, high, endpoint=True))
    full = bool(rng.random() < variety.full_blend_p)
    possible = [name for name in _APPEARANCE if chances[name] > 0]
    if possible:
        forced = possible[int(rng.integers(len(possible)))]
        if not any(applied[name] for name in possible):
            applied[forced] = True
    values: dict = dict(
        mismatches=tuple(name for name in MISMATCHES if applied[name]),
        mask_outline=outline,
        mask_affine=tuple(float(v) for v in affine.ravel()) if deform else None,
        mask_elastic=elastic if deform else 0.0,
        mask_elastic_seed=elastic_seed if deform else 0,
        blend_ratio=1.0 if full else sample.blend_ratio,
    )
    if not applied[MISALIGN]:
        values.update(scale=1.0, translate=(0.0, 0.0), rotate_deg=0.0)
    if applied[COLOUR]:
        values.update(brightness=brightness, contrast=contrast)
    else:
        values.update(colour_gain=(1.0, 1.0, 1.0), colour_offset=(0.0, 0.0, 0.0),
                      hue_shift_deg=0.0, saturation_scale=1.0)
    if not applied[SHARPNESS]:
        values.update(sharpness="none", sharpness_amount=0.0)
    if applied[RESAMPLE]:
        values.update(resample=resample, resample_interpolation=interpolation)
    if applied[JPEG]:
        values.update(jpeg_quality=quality)
    return dataclasses.replace(sample, **values)


def _jitter_matrix(sample: BlendSample, centre: np.ndarray) -> np.ndarray:
    """3x3 scale/rotation about ``centre`` followed by the sampled shift."""
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D(
        (float(centre[0]), float(centre[1])), sample.rotate_deg, sample.scale
    )
    matrix[:2, 2] += sample.translate
    return matrix


_UNSHARP_SIGMA = 1.5


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip (4:2:0) of a float32 RGB image in ``[0, 255]``."""
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an image of shape {image.shape}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32)


def _resample(image: np.ndarray, factor: float, interpolation: str) -> np.ndarray:
    """Shrink by ``factor`` and scale back up (bilinear): the source loses its finest detail."""
    height, width = image.shape[:2]
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
    down = cv2.INTER_NEAREST if interpolation == "nearest" else cv2.INTER_AREA
    return cv2.resize(cv2.resize(image, small, interpolation=down), (width, height),
                      interpolation=cv2.INTER_LINEAR)


def _restyle(source: np.ndarray, sample: BlendSample) -> np.ndarray:
    """Apply the sampled appearance mismatches to a float32 RGB image in ``[0, 255]``.

    Order: colour (HSV, per-channel gain and offset, brightness and contrast),
    blur or sharpening, resampling, JPEG.
    """
    image = source
    if COLOUR in sample.mismatches:
        hsv = cv2.cvtColor(source / 255.0, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
        hsv[..., 0] = np.mod(hsv[..., 0] + sample.hue_shift_deg, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * sample.saturation_scale, 0.0, 1.0)
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
        image = image * np.float32(sample.colour_gain) + np.float32(sample.colour_offset)
        if sample.contrast != 1.0 or sample.brightness != 1.0:
            mean = np.float32(image.mean())
            image = (image - mean) * np.float32(sample.contrast) + mean
            image = image * np.float32(sample.brightness)
    if sample.sharpness == "blur":
        image = cv2.GaussianBlur(image, (0, 0), sample.sharpness_amount)
    elif sample.sharpness == "sharpen":
        smooth = cv2.GaussianBlur(image, (0, 0), _UNSHARP_SIGMA)
        image = image + sample.sharpness_amount * (image - smooth)
    if sample.resample < 1.0:
        image = _resample(image, sample.resample, sample.resample_interpolation)
    if sample.jpeg_quality:
        image = _jpeg(image, sample.jpeg_quality)
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
    and ``image = mask * source + (1 - mask) * target``. With ``params.variety``
    the mask outline and deformation, and which mismatches the source carries,
    are drawn as well (see :class:`BlendVariety`); without it the result is that
    of the sample archive.

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
    target_points = check_landmarks(target_landmarks)
    if source is None:
        if source_landmarks is not None:
            raise ValueError("source_landmarks given without a source image")
        kind, source, base = SELF_BLEND, target, np.eye(3)
    else:
        if source_landmarks is None:
            raise ValueError("a source image needs source_landmarks")
        _check_image(source, "source")
        kind, base = FACE_SWAP, np.eye(3)
        base[:2] = estimate_similarity(check_landmarks(source_landmarks), target_points)
    params = params or BlendParams()
    size = face_size(target_points)
    sample = _sample(params, rng, size, kind)
    if params.variety is not None:
        sample = _vary(sample, params.variety, rng, size, target_points.mean(axis=0))
    height, width = target.shape[:2]
    mask = render_mask((height, width), target_points, sample.mask_expand, sample.mask_morph,
                       sample.mask_blur, outline=sample.mask_outline, affine=sample.mask_affine,
                       elastic_px=sample.mask_elastic, elastic_seed=sample.mask_elastic_seed)
    mask *= np.float32(sample.blend_ratio)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        logger.warning("empty face mask; returning the target unchanged")
        return BlendResult(target.copy(), mask, sample)
    # Work on the mask's bounding box only, padded so filters see real pixels.
    pad = int(np.ceil(3.0 * max(sample.sharpness_amount, _UNSHARP_SIGMA))) + 2
    if sample.resample < 1.0 or sample.jpeg_quality:  # their blocks reach further
        pad += 8 + int(np.ceil(1.0 / sample.resample))
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
    logger.debug("%s: ratio %.2f, mask %s, mismatches %s", kind, sample.blend_ratio,
                 sample.mask_outline, ",".join(sample.mismatches))
    return BlendResult(image, mask, sample)
