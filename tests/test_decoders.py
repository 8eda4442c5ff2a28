"""decord, PyAV and Pillow decoders: same frames, rotation, downscaling, limits, honest notes."""
import numpy as np
import pytest

from tests.awkward_corpus import face_frames, write_video
from tests.conftest import decode_all_pyav
from transforms.clips import Clip, HeldClip, fit_size, repeated_frames, rotate
from transforms.decoders import decoder_class
from transforms.decord_decoder import DecordDecoder
from transforms.pillow_decoder import PillowDecoder
from transforms.pyav_decoder import PyAVDecoder
from transforms.media import MediaError

LIMITS = dict(max_side=1920, max_pixels=10**8)
VIDEO_DECODERS = [DecordDecoder, PyAVDecoder]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    frames = face_frames(count=40)
    turned = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in frames]
    stamps = np.cumsum([0] + [40 if i % 3 else 80 for i in range(1, 40)]).tolist()
    return {
        "plain": write_video(root / "plain.mp4", frames, options={"crf": "12"}),
        "rotated": write_video(root / "rotated.mp4", turned, rotation=90, options={"crf": "12"}),
        "vfr": write_video(root / "vfr.mp4", frames, pts=stamps, options={"crf": "12"}),
        "frames": np.stack(frames),
    }


@pytest.mark.parametrize("cls", VIDEO_DECODERS)
def test_decoders_return_the_frames_asked_for(cls, videos):
    reference = decode_all_pyav(videos["plain"])
    decoder = cls(str(videos["plain"]), **LIMITS)
    assert (decoder.probe.num_frames, decoder.probe.width, decoder.probe.height) == (40, 640, 360)
    assert decoder.probe.fps == pytest.approx(25.0) and decoder.probe.codec == "h264"
    for wanted in ([5, 6, 7, 8], [30, 31, 32], [0, 20, 39]):  # forward, skipping ahead, spread
        clip = decoder.read(wanted)
        assert clip.indices == wanted and clip.frames.shape == (len(wanted), 360, 640, 3)
        for got, index in zip(clip.frames, wanted):
            assert np.abs(got.astype(int) - reference[index].astype(int)).mean() < 1.0
        np.testing.assert_allclose(clip.timestamps, np.array(wanted) / 25.0, atol=1e-3)
    clip = decoder.read([2, 3])  # going back works too
    assert clip.indices == [2, 3]
    decoder.close()


@pytest.mark.parametrize("cls", VIDEO_DECODERS)
def test_display_rotation_is_applied(cls, videos):
    decoder = cls(str(videos["rotated"]), **LIMITS)
    assert (decoder.probe.width, decoder.probe.height, decoder.probe.rotation) == (640, 360, 90)
    clip = decoder.read([10])
    upright = videos["frames"][10].astype(int)
    assert clip.frames.shape == (1, 360, 640, 3)
    assert np.abs(clip.frames[0].astype(int) - upright).mean() < 3.0


@pytest.mark.parametrize("cls", VIDEO_DECODERS)
def test_large_frames_are_downscaled_inside_the_decoder(cls, videos):
    decoder = cls(str(videos["plain"]), max_side=320, max_pixels=10**8)
    assert (decoder.probe.width, decoder.probe.decoded_width, decoder.probe.decoded_height) == (640, 320, 180)
    assert decoder.read([1]).frames.shape == (1, 180, 320, 3)
    with pytest.raises(MediaError) as info:
        cls(str(videos["plain"]), max_side=1920, max_pixels=640 * 360 - 1)
    assert info.value.status == "too_large" and "decode.max_pixels" in str(info.value)


def test_decord_reads_a_clip_forward_with_the_frames_get_batch_gives(videos, monkeypatch):
    import decord

    import transforms.decord_decoder as decoders

    wanted = list(range(13, 29))  # starts between keyframes: the seek must land exactly
    reference = decord.VideoReader(str(videos["plain"]), ctx=decord.cpu(0)).get_batch(wanted).asnumpy()
    calls = []
    run = decoders._decord_run
    monkeypatch.setattr(decoders, "_decord_run", lambda *a: calls.append(a) or run(*a))
    clip = DecordDecoder(str(videos["plain"]), **LIMITS).read(wanted)
    assert calls and clip.frames.flags.writeable and clip.frames.flags.c_contiguous
    np.testing.assert_array_equal(clip.frames, reference)
    # Where decoding forward fails, the batch read decides, on a fresh reader.
    monkeypatch.setattr(decoders, "_decord_run", lambda *a: (_ for _ in ()).throw(RuntimeError("index lied")))
    np.testing.assert_array_equal(DecordDecoder(str(videos["plain"]), **LIMITS).read(wanted).frames, reference)


def test_decord_never_returns_malformed_frames(tmp_path):
    import cv2

    # decord 0.6 decodes 16x16 video into (16, 16, 6) "frames"; its batch read refuses it.
    path = write_video(tmp_path / "tiny.mp4", [cv2.resize(f, (16, 16)) for f in face_frames(count=10)])
    with pytest.raises(MediaError) as info:
        DecordDecoder(str(path), **LIMITS).read([0, 1])
    assert info.value.status == "unreadable"
    assert PyAVDecoder(str(path), **LIMITS).read([0, 1]).frames.shape == (2, 16, 16, 3)


def test_pyav_counts_frames_exactly_under_variable_frame_rate(videos):
    reference = decode_all_pyav(videos["vfr"])
    clip = PyAVDecoder(str(videos["vfr"]), **LIMITS).read([10, 11, 12])
    for got, index in zip(clip.frames, clip.indices):
        assert np.abs(got.astype(int) - reference[index].astype(int)).mean() < 1.0
    assert clip.timestamps[1] - clip.timestamps[0] != pytest.approx(clip.timestamps[2] - clip.timestamps[1])


def test_fewer_frames_than_claimed_are_reported(videos, tmp_path):
    cut = tmp_path / "cut.mp4"
    write_video(cut, list(videos["frames"]), container_options={"movflags": "faststart"})
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.7)])
    decoder = PyAVDecoder(str(cut), **LIMITS)
    clip = decoder.read(list(range(40)))
    assert 0 < len(clip.indices) < 40
    assert any("could not be decoded (the container claims 40 frames)" in n for n in clip.notes)


def test_images_honour_exif_orientation_and_limits(tmp_path):
    from PIL import Image

    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    decoder = PillowDecoder(str(tmp_path / "rotated.jpg"), **LIMITS)
    assert decoder.read([0]).frames.shape == (1, 40, 20, 3) and decoder.probe.codec == "jpeg"
    Image.fromarray(np.zeros((1000, 2000, 3), np.uint8)).save(tmp_path / "big.jpg")
    assert PillowDecoder(str(tmp_path / "big.jpg"), max_side=500, max_pixels=10**8).read([0]).frames.shape == (
        1, 250, 500, 3,
    )
    with pytest.raises(MediaError) as info:
        PillowDecoder(str(tmp_path / "big.jpg"), max_side=500, max_pixels=10**6)
    assert info.value.status == "too_large"
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(MediaError) as info:
        PillowDecoder(str(tmp_path / "broken.jpg"), **LIMITS)
    assert info.value.status == "unreadable"


def test_helpers():
    assert fit_size(3840, 2160, 1920) == (1920, 1080) and fit_size(640, 360, 1920) == (640, 360)
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    assert rotate(frames, 90).shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(rotate(rotate(frames, 90), 270), frames)
    assert repeated_frames(np.stack([frames[0], frames[0], frames[1], frames[1]])) == 2
    assert decoder_class("pyav") is PyAVDecoder
    assert decoder_class("tests.faulty_decoders:Hang").name == "hang"
    with pytest.raises(ValueError, match="valid: decord, pyav, pillow"):
        decoder_class("ffmpeg")


def test_held_clip_cuts_box_crops_from_its_frames():
    from models.crops import CropSpec, cut_box_crop

    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    held = HeldClip(Clip(frames, [0.0, 0.04, 0.08], [0, 1, 2]))
    spec = CropSpec("box", 64)
    boxes = np.array([[20.5, 10.2, 70.9, 80.4], [100.0, 30.0, 170.0, 95.0]], np.float32)
    crops = held.crop_boxes([2, 0], boxes, spec)
    assert crops.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(crops[0], cut_box_crop(frames[2], boxes[0], spec))
    np.testing.assert_array_equal(crops[1], cut_box_crop(frames[0], boxes[1], spec))
    with pytest.raises(ValueError, match="2 frame positions but 1 boxes"):
        held.crop_boxes([0, 1], boxes[:1], spec)
