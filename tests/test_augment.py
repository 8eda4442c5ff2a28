"""Tests of the training augmentations (models/augment.py)."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import skimage.data

from models.align import align_face, face_template
from models.augment import (
    AugmentConfig,
    TrainAugment,
    color_jitter,
    downscale,
    gaussian_blur,
    hflip,
    jpeg_recompress,
    self_blend_params,
    self_blend_track,
)
from models.face_mask import MASK_OUTLINES
from models.manipulate import MISMATCHES, SELF_BLEND, BlendParams, blend_face

# MTCNN landmarks of skimage's astronaut photo (as in test_manipulate.py).
ASTRONAUT_LANDMARKS = np.array(
    [[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]]
)
SIZE, MARGIN = 128, 0.25
NOTHING = AugmentConfig(flip_p=0.0, color_jitter_p=0.0, downscale_p=0.0, blur_p=0.0,
                        jpeg_p=0.0, sbi_p=0.0)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """The astronaut's face aligned as the scanner and training loader align faces."""
    image, _ = align_face(skimage.data.astronaut(), ASTRONAUT_LANDMARKS, SIZE, MARGIN)
    return image


def _high_frequency(img: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.var(cv2.Laplacian(grey, cv2.CV_64F)))


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_blur_removes_high_frequencies_and_keeps_shape(crop: np.ndarray) -> None:
    energies = [_high_frequency(crop)]
    for sigma in (0.5, 1.5, 3.0):
        out = gaussian_blur(crop, sigma)
        assert out.shape == crop.shape and out.dtype == np.uint8
        energies.append(_high_frequency(out))
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.1 * energies[0]
    np.testing.assert_array_equal(gaussian_blur(crop, 0.0), crop)


def test_jpeg_changes_pixels_more_at_lower_quality(crop: np.ndarray) -> None:
    high, low = jpeg_recompress(crop, 95), jpeg_recompress(crop, 30)
    for out in (high, low):
        assert out.shape == crop.shape and out.dtype == np.uint8
    assert 0.0 < _mean_abs_diff(high, crop) < _mean_abs_diff(low, crop)
    # The RGB -> BGR -> RGB conversions do not swap channels: colour means barely move.
    np.testing.assert_allclose(high.reshape(-1, 3).mean(0), crop.reshape(-1, 3).mean(0), atol=2.0)
    with pytest.raises(ValueError, match="quality"):
        jpeg_recompress(crop, 101)


def test_hflip_is_an_involution(crop: np.ndarray) -> None:
    flipped = hflip(crop)
    assert not np.array_equal(flipped, crop)
    np.testing.assert_array_equal(flipped[:, 0], crop[:, -1])
    np.testing.assert_array_equal(hflip(flipped), crop)


def test_downscale_loses_detail_and_identity_at_one(crop: np.ndarray) -> None:
    out = downscale(crop, 0.5)
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert _high_frequency(out) < 0.5 * _high_frequency(crop)
    np.testing.assert_array_equal(downscale(crop, 1.0), crop)


def test_color_jitter_neutral_factors_and_brightness(crop: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    same = color_jitter(crop, rng, brightness=(1, 1), contrast=(1, 1), saturation=(1, 1))
    assert np.abs(same.astype(int) - crop).max() <= 1
    darker = color_jitter(crop, rng, brightness=(0.5, 0.5), contrast=(1, 1), saturation=(1, 1))
    assert abs(darker.mean() - 0.5 * crop.mean()) < 1.0
    grey = color_jitter(crop, rng, brightness=(1, 1), contrast=(1, 1), saturation=(0, 0))
    assert np.abs(grey.astype(int).max(-1) - grey.min(-1)).max() <= 1


def test_all_probabilities_zero_is_the_identity(crop: np.ndarray) -> None:
    augment = TrainAugment(config=NOTHING)
    for label, manipulation in ((0, ""), (1, "face_swap")):
        out, out_label, out_manipulation = augment(crop, label, np.random.default_rng(3),
                                                   manipulation)
        np.testing.assert_array_equal(out, crop)
        assert out is not crop
        assert (out_label, out_manipulation) == (label, manipulation)


@pytest.mark.parametrize(
    "overrides",
    [dict(flip_p=1.0), dict(color_jitter_p=1.0), dict(downscale_p=1.0),
     dict(blur_p=1.0, blur_sigma=(1.0, 3.0)), dict(jpeg_p=1.0, jpeg_quality=(30, 60))],
    ids=lambda o: next(iter(o)),
)
def test_probability_one_always_applies(crop: np.ndarray, overrides: dict) -> None:
    augment = TrainAugment(config=dataclasses.replace(NOTHING, **overrides))
    for seed in range(5):
        out, label, manipulation = augment(crop, 0, np.random.default_rng(seed))
        assert out.shape == crop.shape and out.dtype == np.uint8
        assert _mean_abs_diff(out, crop) > 0.5, overrides
        assert (label, manipulation) == (0, "")
    if "flip_p" in overrides:
        np.testing.assert_array_equal(out, hflip(crop))


@pytest.mark.parametrize("seed", range(4))
def test_self_blend_turns_reals_into_fakes_inside_the_mask(crop: np.ndarray, seed: int) -> None:
    augment = TrainAugment(config=dataclasses.replace(NOTHING, sbi_p=1.0))
    out, label, manipulation = augment(crop, 0, np.random.default_rng(seed))
    assert (label, manipulation) == (1, SELF_BLEND)
    # Same generator state as inside the augment: the decision is its first draw.
    rng = np.random.default_rng(seed)
    rng.random()
    expected = blend_face(crop, face_template(SIZE, MARGIN), rng, params=augment.blend_params)
    np.testing.assert_array_equal(out, expected.image)
    assert augment.blend_params.variety is not None  # the diverse training recipe
    outside = expected.mask == 0
    assert 0.1 < outside.mean() < 0.97  # the mask covers part of the face, not the whole crop
    np.testing.assert_array_equal(out[outside], crop[outside])
    changed = np.abs(out.astype(int) - crop).max(axis=-1) > 0
    assert changed.sum() > 200 and np.all(expected.mask[changed] > 0)
    # The crop's corners lie outside any face mask.
    np.testing.assert_array_equal(out[:8, :8], crop[:8, :8])


def test_self_blend_skips_fakes_and_flip_follows_blend(crop: np.ndarray) -> None:
    augment = TrainAugment(config=dataclasses.replace(NOTHING, sbi_p=1.0))
    out, label, manipulation = augment(crop, 1, np.random.default_rng(0), "face_swap")
    np.testing.assert_array_equal(out, crop)
    assert (label, manipulation) == (1, "face_swap")
    flipping = TrainAugment(config=dataclasses.replace(NOTHING, sbi_p=1.0, flip_p=1.0))
    out, _, _ = flipping(crop, 0, np.random.default_rng(5))
    blended, _, _ = augment(crop, 0, np.random.default_rng(5))
    np.testing.assert_array_equal(out, hflip(blended))


def test_default_rates_match_the_config(crop: np.ndarray) -> None:
    augment = TrainAugment(config=AugmentConfig(), margin=MARGIN)
    rng = np.random.default_rng(11)
    small = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)
    fakes = sum(augment(small, 0, rng)[1] for _ in range(200))
    assert 70 <= fakes <= 130  # sbi_p = 0.5


def test_same_seed_same_output_and_seeds_differ(crop: np.ndarray) -> None:
    augment = TrainAugment(config=AugmentConfig(sbi_p=1.0, blur_p=1.0, jpeg_p=1.0), margin=MARGIN)
    runs = [augment(crop, 0, np.random.default_rng(seed)) for seed in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1:] == runs[1][1:] == runs[2][1:] == (1, SELF_BLEND)
    assert not np.array_equal(runs[0][0], runs[2][0])


@pytest.mark.parametrize(
    "key, value",
    [("blur_p", 1.5), ("jpeg_p", -0.1), ("sbi_p", 2.0), ("flip_p", -1.0),
     ("blur_sigma", (3.0, 1.0)), ("blur_sigma", (-1.0, 1.0)), ("jpeg_quality", (30, 101)),
     ("jpeg_quality", (30.5, 90)), ("downscale_range", (0.0, 0.5)),
     ("downscale_range", (0.5, 1.5)), ("brightness", (-0.2, 1.0)),
     ("contrast", 1.0), ("sbi_color_p", 1.5), ("sbi_full_blend_p", -0.5),
     ("sbi_mask_outlines", ("face", "star")), ("sbi_mask_outlines", ()),
     ("sbi_blend_ratio", (0.0, 1.0)), ("sbi_blend_ratio", (0.5, 1.2)),
     ("sbi_mask_blur", (-0.1, 0.1))],
)
def test_config_validation_names_the_key(key: str, value) -> None:
    config = AugmentConfig(**{key: value})  # plain data: loading never raises, validate() does
    with pytest.raises(ValueError, match=key):
        config.validate()
    with pytest.raises(ValueError, match=key):
        TrainAugment(config=config)  # nothing augments with settings out of range


def test_margin_is_the_crops_not_a_setting() -> None:
    with pytest.raises(ValueError, match="margin"):
        TrainAugment(margin=-0.1)
    assert "margin" not in {f.name for f in dataclasses.fields(AugmentConfig)}


def test_config_accepts_tuples_and_rejects_bad_inputs(crop: np.ndarray) -> None:
    config = AugmentConfig(blur_sigma=(0.5, 1.0), jpeg_quality=(40.0, 90.0))  # YAML gives lists, Python tuples
    config.validate()
    augment = TrainAugment(config=dataclasses.replace(config, jpeg_p=1.0))
    assert augment(crop, 0, np.random.default_rng(0))[0].shape == crop.shape
    with pytest.raises(ValueError, match="label"):
        augment(crop, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        augment(crop.astype(np.float32), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="square"):
        TrainAugment(config=dataclasses.replace(NOTHING, sbi_p=1.0))(
            crop[:, :100].copy(), 0, np.random.default_rng(0))


def test_self_blend_params_follow_the_config() -> None:
    config = AugmentConfig(sbi_mask_outlines=["hull", "oval"], sbi_mask_deform_p=0.1,
                           sbi_mask_blur=[0.01, 0.02], sbi_misalign_p=0.2, sbi_color_p=0.3,
                           sbi_sharpness_p=0.4, sbi_resample_p=0.6, sbi_jpeg_p=0.7,
                           sbi_blend_ratio=[0.5, 0.9], sbi_full_blend_p=0.8)
    params = self_blend_params(config)
    variety = params.variety
    assert variety.mask_outlines == ("hull", "oval")
    assert (variety.mask_deform_p, variety.misalign_p, variety.colour_p, variety.sharpness_p,
            variety.resample_p, variety.jpeg_p, variety.full_blend_p) == (
        0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8)
    assert params.mask_blur == (0.01, 0.02) and params.blend_ratio == (0.5, 0.9)
    assert TrainAugment(config=config).blend_params == params
    # The defaults are the diverse recipe, and differ from the sample archive's blends.
    default = self_blend_params()
    assert default.variety is not None and default != BlendParams()
    assert set(default.variety.mask_outlines) == set(MASK_OUTLINES)
    explicit = BlendParams()
    assert TrainAugment(config=config, blend_params=explicit).blend_params is explicit


def test_pseudo_fakes_vary_and_are_reproducible(crop: np.ndarray) -> None:
    """Over many seeds the default recipe uses every outline and mismatch; a seed fixes it."""
    augment = TrainAugment(config=dataclasses.replace(NOTHING, sbi_p=1.0))
    template = face_template(SIZE, MARGIN)
    outlines, mismatches, ratios = set(), set(), set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        rng.random()  # the self-blend decision
        drawn = blend_face(crop, template, rng, params=augment.blend_params)
        out, label, _ = augment(crop, 0, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, drawn.image)
        assert label == 1
        outlines.add(drawn.params.mask_outline)
        mismatches.update(drawn.params.mismatches)
        ratios.add(drawn.params.blend_ratio == 1.0)
    assert outlines == set(MASK_OUTLINES) and mismatches == set(MISMATCHES)
    assert ratios == {True, False}


def test_self_blend_track_draws_one_blend_for_every_frame(crop: np.ndarray) -> None:
    """A pseudo-fake track is one manipulation over time: the same draws on every frame."""
    augment = TrainAugment(config=AugmentConfig())
    rng = np.random.default_rng(5)
    # Frames of one face: the same crop shifted by a pixel and with a little sensor noise.
    frames = [np.clip(np.roll(crop, k, axis=1).astype(np.int16) + rng.integers(-3, 4, crop.shape), 0, 255)
              .astype(np.uint8) for k in range(4)]
    fakes = self_blend_track(augment, frames, seed=11)
    template = face_template(crop.shape[0], augment.margin)
    draws = [blend_face(f, template, np.random.default_rng(11), params=augment.blend_params) for f in frames]
    assert len({repr(d.params) for d in draws}) == 1  # mask, mismatches and ratio identical across frames
    for fake, frame, drawn in zip(fakes, frames, draws):
        np.testing.assert_array_equal(fake, drawn.image)
        assert _mean_abs_diff(fake, frame) > 0.5  # every frame is manipulated
    other = self_blend_track(augment, frames[:1], seed=12)[0]
    assert not np.array_equal(other, fakes[0])  # another track, another blend


def test_warp_only_blends_move_pixels_and_nothing_else(crop: np.ndarray) -> None:
    from models.augment import warp_only_params

    config = dataclasses.replace(NOTHING, sbi_p=1.0, sbi_warp_only_p=1.0, sbi_warp_only_amount=[0.03, 0.04])
    params = warp_only_params(config)
    template = face_template(SIZE, MARGIN)
    for seed in range(4):
        result = blend_face(crop, template, np.random.default_rng(seed), params=params)
        drawn = result.params
        assert drawn.mismatches == ("warp",) and not drawn.seamless and drawn.blend_ratio == 1.0
        assert (drawn.colour_gain, drawn.sharpness, drawn.noise_sigma, drawn.resample, drawn.jpeg_quality,
                drawn.scale) == ((1.0, 1.0, 1.0), "none", 0.0, 1.0, 0, 1.0)
        assert 0.03 * SIZE * 0.5 < result.params.warp  # a fraction of the face size, in pixels
        inside = result.mask > 0.99
        diff = np.abs(result.image.astype(int) - crop.astype(int))
        assert diff[inside].mean() > 1.0  # the geometry moved
        assert diff[result.mask == 0].max() == 0
        edge = (result.mask > 0) & (result.mask < 0.2)  # the warp fades to the identity at the edge
        assert diff[edge].mean() < 0.5 * diff[inside].mean()
    augment = TrainAugment(config=config, margin=MARGIN)
    out, label, manipulation = augment(crop, 0, np.random.default_rng(1))
    assert (label, manipulation) == (1, SELF_BLEND) and not np.array_equal(out, crop)
    # sbi_warp_only_p = 0 draws nothing more: the default recipe's draws are unchanged.
    plain = dataclasses.replace(NOTHING, sbi_p=1.0)
    a = TrainAugment(config=plain, margin=MARGIN)(crop, 0, np.random.default_rng(5))[0]
    b = blend_face(crop, template, _after_one_draw(5), params=self_blend_params(plain)).image
    np.testing.assert_array_equal(a, b)


def _after_one_draw(seed: int) -> np.random.Generator:
    rng = np.random.default_rng(seed)
    rng.random()  # the self-blend decision
    return rng
