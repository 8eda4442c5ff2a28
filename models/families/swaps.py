"""The two swap families: a donor's face put on the target's.

- ``graphics_swap`` (FaceSwap-style): the donor face warped onto the target by
  the piecewise-affine mesh, colour-transferred in Lab and Poisson-blended.
- ``neural_render`` (DeepFakes/FaceShifter-style): the donor face rendered at a
  generator's low resolution, smoothed as by a bottleneck, and brought back by
  zero-insertion transposed-convolution upsampling (periodic spectral traces).
"""
from __future__ import annotations

import cv2
import numpy as np

from models.align import estimate_similarity
from models.families.compositing import FamilyResult, check_face, feathered_mask, transfer_colour
from models.families.mesh import FACE_HULL, face_size, hull_mask, piecewise_affine_maps

GRAPHICS_SWAP = "graphics_swap"
NEURAL_RENDER = "neural_render"


def graphics_swap(target: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                  donor: np.ndarray, donor_landmarks: np.ndarray) -> FamilyResult:
    """FaceSwap-style graphics swap: mesh warp of the donor, Lab colour transfer, Poisson blend.

    The mask is the convex hull of the brows, cheeks and lower jaw line (FaceSwap's
    landmark-hull mask) scaled by 0.95-1.05; colour transfer is 80-100 % as
    tools expose it as a strength; Poisson cloning (``cv2.seamlessClone``) makes
    the boundary gradient-consistent instead of alpha-blended.
    """
    dst = check_face(target, landmarks, "target")
    src = check_face(donor, donor_landmarks, "donor")
    height, width = target.shape[:2]
    size = face_size(landmarks)
    params = {"hull_scale": float(rng.uniform(0.95, 1.05)),
              "colour_strength": float(rng.uniform(0.8, 1.0))}
    map_x, map_y, covered = piecewise_affine_maps(src, dst, (height, width))
    warped = cv2.remap(donor, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    mask = hull_mask((height, width), dst[FACE_HULL], params["hull_scale"])
    mask[~covered] = 0
    mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    warped = transfer_colour(warped, target, mask, params["colour_strength"])
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
    dst = check_face(target, landmarks, "target")
    check_face(donor, donor_landmarks, "donor")
    height, width = target.shape[:2]
    size = face_size(landmarks)
    params = {"imbalance": float(rng.uniform(0.008, 0.02)) * float(rng.choice([-1.0, 1.0])),
              "smooth_colour": float(rng.uniform(15.0, 35.0)),
              "smooth_space": float(rng.uniform(1.0, 2.0)),
              "erode": float(rng.uniform(0.02, 0.04)), "feather": float(rng.uniform(0.02, 0.04))}
    hull = hull_mask((height, width), dst[FACE_HULL])
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
    low = transfer_colour(low, low_target, low_mask)
    low = cv2.bilateralFilter(low, 5, params["smooth_colour"], params["smooth_space"])
    rendered = low.astype(np.float32)
    for _ in range(stages):
        rendered = _transposed_upsample(rendered, rng, params["imbalance"])
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[box] = feathered_mask(hull[box], params["erode"] * size, params["feather"] * size)
    image = target.copy()
    region = target[box].astype(np.float32)
    a = alpha[box][..., None]
    image[box] = np.clip(np.rint(region + a * (rendered - region)), 0, 255).astype(np.uint8)
    return FamilyResult(image, alpha, params)
