"""Landmark-guided face blending: self-blended images and face swaps.

This is the one implementation of face manipulation in deepfake-scan. Training
uses it to make self-blended pseudo-fakes (Shiohara & Yamasaki, "Detecting
Deepfakes with Self-Blended Images", CVPR 2022): a face is blended with a
slightly transformed, colour- and sharpness-shifted copy of itself, so the only
evidence left is the blending boundary and the statistics mismatch inside it.
The sample archive uses it for both self-blends and donor face swaps.

This module applies a blend: it warps the source, restyles it, and mixes it in
under the soft mask of :mod:`models.face_mask`. What a blend draws (the ranges
of :class:`BlendParams`, the training-only :class:`BlendVariety`, the drawn
:class:`BlendSample`) is :mod:`models.blend_params`; both are re-exported here,
with the mask helpers, so a caller of the blending API imports one module.

Everything is plain numpy/OpenCV and deterministic given a
``np.random.Generator``. Landmarks are the five MTCNN points (left eye, right
eye, nose, left mouth corner, right mouth corner) in ``(x, y)`` pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from models.align import estimate_similarity
from models.blend_params import (
    COLOUR,
    FACE_SWAP,
    JPEG,
    MANIPULATIONS,
    MISALIGN,
    MISMATCHES,
    NOISE,
    RESAMPLE,
    SELF_BLEND,
    SHARPNESS,
    WARP,
    BlendParams,
    BlendSample,
    BlendVariety,
    draw_blend,
    manipulation_names,
)
from models.face_mask import (
    MASK_OUTLINES,
    OUTLINES,
    PART_OUTLINES,
    check_landmarks,
    displacement_maps,
    face_size,
    landmark_mask,
    render_mask,
)

logger = logging.getLogger(__name__)

_UNSHARP_SIGMA = 1.5  # Gaussian of the unsharp mask that sharpens a source
_MIN_CLONE_PIXELS = 16  # smaller mask cores are alpha-blended (cv2.seamlessClone fails on a few pixels)

# The blending API in one import: what a blend draws (models.blend_params) and where masks
# are drawn (models.face_mask) are re-exported, so callers need not know where each lives.
__all__ = [
    "COLOUR", "FACE_SWAP", "JPEG", "MANIPULATIONS", "MASK_OUTLINES", "MISALIGN", "MISMATCHES",
    "NOISE", "OUTLINES", "PART_OUTLINES", "RESAMPLE", "SELF_BLEND", "SHARPNESS", "WARP", "BlendParams", "BlendResult", "BlendSample",
    "BlendVariety", "blend_face", "face_size", "landmark_mask", "manipulation_names",
]


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
    sample = draw_blend(params, rng, size, kind, target_points.mean(axis=0))
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
    pad += int(np.ceil(3.0 * sample.warp))
    y0, y1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, height)
    x0, x1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, width)
    warp = _jitter_matrix(sample, target_points.mean(axis=0)) @ base
    warp[:2, 2] -= (x0, y0)
    warped = cv2.warpAffine(source, warp[:2], (int(x1 - x0), int(y1 - y0)),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if sample.warp > 0:
        # The displacement fades with the mask's shape, so the warp is the identity at its
        # edge (as a local re-render moves pixels) and the blend leaves no double edge.
        map_x, map_y = displacement_maps(warped.shape[:2], sample.warp, sample.warp_seed)
        fade = np.clip(mask[y0:y1, x0:x1] / np.float32(sample.blend_ratio), 0.0, 1.0)
        xs, ys = np.meshgrid(np.arange(x1 - x0, dtype=np.float32), np.arange(y1 - y0, dtype=np.float32))
        warped = cv2.remap(warped, xs + fade * (map_x - xs), ys + fade * (map_y - ys), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    styled = _restyle(warped.astype(np.float32), sample)
    region = target[y0:y1, x0:x1].astype(np.float32)
    alpha = mask[y0:y1, x0:x1, None]
    if sample.seamless:
        # The cloned region is the mask's shape, whatever the blend ratio scales it by.
        styled = _poisson_clone(styled, target[y0:y1, x0:x1], mask[y0:y1, x0:x1] / np.float32(sample.blend_ratio))
    blended = np.clip(np.rint(region + alpha * (styled - region)), 0, 255).astype(np.uint8)
    image = target.copy()
    image[y0:y1, x0:x1] = np.where(alpha > 0, blended, target[y0:y1, x0:x1])
    logger.debug("%s: ratio %.2f, mask %s, mismatches %s", kind, sample.blend_ratio,
                 sample.mask_outline, ",".join(sample.mismatches))
    return BlendResult(image, mask, sample)


def _check_image(image: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``image`` is uint8 ``HxWx3``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be uint8 HxWx3, got {image.dtype} {image.shape}")


def _jitter_matrix(sample: BlendSample, centre: np.ndarray) -> np.ndarray:
    """3x3 scale/rotation about ``centre`` followed by the sampled shift."""
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D(
        (float(centre[0]), float(centre[1])), sample.rotate_deg, sample.scale
    )
    matrix[:2, 2] += sample.translate
    return matrix


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


def _poisson_clone(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``source`` (float32) cloned into ``target`` (uint8) in the gradient domain where ``mask`` > 0.5.

    Inside the mask the result keeps the source's gradients and takes the target's
    values at the mask's edge (``cv2.seamlessClone``); outside it is the target.
    Images are padded first, since OpenCV wants the mask clear of the border. A
    region too small to clone (OpenCV fails on a few pixels) keeps the source as it
    is, so the blend is an alpha blend.
    """
    inside = np.where(mask > 0.5, 255, 0).astype(np.uint8)
    if np.count_nonzero(cv2.erode(inside, np.ones((3, 3), np.uint8))) < _MIN_CLONE_PIXELS:
        logger.debug("Poisson blending skipped: the mask's core is under %d pixels", _MIN_CLONE_PIXELS)
        return source
    pad = 2
    src, dst = (cv2.copyMakeBorder(a, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
                for a in (np.clip(np.rint(source), 0, 255).astype(np.uint8), target))
    inside = cv2.copyMakeBorder(inside, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(inside)
    cloned = cv2.seamlessClone(src, dst, inside, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return cloned[pad:-pad, pad:-pad].astype(np.float32)


def _grain(shape: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
    """Sensor-like grain of standard deviation ``sigma`` levels, ``HxWx3`` float32.

    Mostly luminance (one field shared by the channels) with a little chroma, and
    slightly correlated between neighbours, as demosaicing and denoising leave it.
    """
    rng = np.random.default_rng(seed)
    luma = rng.standard_normal(shape).astype(np.float32)
    chroma = 0.3 * rng.standard_normal((*shape, 3)).astype(np.float32)
    field = cv2.GaussianBlur(luma[..., None] + chroma, (0, 0), 0.6)
    return field * np.float32(sigma / max(float(field.std()), 1e-6))


def _restyle(source: np.ndarray, sample: BlendSample) -> np.ndarray:
    """Apply the sampled appearance mismatches to a float32 RGB image in ``[0, 255]``.

    Order: colour (HSV, per-channel gain and offset, brightness and contrast),
    blur or sharpening, grain, resampling, JPEG.
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
    if sample.noise_sigma > 0:
        image = image + _grain(image.shape[:2], sample.noise_sigma, sample.noise_seed)
    if sample.resample < 1.0:
        image = _resample(image, sample.resample, sample.resample_interpolation)
    if sample.jpeg_quality:
        image = _jpeg(image, sample.jpeg_quality)
    return np.clip(image, 0.0, 255.0)
