"""Staging, fingerprints and frame sampling (decoding itself: test_decoders.py)."""
import hashlib

import fsspec
import numpy as np
import pytest

from tests.conftest import decode_all_pyav, write_h264
from transforms import media


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory):
    """120 frames at 24 fps, each frame a different smooth pattern (so frames are told apart)."""
    rng = np.random.default_rng(0)
    frames = []
    yy, xx = np.mgrid[0:144, 0:256]
    for i in range(120):
        phase = rng.uniform(0, 2 * np.pi, 3)
        f = np.stack([127 + 100 * np.sin(xx / 9.0 + yy / 13.0 + p + i) for p in phase], -1)
        frames.append(f.clip(0, 255).astype(np.uint8))
    path = tmp_path_factory.mktemp("media") / "numbered.mp4"
    return write_h264(path, frames, fps=24, crf=12)


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("clips", [list(range(47, 72))]),  # one clip from the middle of a short video
        ("uniform", np.linspace(0, 119, 25).round().astype(int).tolist()),
    ],
)
def test_sampled_frames_match_pyav(numbered_video, policy, expected):
    from transforms.decoders import DecordDecoder

    clips = media.sample_clips(120, 24.0, policy=policy, clip_len=25, clip_every_s=10.0, max_clips=4)
    if policy == "uniform":
        assert clips == [expected]
    else:
        assert clips == expected
    reference = decode_all_pyav(numbered_video)
    clip = DecordDecoder(str(numbered_video), max_side=1920, max_pixels=10**8).read(clips[0])
    frames, stamps = clip.frames, clip.timestamps
    assert frames.shape == (25, 144, 256, 3) and frames.dtype == np.uint8
    for got, index in zip(frames, clips[0]):
        errors = np.abs(reference.astype(np.int16) - got.astype(np.int16)).mean(axis=(1, 2, 3))
        # the decoded frame is the intended one: identical to PyAV's frame at that index ...
        assert errors[index] < 1.0
        # ... and clearly different from every other frame
        assert np.delete(errors, index).min() > 10 * max(errors[index], 0.1)
    np.testing.assert_allclose(stamps, np.array(clips[0]) / 24.0, atol=1e-3)


def test_long_videos_get_evenly_spaced_clips_capped():
    clips = media.sample_clips(30 * 60, 30.0, policy="clips", clip_len=25, clip_every_s=10.0, max_clips=4)
    assert len(clips) == 4
    assert all(c == list(range(c[0], c[0] + 25)) for c in clips)
    assert clips[0][0] == 0 and clips[-1][-1] == 30 * 60 - 1
    clips = media.sample_clips(30 * 25, 30.0, policy="clips", clip_len=25, clip_every_s=10.0, max_clips=4)
    assert len(clips) == 3  # 25 s of video -> ceil(25 / 10) clips


def test_clips_start_on_nearby_keyframes():
    keys = list(range(0, 250, 50))  # a keyframe every 2 s at 25 fps
    plan = dict(policy="clips", clip_len=25, clip_every_s=5.0, max_clips=4)
    assert [c[0] for c in media.sample_clips(250, 25.0, **plan)] == [0, 225]
    assert [c[0] for c in media.sample_clips(250, 25.0, keyframes=keys, **plan)] == [0, 200]
    # clips move at most half-way to their neighbours; a single clip stays near the middle
    assert [c[0] for c in media.sample_clips(250, 25.0, keyframes=[0], **plan)] == [0, 225]
    single = dict(plan, clip_every_s=10.0)  # 8 s of video: one clip, from frame 87
    assert media.sample_clips(200, 25.0, keyframes=[0], **single)[0][0] == 87
    assert media.sample_clips(200, 25.0, keyframes=[0, 100], **single)[0][0] == 100
    # clips never merge onto one keyframe, and never run past the end
    clips = media.sample_clips(15000, 25.0, keyframes=list(range(0, 15000, 250)), **plan)
    assert [c[0] for c in clips] == [0, 5000, 10000, 14750]


def test_short_videos_give_all_frames():
    assert media.sample_clips(10, 25.0, policy="clips", clip_len=25, clip_every_s=10, max_clips=4) == [
        list(range(10))
    ]
    assert media.sample_clips(0, 25.0, policy="clips", clip_len=25, clip_every_s=10, max_clips=4) == []
    with pytest.raises(ValueError):
        media.sample_clips(100, 25.0, policy="random", clip_len=25, clip_every_s=10, max_clips=4)


def test_staging_remote_objects_and_fingerprint(numbered_video):
    data = numbered_video.read_bytes()
    with fsspec.open("memory://staging/clip.mp4", "wb") as f:
        f.write(data)
    with media.staged("memory://staging/clip.mp4") as local:
        assert local.endswith(".mp4")
        assert media.fingerprint(local) == (len(data), hashlib.sha256(data).hexdigest())
        assert open(local, "rb").read() == data
    import os

    assert not os.path.exists(local)  # the temporary copy is removed
    with media.staged(str(numbered_video)) as local_path:
        assert local_path == str(numbered_video)


def test_staging_refuses_oversized_files_and_directories(numbered_video, tmp_path):
    with pytest.raises(media.MediaError) as info:
        with media.staged(str(numbered_video), max_bytes=100):
            pass
    assert info.value.status == "too_large"
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(media.MediaError) as info:
        with media.staged(str(tmp_path / "folder.mp4")):
            pass
    assert info.value.status == "unreadable"
