"""Training augmentations for aligned face crops.

Crops are uint8 ``HxWx3`` RGB arrays as produced by :func:`models.align.align_face`;
every random choice comes from a caller's ``np.random.Generator``, so a seed
fixes the result. :class:`TrainAugment` first may turn a real crop into a
self-blended pseudo-fake (Shiohara & Yamasaki 2022, via
:func:`models.manipulate.blend_face` with the diverse training recipe of
:func:`self_blend_params`: random mask outlines and deformations, and a random
set of source/target mismatches, so the detector learns blending in general
rather than one blend), then applies flip, colour jitter,
down-and-up scaling, and last Gaussian blur and JPEG re-compression with the
probabilities of Wang et al. 2020 ("CNN-generated images are surprisingly easy
to spot... for now"). Evaluation does not augment.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace

import cv2
import numpy as np

from models.align import face_template
from models.crops import CropSpec
from models.face_mask import MASK_OUTLINES, OUTLINES
from models.labels import FAKE_INDEX as FAKE
from models.labels import REAL_INDEX as REAL
from models.manipulate import SELF_BLEND, BlendParams, BlendVariety, blend_face

logger = logging.getLogger(__name__)

_PROBABILITIES = ("flip_p", "color_jitter_p", "downscale_p", "blur_p", "jpeg_p", "sbi_p",
                  "sbi_mask_deform_p", "sbi_misalign_p", "sbi_color_p", "sbi_sharpness_p",
                  "sbi_resample_p", "sbi_jpeg_p", "sbi_full_blend_p", "sbi_noise_p", "sbi_warp_p",
                  "sbi_seamless_p", "sbi_warp_only_p")
_NOT_PAIRS = _PROBABILITIES + ("sbi_mask_outlines",)
_MIN_SIGMA = 0.1  # below this a Gaussian kernel is the identity on uint8 pixels
_GRAY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma


def _pair(value, name: str) -> tuple[float, float]:
    """``(low, high)`` from a pair (a list from YAML or a tuple); a single number is refused."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not low <= high:
        raise ValueError(f"{name}: low {low} > high {high}")
    return low, high


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the training augmentations: the training config's ``augment`` section.

    A plain dataclass with type hints, so ``pipeline.config`` loads it from YAML
    as it is (ranges arrive as lists); :meth:`validate` says what is out of range.
    Ranges are ``(low, high)`` and sampled uniformly; colour factors multiply
    (1 keeps the image). The alignment margin the self-blend template needs is not
    here: it is how the crops were cut, never a choice (``TrainAugment(margin=...)``).

    The ``sbi_*`` keys shape the self-blends (see :func:`self_blend_params` and
    :class:`models.manipulate.BlendVariety`): ``sbi_mask_outlines`` are drawn
    uniformly, ``sbi_mask_deform_p`` deforms the mask (affine and elastic),
    ``sbi_mask_blur`` is its soft-edge sigma as a fraction of the face size, each
    ``sbi_<mismatch>_p`` is the chance the source carries that mismatch (at least
    one of colour, sharpness, resample and JPEG always; grain and a smooth warp
    come on top), ``sbi_seamless_p`` the chance of Poisson blending, and the blend
    ratio is 1 with ``sbi_full_blend_p``, else drawn from ``sbi_blend_ratio``.
    ``sbi_mask_outlines`` may name whole-face outlines and parts (eyes, nose, mouth:
    a local edit), see :data:`models.face_mask.OUTLINES`.
    """

    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 3.0])
    jpeg_p: float = 0.5
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 100])
    flip_p: float = 0.5
    color_jitter_p: float = 0.3
    brightness: list[float] = field(default_factory=lambda: [0.8, 1.2])
    contrast: list[float] = field(default_factory=lambda: [0.8, 1.2])
    saturation: list[float] = field(default_factory=lambda: [0.8, 1.2])
    downscale_p: float = 0.2
    downscale_range: list[float] = field(default_factory=lambda: [0.5, 0.9])
    sbi_p: float = 0.5  # real crops turned into self-blended pseudo-fakes
    sbi_mask_outlines: list[str] = field(default_factory=lambda: list(MASK_OUTLINES))
    sbi_mask_deform_p: float = 0.5
    sbi_mask_blur: list[float] = field(default_factory=lambda: [0.005, 0.06])
    sbi_misalign_p: float = 0.5
    sbi_color_p: float = 0.6
    sbi_sharpness_p: float = 0.5
    sbi_resample_p: float = 0.3
    sbi_jpeg_p: float = 0.3
    sbi_blend_ratio: list[float] = field(default_factory=lambda: [0.25, 1.0])
    sbi_full_blend_p: float = 0.5
    sbi_noise_p: float = 0.3
    sbi_warp_p: float = 0.3
    sbi_seamless_p: float = 0.3
    # Of the self-blends, the fraction that only move the face's own pixels: a smooth warp
    # of sbi_warp_only_amount face sizes inside the mask, no appearance mismatch at all.
    sbi_warp_only_p: float = 0.0
    sbi_warp_only_amount: list[float] = field(default_factory=lambda: [0.01, 0.04])

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that is out of range."""
        for name in _PROBABILITIES:
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        pairs = {f.name: _pair(getattr(self, f.name), f.name) for f in fields(self) if f.name not in _NOT_PAIRS}
        outlines = self.sbi_mask_outlines
        if isinstance(outlines, str) or not outlines or set(outlines) - set(OUTLINES):
            raise ValueError(f"sbi_mask_outlines must name some of {OUTLINES}, got {outlines!r}")
        checks = {
            "brightness": pairs["brightness"][0] >= 0.0,
            "contrast": pairs["contrast"][0] >= 0.0,
            "saturation": pairs["saturation"][0] >= 0.0,
            "downscale_range": 0.0 < pairs["downscale_range"][0] and pairs["downscale_range"][1] <= 1.0,
            "blur_sigma": pairs["blur_sigma"][0] >= 0.0,
            "jpeg_quality": 0 <= pairs["jpeg_quality"][0] and pairs["jpeg_quality"][1] <= 100
            and all(q.is_integer() for q in pairs["jpeg_quality"]),
            "sbi_mask_blur": pairs["sbi_mask_blur"][0] >= 0.0,
            "sbi_blend_ratio": 0.0 < pairs["sbi_blend_ratio"][0] and pairs["sbi_blend_ratio"][1] <= 1.0,
            "sbi_warp_only_amount": 0.0 < pairs["sbi_warp_only_amount"][0]
            and pairs["sbi_warp_only_amount"][1] < 0.1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)}")


def _check_crop(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape[2:] != (3,):
        raise ValueError(f"expected a uint8 HxWx3 image, got {getattr(img, 'dtype', type(img))} "
                         f"{getattr(img, 'shape', '')}")


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (reflected borders).

    A sigma below 0.1 returns an unchanged copy.
    """
    _check_crop(img)
    if sigma < _MIN_SIGMA:
        return img.copy()
    return cv2.GaussianBlur(img, (0, 0), float(sigma), borderType=cv2.BORDER_REFLECT_101)


def jpeg_recompress(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at ``quality`` (0-100, 4:2:0 chroma) and decode again; RGB in, RGB out."""
    _check_crop(img)
    if not 0 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in [0, 100], got {quality}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # OpenCV's codec expects BGR for correct chroma
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an image of shape {img.shape}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def hflip(img: np.ndarray) -> np.ndarray:
    """Mirror left-right (a contiguous copy)."""
    return np.ascontiguousarray(img[:, ::-1])


def color_jitter(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    brightness: tuple[float, float] = (0.8, 1.2),
    contrast: tuple[float, float] = (0.8, 1.2),
    saturation: tuple[float, float] = (0.8, 1.2),
) -> np.ndarray:
    """Random brightness, contrast and saturation factors, applied in that fixed order.

    As torchvision's ``ColorJitter``: brightness scales the pixels, contrast
    blends with the mean grey level, saturation blends with the per-pixel grey
    image. Values are clipped to ``[0, 255]`` once at the end (cheaper than
    after every step; differs from torchvision only where a step saturates).
    """
    _check_crop(img)
    b, c, s = (rng.uniform(*r) for r in (brightness, contrast, saturation))
    x = img.astype(np.float32) * np.float32(b)
    mean = np.float32((x @ _GRAY).mean())
    x = (x - mean) * np.float32(c) + mean
    grey = (x @ _GRAY)[..., None]
    x = (x - grey) * np.float32(s) + grey
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def downscale(img: np.ndarray, factor: float) -> np.ndarray:
    """Shrink by ``factor`` (area interpolation) and scale back up (bilinear): loses detail.

    ``factor >= 1`` returns an unchanged copy.
    """
    _check_crop(img)
    if factor <= 0:
        raise ValueError(f"downscale factor must be positive, got {factor}")
    if factor >= 1.0:
        return img.copy()
    height, width = img.shape[:2]
    small = (max(1, round(width * factor)), max(1, round(height * factor)))
    shrunk = cv2.resize(img, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR)


# Ranges of the training self-blends; which mismatches a blend carries is drawn per blend
# (BlendVariety). Wider and reaching milder values than the sample archive's BlendParams(),
# which were made strong for a B0 trained from scratch: a pretrained backbone can learn
# subtle blends, and a detector that only knows strong ones misses the rest.
_TRAINING_BLEND = BlendParams(
    scale=(0.94, 1.06),
    translate=(0.0, 0.03),
    rotate_deg=(-2.0, 2.0),
    colour_gain=(0.02, 0.1),
    colour_offset=(2.0, 16.0),
    hue_shift_deg=(-6.0, 6.0),
    saturation_scale=(0.8, 1.2),
    blur_sigma=(0.5, 1.8),
    sharpen=(0.3, 1.5),
    sharpen_prob=0.5,
    mask_expand=(1.0, 1.5),
    mask_blur=(0.005, 0.06),
    mask_morph=(-0.04, 0.03),
    blend_ratio=(0.25, 1.0),
    variety=BlendVariety(),
)


def self_blend_params(config: AugmentConfig | None = None) -> BlendParams:
    """The training self-blend recipe, with the ``sbi_*`` settings of ``config``."""
    cfg = config or AugmentConfig()
    variety = replace(
        _TRAINING_BLEND.variety,
        mask_outlines=cfg.sbi_mask_outlines,
        mask_deform_p=cfg.sbi_mask_deform_p,
        misalign_p=cfg.sbi_misalign_p,
        colour_p=cfg.sbi_color_p,
        sharpness_p=cfg.sbi_sharpness_p,
        resample_p=cfg.sbi_resample_p,
        jpeg_p=cfg.sbi_jpeg_p,
        full_blend_p=cfg.sbi_full_blend_p,
        noise_p=cfg.sbi_noise_p,
        warp_p=cfg.sbi_warp_p,
        seamless_p=cfg.sbi_seamless_p,
    )
    return replace(_TRAINING_BLEND, mask_blur=cfg.sbi_mask_blur, blend_ratio=cfg.sbi_blend_ratio,
                   variety=variety)


def warp_only_params(config: AugmentConfig | None = None) -> BlendParams:
    """Self-blends that only move the face's own pixels: a smooth warp inside the mask, nothing else.

    The mask outlines and deformations are those of :func:`self_blend_params`; no
    misalignment, colour, sharpness, resampling, JPEG or grain; full opacity, alpha
    blending (the warp fades to the identity at the mask's edge). What is left is
    geometry and the resampling that moved it, as reenactment and liquify-style
    edits leave.
    """
    cfg = config or AugmentConfig()
    base = self_blend_params(cfg)
    variety = replace(base.variety, misalign_p=0.0, colour_p=0.0, sharpness_p=0.0, resample_p=0.0,
                      jpeg_p=0.0, noise_p=0.0, warp_p=1.0, seamless_p=0.0, full_blend_p=1.0,
                      warp_amount=tuple(cfg.sbi_warp_only_amount))
    return replace(base, variety=variety)


class TrainAugment:
    """Training-time augmentation of one aligned face crop.

    Steps, each taken with its probability from :class:`AugmentConfig`, in a
    fixed order: self-blend (real crops only) -> horizontal flip -> colour
    jitter -> downscale -> Gaussian blur -> JPEG. The self-blend comes first
    because its mask is placed with the template landmarks of the unflipped
    crop; blur and JPEG come last as in Wang et al. 2020.

    Random draws happen in that order too: one ``rng.random()`` per step
    (always, even when its probability is 0 or 1), followed by that step's own
    draws when it is taken. The self-blend decision is the first draw; with
    ``sbi_warp_only_p`` > 0 a second one chooses a warp-only blend
    (:func:`warp_only_params`) over the diverse recipe, and ``blend_face`` then
    draws from the same generator.

    Args:
        config: Probabilities and ranges; defaults to ``AugmentConfig()``.
        margin: The alignment margin the crops were cut with, so the self-blend
            mask lands on the face (a face table's ``CropSpec.margin``).
        blend_params: Self-blend sampling ranges; defaults to
            ``self_blend_params(config)`` (given, it replaces the ``sbi_*`` settings).

    Raises:
        ValueError: If ``config`` or ``margin`` is out of range.
    """

    def __init__(self, *, config: AugmentConfig | None = None, margin: float = CropSpec.margin,
                 blend_params: BlendParams | None = None):
        self.config = config or AugmentConfig()
        self.config.validate()
        if not margin >= 0.0:
            raise ValueError(f"margin out of range: {margin}")
        self.margin = float(margin)
        self.blend_params = blend_params or self_blend_params(self.config)
        self.warp_only_params = warp_only_params(self.config)
        self._templates: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config!r}, margin={self.margin!r})"

    def _template(self, size: int) -> np.ndarray:
        if size not in self._templates:
            self._templates[size] = face_template(size, self.margin)
        return self._templates[size]

    def __call__(
        self, img: np.ndarray, label: int, rng: np.random.Generator, manipulation: str = ""
    ) -> tuple[np.ndarray, int, str]:
        """Augment one crop.

        Args:
            img: Aligned uint8 ``HxWx3`` RGB crop (square when it may be self-blended).
            label: 0 for real, 1 for fake.
            rng: Source of randomness.
            manipulation: The sample's own manipulation name (``""`` for reals);
                passed through unless this call self-blends.

        Returns:
            The augmented uint8 crop (a new array), its label, and its
            manipulation: ``"self_blend"`` when a real crop was self-blended.
        """
        _check_crop(img)
        if label not in (REAL, FAKE):
            raise ValueError(f"label must be {REAL} (real) or {FAKE} (fake), got {label!r}")
        cfg = self.config
        out = img
        blend = rng.random() < cfg.sbi_p
        warp_only = cfg.sbi_warp_only_p > 0 and rng.random() < cfg.sbi_warp_only_p
        if blend and label == REAL:
            height, width = img.shape[:2]
            if height != width:
                raise ValueError(f"self-blending needs a square aligned crop, got {width}x{height}")
            params = self.warp_only_params if warp_only else self.blend_params
            out = blend_face(img, self._template(height), rng, params=params).image
            label, manipulation = FAKE, SELF_BLEND
        if rng.random() < cfg.flip_p:
            out = hflip(out)
        if rng.random() < cfg.color_jitter_p:
            out = color_jitter(out, rng, brightness=cfg.brightness, contrast=cfg.contrast,
                               saturation=cfg.saturation)
        if rng.random() < cfg.downscale_p:
            out = downscale(out, rng.uniform(*cfg.downscale_range))
        if rng.random() < cfg.blur_p:
            out = gaussian_blur(out, rng.uniform(*cfg.blur_sigma))
        if rng.random() < cfg.jpeg_p:
            low, high = (int(q) for q in cfg.jpeg_quality)
            out = jpeg_recompress(out, int(rng.integers(low, high, endpoint=True)))
        if out is img:
            out = img.copy()
        return out, int(label), manipulation


def self_blend_track(augment: "TrainAugment", crops, seed: int) -> list[np.ndarray]:
    """A pseudo-fake track: one self-blend, drawn once, applied to every aligned crop of a real track.

    Aligned crops of one face share the template, and ``blend_face``'s draws do not
    depend on the pixels, so one seed gives every frame the same mask, mismatches and
    blend ratio: the track is consistently manipulated, as a fake video is, and only
    the pixels underneath change from frame to frame.
    """
    out = []
    for crop in crops:
        _check_crop(crop)
        template = augment._template(crop.shape[0])
        out.append(blend_face(crop, template, np.random.default_rng(seed), params=augment.blend_params).image)
    return out

