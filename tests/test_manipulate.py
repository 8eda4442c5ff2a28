"""Tests of the landmark mask and face blending (models/manipulate.py, models/blend_params.py)."""
from __future__ import annotations

import dataclasses
import hashlib

import av
import cv2
import numpy as np
import pytest
import skimage.data

from models.align import align_face, estimate_similarity, face_template
from models.face_mask import MASK_OUTLINES, OUTLINES, PART_OUTLINES, render_mask
from models.manipulate import (
    FACE_SWAP,
    MISMATCHES,
    SELF_BLEND,
    BlendParams,
    BlendVariety,
    blend_face,
    face_size,
    landmark_mask,
    manipulation_names,
)

# MTCNN landmarks of skimage's astronaut photo (left eye, right eye, nose, mouth corners).
ASTRONAUT_LANDMARKS = np.array(
    [[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]]
)
# Neutral manipulation: no jitter, no colour change, almost no blur, full opacity.
NEUTRAL = BlendParams(
    scale=1.0, translate=0.0, rotate_deg=0.0, colour_gain=0.0, colour_offset=0.0,
    hue_shift_deg=0.0, saturation_scale=1.0, blur_sigma=0.05, sharpen_prob=0.0,
    blend_ratio=1.0,
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def donor() -> tuple[np.ndarray, np.ndarray]:
    """A differently sized, mirrored copy of a different photo region as a donor face."""
    image = cv2.resize(skimage.data.astronaut()[:, ::-1], (384, 384), interpolation=cv2.INTER_AREA)
    points = ASTRONAUT_LANDMARKS.copy()
    points[:, 0] = 511 - points[:, 0]
    points = points[[1, 0, 2, 4, 3]] * 0.75  # mirrored: left and right swap
    return np.ascontiguousarray(image), points


def test_manipulation_names_are_what_blend_face_reports(astronaut: np.ndarray, donor) -> None:
    made = {blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(0)).params.manipulation,
            blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(0), source=donor[0],
                       source_landmarks=donor[1]).params.manipulation}
    assert made == set(manipulation_names()) and len(manipulation_names()) == len(made)


def test_face_size_is_about_the_face_height() -> None:
    assert 100 < face_size(ASTRONAUT_LANDMARKS) < 150  # MTCNN box is 110 px tall


@pytest.mark.parametrize("seed", range(8))
def test_mask_covers_landmarks_and_is_zero_far_away(seed: int) -> None:
    mask = landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(seed))
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    xs, ys = np.round(ASTRONAUT_LANDMARKS).astype(int).T
    assert np.all(mask[ys, xs] > 0.8), mask[ys, xs]  # eyes, nose and mouth corners
    rows, cols = np.mgrid[:512, :512]
    centre = ASTRONAUT_LANDMARKS.mean(axis=0)
    far = np.hypot(cols - centre[0], rows - centre[1]) > 1.5 * face_size(ASTRONAUT_LANDMARKS)
    assert np.all(mask[far] == 0.0)
    assert 0.1 < mask.mean() * 512 * 512 / face_size(ASTRONAUT_LANDMARKS) ** 2 < 1.5


def test_mask_fixed_values_ignore_rng_and_expand_grows_it() -> None:
    kwargs = dict(blur_sigma=0.05, morph=0.0)
    small = landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(0),
                          expand=1.0, **kwargs)
    again = landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(1),
                          expand=1.0, **kwargs)
    large = landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(0),
                          expand=1.6, **kwargs)
    np.testing.assert_array_equal(small, again)
    assert large.sum() > 2.0 * small.sum()


def test_mask_outside_the_image_is_empty() -> None:
    mask = landmark_mask((64, 64), ASTRONAUT_LANDMARKS + 1000, np.random.default_rng(0))
    assert not mask.any()


def _check_blend(target: np.ndarray, result, kind: str) -> None:
    assert result.image.shape == target.shape and result.image.dtype == np.uint8
    assert result.mask.shape == target.shape[:2] and result.mask.dtype == np.float32
    assert result.params.manipulation == kind
    outside = result.mask == 0
    assert outside.mean() > 0.8
    np.testing.assert_array_equal(result.image[outside], target[outside])
    inside = result.mask > 0.5
    diff = np.abs(result.image.astype(int) - target.astype(int)).mean(axis=-1)
    assert inside.sum() > 1000 and diff[inside].mean() > 4.0


@pytest.mark.parametrize("seed", range(4))
def test_self_blend(astronaut: np.ndarray, seed: int) -> None:
    result = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(seed))
    _check_blend(astronaut, result, SELF_BLEND)


@pytest.mark.parametrize("seed", range(4))
def test_face_swap(astronaut: np.ndarray, donor, seed: int) -> None:
    image, points = donor
    result = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(seed),
                        source=image, source_landmarks=points)
    _check_blend(astronaut, result, FACE_SWAP)


def test_neutral_self_blend_is_the_identity(astronaut: np.ndarray) -> None:
    result = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(0), params=NEUTRAL)
    assert np.abs(result.image.astype(int) - astronaut).max() <= 1


def test_neutral_face_swap_pastes_the_aligned_donor(astronaut: np.ndarray, donor) -> None:
    image, points = donor
    result = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(0),
                        source=image, source_landmarks=points, params=NEUTRAL)
    aligned = cv2.warpAffine(image, estimate_similarity(points, ASTRONAUT_LANDMARKS), (512, 512),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    core = result.mask > 0.999
    assert core.sum() > 2000
    assert np.abs(result.image[core].astype(int) - aligned[core]).mean() < 1.0


def test_same_seed_same_result_and_other_seeds_differ(astronaut: np.ndarray, donor) -> None:
    image, points = donor
    for source, source_points in ((None, None), (image, points)):
        runs = [blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(seed),
                           source=source, source_landmarks=source_points)
                for seed in (7, 7, 8)]
        np.testing.assert_array_equal(runs[0].image, runs[1].image)
        np.testing.assert_array_equal(runs[0].mask, runs[1].mask)
        assert runs[0].params == runs[1].params
        assert not np.array_equal(runs[0].image, runs[2].image)
        assert runs[0].params != runs[2].params


def test_params_drawn_within_ranges(astronaut: np.ndarray) -> None:
    params = BlendParams()
    for seed in range(20):
        drawn = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(seed)).params
        assert params.scale[0] <= drawn.scale <= params.scale[1]
        assert params.blend_ratio[0] <= drawn.blend_ratio <= params.blend_ratio[1]
        assert all(params.colour_offset[0] <= abs(o) <= params.colour_offset[1]
                   for o in drawn.colour_offset)
        assert drawn.sharpness in ("blur", "sharpen")


def test_invalid_inputs(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        blend_face(astronaut, ASTRONAUT_LANDMARKS[:4], rng)
    with pytest.raises(ValueError):
        blend_face(astronaut.astype(np.float32), ASTRONAUT_LANDMARKS, rng)
    with pytest.raises(ValueError):
        blend_face(astronaut, ASTRONAUT_LANDMARKS, rng, source=astronaut)
    with pytest.raises(ValueError):
        blend_face(astronaut, ASTRONAUT_LANDMARKS, rng, source_landmarks=ASTRONAUT_LANDMARKS)
    with pytest.raises(ValueError):
        BlendParams(scale=(1.1, 0.9))
    with pytest.raises(ValueError):
        BlendParams(blend_ratio=(0.5, 1.5))
    assert dataclasses.replace(BlendParams(), scale=1.0).scale == (1.0, 1.0)


def _h264_roundtrip(frame: np.ndarray, crf: int, count: int = 6) -> np.ndarray:
    """Encode ``count`` copies of ``frame`` with libx264 and return the last decoded frame."""
    import io

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": str(crf),
                                                                    "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        for index in range(count):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = index
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][-1]


@pytest.mark.parametrize("seed", range(3))
def test_artefact_survives_h264(astronaut: np.ndarray, seed: int) -> None:
    result = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(seed))
    real = _h264_roundtrip(astronaut, crf=28).astype(int)
    fake = _h264_roundtrip(result.image, crf=28).astype(int)
    before = np.abs(result.image.astype(int) - astronaut).mean(axis=-1)
    after = np.abs(fake - real).mean(axis=-1)
    inside = result.mask > 0.5
    assert after[inside].mean() > 0.6 * before[inside].mean()
    assert after[inside].mean() > 4.0


# --- the sample archive's blends -------------------------------------------------------

# sha256 (first 16 hex digits) of default blend_face images and masks on the astronaut
# (self-blends and face swaps, seeds 0-2) and of one default landmark_mask, computed with
# the code that made the sample archive before blends gained training variety. The sample
# archive's labels rest on these bytes: a change here changes the archive. (Hashes depend
# on the OpenCV/numpy build, like the archive's own bytes.)
SAMPLE_BLENDS_SHA = "67cd8cbacc9ca14d"
SAMPLE_CROP_BLEND_SHA = "800944b4fb77fd66"


def test_sample_archive_blends_are_unchanged(astronaut: np.ndarray, donor) -> None:
    image, points = donor
    digest = hashlib.sha256()
    for seed in range(3):
        for source, source_points in ((None, None), (image, points)):
            result = blend_face(astronaut, ASTRONAUT_LANDMARKS, np.random.default_rng(seed),
                                source=source, source_landmarks=source_points)
            digest.update(result.image.tobytes())
            digest.update(result.mask.tobytes())
    mask = landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(5))
    digest.update(mask.tobytes())
    assert digest.hexdigest()[:16] == SAMPLE_BLENDS_SHA
    crop, _ = align_face(astronaut, ASTRONAUT_LANDMARKS, 128, 0.25)
    result = blend_face(crop, face_template(128, 0.25), np.random.default_rng(3))
    assert hashlib.sha256(result.image.tobytes() + result.mask.tobytes()).hexdigest()[:16] == (
        SAMPLE_CROP_BLEND_SHA)
    assert result.params.mask_outline == "face" and result.params.mask_affine is None
    assert result.params.mismatches == ("misalign", "colour", "sharpness")


# --- training variety ------------------------------------------------------------------

CROP, MARGIN = 160, 0.25
TEMPLATE = face_template(CROP, MARGIN)
# Wide ranges, so that every drawn mismatch is visible in the tests.
VARIED = BlendParams(blend_ratio=(0.25, 1.0), mask_blur=(0.005, 0.06), variety=BlendVariety())


@pytest.fixture(scope="module")
def crop(astronaut: np.ndarray) -> np.ndarray:
    image, _ = align_face(astronaut, ASTRONAUT_LANDMARKS, CROP, MARGIN)
    return image


def _allowed_region(variety: BlendVariety, params: BlendParams) -> np.ndarray:
    """Where a varied blend may change the crop: the largest mask, grown by every deformation."""
    size = face_size(TEMPLATE)
    reach = (params.mask_morph[1] + 3 * params.mask_blur[1] + 3 * variety.mask_elastic[1]
             + variety.mask_affine[1]) * size + 3
    region = np.zeros((CROP, CROP), dtype=np.uint8)
    for outline in MASK_OUTLINES:
        region |= render_mask((CROP, CROP), TEMPLATE.astype(np.float64),
                              params.mask_expand[1] * (1 + variety.mask_affine[1]), 0.0, 0.0,
                              outline=outline) > 0
    radius = int(np.ceil(reach))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(region, kernel) > 0


@pytest.mark.parametrize("outline", MASK_OUTLINES)
def test_mask_outlines_cover_the_face_centre_only(outline: str) -> None:
    mask = landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(0), expand=1.3,
                         outline=outline)
    nose = np.round(ASTRONAUT_LANDMARKS[2]).astype(int)
    assert mask[nose[1], nose[0]] > 0.9
    rows, cols = np.mgrid[:512, :512]
    far = np.hypot(cols - nose[0], rows - nose[1]) > 1.2 * face_size(ASTRONAUT_LANDMARKS)
    assert not mask[far].any()
    assert mask.sum() > 0.05 * face_size(ASTRONAUT_LANDMARKS) ** 2


def test_mask_outlines_differ_and_unknown_ones_raise() -> None:
    masks = {o: landmark_mask((512, 512), ASTRONAUT_LANDMARKS, np.random.default_rng(0), outline=o)
             for o in MASK_OUTLINES}
    areas = {o: float(m.sum()) for o, m in masks.items()}
    assert areas["hull"] < areas["inner"] < areas["face"], areas  # nested by construction
    for a in MASK_OUTLINES:
        for b in MASK_OUTLINES:
            if a < b:
                assert np.abs(masks[a] - masks[b]).sum() > 0.05 * min(areas[a], areas[b])
    with pytest.raises(ValueError, match="outline"):
        landmark_mask((64, 64), ASTRONAUT_LANDMARKS, np.random.default_rng(0), outline="square")


def test_mask_deformations_move_the_edge_a_little() -> None:
    size = face_size(ASTRONAUT_LANDMARKS)
    plain = render_mask((512, 512), ASTRONAUT_LANDMARKS, 1.4, 0.0, 0.0) > 0.5
    centre = ASTRONAUT_LANDMARKS.mean(axis=0)
    stretch = np.array([[1.1, 0.05, 0.0], [0.0, 0.95, 0.0]])
    stretch[:, 2] = centre - stretch[:, :2] @ centre
    affine = render_mask((512, 512), ASTRONAUT_LANDMARKS, 1.4, 0.0, 0.0, affine=stretch) > 0.5
    elastic = [render_mask((512, 512), ASTRONAUT_LANDMARKS, 1.4, 0.0, 0.0, elastic_px=0.03 * size,
                           elastic_seed=seed) > 0.5 for seed in (1, 1, 2)]
    np.testing.assert_array_equal(elastic[0], elastic[1])  # the seed fixes the field
    for deformed in (affine, elastic[0], elastic[2]):
        changed = (deformed != plain).sum()
        iou = (deformed & plain).sum() / (deformed | plain).sum()
        assert changed > 100 and iou > 0.8, (changed, iou)
    assert (elastic[0] != elastic[2]).any()


@pytest.mark.parametrize("seed", range(6))
def test_varied_self_blend_changes_only_inside_its_mask(crop: np.ndarray, seed: int) -> None:
    result = blend_face(crop, TEMPLATE, np.random.default_rng(seed), params=VARIED)
    again = blend_face(crop, TEMPLATE, np.random.default_rng(seed), params=VARIED)
    np.testing.assert_array_equal(result.image, again.image)
    assert result.params == again.params
    changed = np.abs(result.image.astype(int) - crop).max(axis=-1) > 0
    assert changed.sum() > 100
    assert np.all(result.mask[changed] > 0)
    assert not (result.mask > 0)[~_allowed_region(VARIED.variety, VARIED)].any()
    assert result.mask.max() <= result.params.blend_ratio + 1e-6


def test_variety_draws_every_outline_and_mismatch(crop: np.ndarray) -> None:
    seen: dict[str, set] = {"mismatch": set(), "outline": set(), "deformed": set(), "full": set(),
                            "sharpness": set(), "resample": set(), "seamless": set()}
    for seed in range(60):
        drawn = blend_face(crop, TEMPLATE, np.random.default_rng(seed), params=VARIED).params
        assert set(drawn.mismatches) & {"colour", "sharpness", "resample", "jpeg"}
        seen["mismatch"].update(drawn.mismatches)
        seen["outline"].add(drawn.mask_outline)
        seen["deformed"].add(drawn.mask_affine is not None)
        seen["full"].add(drawn.blend_ratio == 1.0)
        seen["sharpness"].add(drawn.sharpness)
        seen["resample"].add(drawn.resample_interpolation)
        # Mismatches that are off hold neutral values, those that are on hold drawn ones.
        assert ("misalign" in drawn.mismatches) == (drawn.scale != 1.0)
        assert ("colour" in drawn.mismatches) == (drawn.colour_gain != (1.0, 1.0, 1.0))
        assert ("sharpness" in drawn.mismatches) == (drawn.sharpness != "none")
        assert ("resample" in drawn.mismatches) == (drawn.resample < 1.0)
        assert ("jpeg" in drawn.mismatches) == (drawn.jpeg_quality > 0)
        assert ("noise" in drawn.mismatches) == (drawn.noise_sigma > 0)
        assert ("warp" in drawn.mismatches) == (drawn.warp > 0)
        assert (drawn.mask_affine is None) == (drawn.mask_elastic == 0.0)
        seen["seamless"].add(drawn.seamless)
    assert seen["mismatch"] == set(MISMATCHES)
    assert seen["outline"] == set(MASK_OUTLINES)
    assert seen["seamless"] == {True, False}
    assert seen["deformed"] == seen["full"] == {True, False}
    assert seen["sharpness"] == {"blur", "sharpen", "none"}
    assert seen["resample"] == {"", "area", "nearest"}


def _only(mismatch: str, seamless: bool = False, outline: str = "face") -> BlendParams:
    chances = {f"{name}_p": float(name == mismatch) for name in MISMATCHES}
    return dataclasses.replace(VARIED, blend_ratio=1.0, sharpen_prob=0.0, variety=BlendVariety(
        mask_outlines=(outline,), mask_deform_p=0.0, full_blend_p=1.0, seamless_p=float(seamless),
        **chances))


def _high_pass(image: np.ndarray) -> np.ndarray:
    """What a 1-pixel Gaussian removes, per pixel and channel (float32)."""
    image = np.asarray(image, dtype=np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), 1.0)


def _laplacian_energy(img: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.var(cv2.Laplacian(grey, cv2.CV_64F)[where]))


@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_each_mismatch_alone_changes_the_face(crop: np.ndarray, mismatch: str) -> None:
    for seed in range(3):
        result = blend_face(crop, TEMPLATE, np.random.default_rng(seed), params=_only(mismatch))
        assert result.params.mismatches == (mismatch,)
        core = result.mask > 0.99
        diff = np.abs(result.image.astype(int) - crop.astype(int)).mean(axis=-1)
        assert core.sum() > 1000 and diff[core].mean() > 1.0, (mismatch, diff[core].mean())
        before, after = _laplacian_energy(crop, core), _laplacian_energy(result.image, core)
        if mismatch in ("sharpness", "resample"):  # blur and resampling lose fine detail
            assert after < before, (mismatch, before, after)
        if mismatch == "noise":  # grain: fine detail that the crop did not have
            assert _high_pass(result.image.astype(np.float32) - crop)[core].std() > 1.0
            assert 1.5 <= result.params.noise_sigma <= 6.0
        if mismatch == "jpeg":
            assert 30 <= result.params.jpeg_quality <= 90


def test_variety_without_appearance_mismatches_can_misalign_only(crop: np.ndarray) -> None:
    params = dataclasses.replace(_only("misalign"), variety=dataclasses.replace(
        _only("misalign").variety, misalign_p=0.0))
    result = blend_face(crop, TEMPLATE, np.random.default_rng(0), params=params)
    assert result.params.mismatches == ()
    assert np.abs(result.image.astype(int) - crop).max() <= 1  # nothing forced, nothing drawn


@pytest.mark.parametrize(
    "key, value",
    [("mask_outlines", ("square",)), ("mask_outlines", ()), ("colour_p", 1.5), ("jpeg_p", -0.1),
     ("mask_affine", (0.0, 0.6)), ("resample_scale", (0.0, 0.5)), ("jpeg_quality", (30, 101)),
     ("jpeg_quality", (0, 90)), ("jpeg_quality", (30.5, 90)), ("brightness", (0.2, 0.1))],
)
def test_variety_validation_names_the_key(key: str, value) -> None:
    with pytest.raises(ValueError, match=key):
        BlendVariety(**{key: value})
    with pytest.raises(ValueError, match="variety"):
        BlendParams(variety={"colour_p": 0.5})


@pytest.mark.parametrize("part, inside, outside", [
    ("eyes", (0, 1), (2, 3, 4)), ("nose", (2,), (0, 1, 3, 4)), ("mouth", (3, 4), (0, 1, 2))])
def test_part_outlines_cover_their_part_only(part: str, inside, outside) -> None:
    mask = render_mask((512, 512), ASTRONAUT_LANDMARKS, 1.0, 0.0, 0.0, outline=part)
    whole = render_mask((512, 512), ASTRONAUT_LANDMARKS, 1.0, 0.0, 0.0, outline="face")
    for k in inside:
        x, y = np.round(ASTRONAUT_LANDMARKS[k]).astype(int)
        assert mask[y, x] > 0.9, (part, k)
    for k in outside:
        x, y = np.round(ASTRONAUT_LANDMARKS[k]).astype(int)
        assert mask[y, x] == 0.0, (part, k)
    assert 0.05 * whole.sum() < mask.sum() < 0.5 * whole.sum()  # a part, not the face
    assert set(PART_OUTLINES) <= set(OUTLINES) and not set(PART_OUTLINES) & set(MASK_OUTLINES)


@pytest.mark.parametrize("part", PART_OUTLINES)
def test_a_part_blend_changes_that_part_only(crop: np.ndarray, part: str) -> None:
    result = blend_face(crop, TEMPLATE, np.random.default_rng(0), params=_only("colour", outline=part))
    changed = np.abs(result.image.astype(int) - crop).max(axis=-1) > 0
    assert result.params.mask_outline == part and changed.sum() > 50
    assert np.all(result.mask[changed] > 0)
    size, expand = face_size(TEMPLATE), VARIED.mask_expand[1]
    reach = int(np.ceil((VARIED.mask_morph[1] + 3 * VARIED.mask_blur[1]) * size)) + 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    allowed = cv2.dilate((render_mask(crop.shape[:2], TEMPLATE.astype(np.float64), expand, 0.0, 0.0,
                                      outline=part) > 0).astype(np.uint8), kernel) > 0
    face = render_mask(crop.shape[:2], TEMPLATE.astype(np.float64), expand, 0.0, 0.0, outline="face") > 0
    assert not changed[~allowed].any()
    assert changed.sum() < 0.6 * face.sum()


def test_seamless_blend_meets_the_target_at_the_edge_and_keeps_the_inside(crop: np.ndarray) -> None:
    def blend(seamless: bool):
        params = _only("colour", seamless=seamless)
        params = dataclasses.replace(params, variety=dataclasses.replace(params.variety, noise_p=1.0))
        return blend_face(crop, TEMPLATE, np.random.default_rng(3), params=params)

    alpha, poisson = blend(False), blend(True)
    assert not alpha.params.seamless and poisson.params.seamless
    assert alpha.params.colour_offset == poisson.params.colour_offset  # the same draws
    inside = (poisson.mask > 0.99).astype(np.uint8)
    ring = (inside - cv2.erode(inside, np.ones((5, 5), np.uint8))).astype(bool)  # just inside the edge
    step = {name: float(np.abs(r.image.astype(int) - crop.astype(int))[ring].mean())
            for name, r in (("alpha", alpha), ("poisson", poisson))}
    assert step["poisson"] < 0.5 * step["alpha"], step
    core = cv2.erode(inside, np.ones((15, 15), np.uint8)).astype(bool)
    grain = {name: float(_high_pass(r.image.astype(np.float32) - crop)[core].std())
             for name, r in (("alpha", alpha), ("poisson", poisson))}
    assert grain["alpha"] > 1.0 and grain["poisson"] > 0.8 * grain["alpha"], grain  # the inside is kept


def test_warp_moves_the_source_smoothly(crop: np.ndarray) -> None:
    results = [blend_face(crop, TEMPLATE, np.random.default_rng(seed), params=_only("warp"))
               for seed in (0, 0, 1)]
    np.testing.assert_array_equal(results[0].image, results[1].image)
    assert results[0].params.warp > 0 and results[0].params.warp_seed != results[2].params.warp_seed
    assert not np.array_equal(results[0].image, results[2].image)


def test_poisson_blending_of_a_tiny_or_faint_mask_falls_back_to_alpha(crop: np.ndarray) -> None:
    # cv2.seamlessClone fails on a mask of a few pixels; such a blend stays an alpha blend.
    from models.manipulate import _poisson_clone

    source = np.full(crop.shape, 200.0, np.float32)
    for cells in ([(80, 80)], [(80, 80), (80, 81)], [(0, 0)], [(159, 159)]):
        mask = np.zeros(crop.shape[:2], np.float32)
        for y, x in cells:
            mask[y, x] = 1.0
        np.testing.assert_array_equal(_poisson_clone(source, crop, mask), source)
    # A low blend ratio still clones the mask's shape (not just where ratio * mask > 0.5).
    params = _only("colour", seamless=True)
    params = dataclasses.replace(params, blend_ratio=(0.3, 0.3), variety=dataclasses.replace(
        params.variety, full_blend_p=0.0))
    result = blend_face(crop, TEMPLATE, np.random.default_rng(0), params=params)
    alpha = blend_face(crop, TEMPLATE, np.random.default_rng(0), params=dataclasses.replace(
        params, variety=dataclasses.replace(params.variety, seamless_p=0.0)))
    assert result.params.seamless and result.params.blend_ratio == 0.3 and not alpha.params.seamless
    assert np.abs(result.image.astype(int) - alpha.image).max() > 2
