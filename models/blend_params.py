"""What one face blend draws: the ranges, the training-only variety, and the values drawn.

:class:`BlendParams` alone is the sample archive's recipe: every blend gets a
misalignment, a colour shift and a blur or sharpening, inside the ``"face"``
mask. Training adds a :class:`BlendVariety`: mask outline (whole face or one
part) and deformation, which mismatches (misalignment, colour, sharpness,
resampling, JPEG, grain, warp) a blend gets, and whether it is blended in the
gradient domain, are then drawn at random too; its draws come after all of
:class:`BlendParams`' draws, so the sample archive's blends do not change.
:func:`draw_blend` turns ranges into one :class:`BlendSample`;
:func:`models.manipulate.blend_face` applies it.

Geometric ranges are fractions of the face size (see
:func:`models.face_mask.face_size`), so a parameter set means the same thing
for a 128-pixel training crop and a 1080p frame; colour offsets are in 8-bit
levels and sharpness sigmas in pixels. The order of draws is fixed, so a
generator state gives the same blend on every machine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from models.face_mask import (
    DEFAULT_BLUR,
    DEFAULT_EXPAND,
    DEFAULT_MORPH,
    FACE_OUTLINE,
    MASK_OUTLINES,
    OUTLINES,
    as_range,
)

SELF_BLEND = "self_blend"
FACE_SWAP = "face_swap"
MANIPULATIONS: tuple[str, ...] = (SELF_BLEND, FACE_SWAP)

# Source/target mismatches a blend can carry. The sample archive's blends always carry
# the first three; with a BlendVariety each is drawn with its own probability.
MISALIGN, COLOUR, SHARPNESS, RESAMPLE, JPEG = "misalign", "colour", "sharpness", "resample", "jpeg"
NOISE, WARP = "noise", "warp"
MISMATCHES: tuple[str, ...] = (MISALIGN, COLOUR, SHARPNESS, RESAMPLE, JPEG, NOISE, WARP)
_APPEARANCE = (COLOUR, SHARPNESS, RESAMPLE, JPEG)  # a varied blend always carries one of these

Range = tuple[float, float]


def manipulation_names() -> tuple[str, ...]:
    """Names of the manipulations :func:`models.manipulate.blend_face` makes, as manifests write them."""
    return MANIPULATIONS


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
        noise_p: Probability of grain in the source that the target lacks (or more of
            it): a region re-synthesised, or shot by another camera, carries another
            noise level.
        noise_sigma: Standard deviation of that grain in 8-bit levels.
        warp_p: Probability of bending the source by a smooth random displacement field:
            a region re-rendered with its own geometry, resampled on the way.
        warp_amount: Typical displacement of that field, fraction of the face size.
        seamless_p: Probability of gradient-domain (Poisson) blending: the source's
            colour then meets the target's at the mask edge, and only what lies
            inside (texture, sharpness, noise, geometry) gives it away.
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
    noise_p: float = 0.3
    noise_sigma: Range = (1.5, 6.0)
    warp_p: float = 0.3
    warp_amount: Range = (0.005, 0.02)
    seamless_p: float = 0.3

    def __post_init__(self) -> None:
        outlines = tuple(str(o) for o in (
            [self.mask_outlines] if isinstance(self.mask_outlines, str) else self.mask_outlines))
        unknown = sorted(set(outlines) - set(OUTLINES))
        if not outlines or unknown:
            raise ValueError(f"mask_outlines must name some of {OUTLINES}, got {outlines}")
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
            "noise_sigma": self.noise_sigma[0] > 0,
            "warp_amount": 0 < self.warp_amount[0] and self.warp_amount[1] < 0.1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"BlendVariety out of range: {', '.join(bad)} = "
                             + ", ".join(str(getattr(self, name)) for name in bad))

    def probabilities(self) -> dict[str, float]:
        """Mismatch name -> probability of applying it."""
        return {MISALIGN: self.misalign_p, COLOUR: self.colour_p, SHARPNESS: self.sharpness_p,
                RESAMPLE: self.resample_p, JPEG: self.jpeg_p, NOISE: self.noise_p, WARP: self.warp_p}


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
    noise_sigma: float = 0.0  # grain added to the source, 8-bit levels; 0: none
    noise_seed: int = 0
    warp: float = 0.0  # typical displacement of the source's smooth warp; 0: none
    warp_seed: int = 0
    seamless: bool = False  # gradient-domain (Poisson) blending instead of alpha only


def draw_blend(params: BlendParams, rng: np.random.Generator, size: float, kind: str,
               centre: np.ndarray) -> BlendSample:
    """Draw one blend of ``kind`` for a face of ``size`` pixels centred on ``centre``.

    The ranges of ``params`` first, then, with ``params.variety``, the training
    variety; the number and order of draws never depend on the values drawn.
    """
    sample = _sample(params, rng, size, kind)
    if params.variety is not None:
        sample = _vary(sample, params.variety, rng, size, centre)
    return sample


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
    # The first five mismatches' draws come first, in their original order; noise, warp
    # and seamless blending (added later) draw after everything else.
    applied = {name: bool(rng.random() < chances[name]) for name in MISMATCHES[:5]}
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
    applied[NOISE], applied[WARP] = (bool(rng.random() < chances[name]) for name in (NOISE, WARP))
    noise_sigma = float(rng.uniform(*variety.noise_sigma))
    warp = float(rng.uniform(*variety.warp_amount) * size)
    noise_seed, warp_seed = (int(s) for s in rng.integers(2**31, size=2))
    seamless = bool(rng.random() < variety.seamless_p)
    values: dict = dict(
        mismatches=tuple(name for name in MISMATCHES if applied[name]),
        mask_outline=outline,
        mask_affine=tuple(float(v) for v in affine.ravel()) if deform else None,
        mask_elastic=elastic if deform else 0.0,
        mask_elastic_seed=elastic_seed if deform else 0,
        blend_ratio=1.0 if full else sample.blend_ratio,
        seamless=seamless,
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
    if applied[NOISE]:
        values.update(noise_sigma=noise_sigma, noise_seed=noise_seed)
    if applied[WARP]:
        values.update(warp=warp, warp_seed=warp_seed)
    return dataclasses.replace(sample, **values)


def _signed(rng: np.random.Generator, bounds: Range, count: int) -> np.ndarray:
    """``count`` magnitudes drawn from ``bounds`` with independent random signs."""
    magnitude = rng.uniform(bounds[0], bounds[1], size=count)
    return magnitude * rng.choice([-1.0, 1.0], size=count)


def _check_probability(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value
