"""Tests of the landmark mask and face blending (models/manipulate.py)."""
from __future__ import annotations

import dataclasses

import av
import cv2
import numpy as np
import pytest
import skimage.data

from models.align import estimate_similarity
from models.manipulate import (
    FACE_SWAP,
    SELF_BLEND,
    BlendParams,
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


def test_manipulation_names() -> None:
    assert manipulation_names() == (SELF_BLEND, FACE_SWAP) == ("self_blend", "face_swap")


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
