"""The decoder sandbox: crashes, hangs and runaway memory cost one input, never the worker."""
import time

import numpy as np
import pytest

from models.crops import CropSpec, cut_box_crop
from models.faces import FaceDetector
from pipeline.config import DecodeConfig, ScanConfig
from transforms.elements import MediaInput
from transforms.face_extractor import FaceExtractor
from transforms.media import MediaError, sample_clips
from transforms.sandbox import DecoderSandbox

FAULTY = "tests.faulty_decoders:"
LIMITS = dict(max_side=1920, max_pixels=10**8)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(detect_size=320, min_face_size=40)


def _clip():
    return sample_clips(75, 25.0, policy="clips", clip_len=25, clip_every_s=10, max_clips=4)[0]


def test_isolated_frames_equal_in_process_frames(moving_face_video):
    clip = _clip()
    with DecoderSandbox(timeout_s=30) as isolated, DecoderSandbox(isolate=False) as local:
        for decoder in ("decord", "pyav"):
            a_probe = isolated.open(decoder, str(moving_face_video), **LIMITS)
            b_probe = local.open(decoder, str(moving_face_video), **LIMITS)
            assert a_probe == b_probe
            a, b = isolated.read(clip), local.read(clip)
            np.testing.assert_array_equal(a.frames, b.frames)
            assert a.indices == b.indices == clip
            np.testing.assert_allclose(a.timestamps, b.timestamps)
            isolated.close_input()
            local.close_input()
        assert isolated.children_started == 1  # one child serves many inputs


@pytest.mark.parametrize(
    "decoder, signal_name",
    [("Segfault", "SIGSEGV"), ("Abort", "SIGABRT")],
)
def test_a_crashing_decoder_is_reported_and_replaced(moving_face_video, decoder, signal_name):
    with DecoderSandbox(timeout_s=30) as sandbox:
        with pytest.raises(MediaError) as info:
            sandbox.open(FAULTY + decoder, str(moving_face_video), **LIMITS)
            sandbox.read(_clip())
        assert info.value.status == "unreadable"
        assert signal_name in str(info.value) and "\n" not in str(info.value)
        # the next input gets a fresh child and decodes normally
        sandbox.open("decord", str(moving_face_video), **LIMITS)
        assert len(sandbox.read(_clip()).frames) == 25
        assert sandbox.children_started == 2


def test_a_hanging_decoder_is_killed_at_its_time_limit(moving_face_video):
    with DecoderSandbox(timeout_s=2) as sandbox:
        started = time.monotonic()
        with pytest.raises(MediaError) as info:
            sandbox.open(FAULTY + "Hang", str(moving_face_video), **LIMITS)
            sandbox.read(_clip())
        assert info.value.status == "timeout" and "2 s" in str(info.value)
        assert time.monotonic() - started < 15
        sandbox.open("pyav", str(moving_face_video), **LIMITS)
        assert len(sandbox.read(_clip()).frames) == 25


def test_the_decoder_runs_at_normal_priority_under_a_real_time_worker_thread(moving_face_video):
    # SVT-AV1 (PyAV's AV1 encoder) makes its calling thread SCHED_FIFO when run as root, and
    # children inherit it: a hanging real-time decoder starved the worker of its timeout.
    import os
    import threading

    seen = {}

    def worker():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except (AttributeError, PermissionError, OSError) as e:
            seen["skip"] = str(e)
            return
        with DecoderSandbox(timeout_s=30) as sandbox:
            sandbox.open("pyav", str(moving_face_video), **LIMITS)
            seen["child"] = os.sched_getscheduler(sandbox._transport.pid)
            sandbox.close_input()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    if "skip" in seen:
        pytest.skip(f"cannot make a thread real-time here: {seen['skip']}")
    assert seen["child"] == os.SCHED_OTHER


def test_runaway_memory_hits_the_limit(moving_face_video):
    with DecoderSandbox(timeout_s=60, memory_mb=1024) as sandbox:
        sandbox.open(FAULTY + "MemoryHog", str(moving_face_video), **LIMITS)
        with pytest.raises(MediaError) as info:
            sandbox.read(_clip())
        assert info.value.status == "unreadable" and "memory" in str(info.value)


def _extractor(detector, **decode):
    config = ScanConfig()
    return FaceExtractor(config.sampling, config.faces, detector, CropSpec("aligned", 224), DecodeConfig(**decode))


def test_the_second_decoder_reads_what_the_first_crashed_on(detector, moving_face_video):
    extractor = _extractor(detector, decoders=[FAULTY + "Segfault", "pyav"], timeout_s=30)
    try:
        result = extractor.extract(MediaInput(str(moving_face_video), "video"))
    finally:
        extractor.sandbox.shutdown()
    assert result.status == "ok" and result.info.decoder == "pyav"
    assert any("SIGSEGV" in w and "decoded with pyav" in w for w in result.info.warnings)


def test_hang_everywhere_gives_a_timeout_row(detector, moving_face_video):
    extractor = _extractor(detector, decoders=[FAULTY + "Hang", FAULTY + "Segfault"], timeout_s=2)
    try:
        result = extractor.extract(MediaInput(str(moving_face_video), "video"))
    finally:
        extractor.sandbox.shutdown()
    assert result.status == "timeout"
    assert "did not finish within 2 s" in result.error and "SIGSEGV" in result.error
    assert result.info.content_sha256 is not None  # the input is still identified


def test_silently_repeated_frames_are_recorded(detector, moving_face_video):
    extractor = _extractor(detector, decoders=[FAULTY + "RepeatsFrames"])
    try:
        result = extractor.extract(MediaInput(str(moving_face_video), "video"))
    finally:
        extractor.sandbox.shutdown()
    assert result.status == "ok"
    assert any("12 sampled frame(s) are exact repeats" in w for w in result.info.warnings)


def test_held_clips_give_the_same_crops_as_whole_frames(moving_face_video):
    """The scan's path (decode and keep in the child, fetch small copies and crops) equals reading frames."""
    import cv2

    from models.align import align_face, alignment_matrix

    clip = _clip()
    landmarks = np.array([[150, 150], [210, 150], [180, 185], [155, 215], [205, 215]], np.float32)
    matrices = np.stack([alignment_matrix(landmarks + k, 224, 0.25) for k in range(3)])
    with DecoderSandbox(timeout_s=30) as isolated, DecoderSandbox(isolate=False) as local:
        frames = local.open("decord", str(moving_face_video), **LIMITS) and local.read(clip).frames
        for sandbox in (isolated, local):
            sandbox.open("decord", str(moving_face_video), **LIMITS)
            held = sandbox.hold(clip)
            assert held["indices"] == clip and held["shape"] == [25, 360, 640, 3] and held["repeats"] == 0
            small = sandbox.downscaled([0, 12, 24], 320, 180)
            for got, pos in zip(small, (0, 12, 24)):
                np.testing.assert_array_equal(got, cv2.resize(frames[pos], (320, 180), interpolation=cv2.INTER_AREA))
            crops = sandbox.warp([3, 4, 5], matrices, 224)
            for k, pos in enumerate((3, 4, 5)):
                np.testing.assert_array_equal(crops[k], align_face(frames[pos], landmarks + k, 224, 0.25)[0])
            assert sandbox.warp([], np.zeros((0, 2, 3)), 224).shape == (0, 224, 224, 3)
            sandbox.close_input()


def test_held_clips_give_the_same_box_crops_as_whole_frames(moving_face_video):
    """``crop_boxes`` in the decoder process (and in-process) cuts what ``models.crops`` cuts from the frame."""
    clip = _clip()
    # fractional corners, one box over the frame's left and top edges, one over its right edge
    boxes = np.array([[140.3, 80.7, 262.9, 230.2], [-20.5, -10.25, 90.0, 100.5], [590.1, 200.0, 660.4, 371.9]])
    specs = [CropSpec("box", 380, box_margins=(0.125,) * 4), CropSpec("box", 96, box_margins=(0.1, 0.3, 0.0, 0.2))]
    with DecoderSandbox(timeout_s=30) as isolated, DecoderSandbox(isolate=False) as local:
        frames = local.open("decord", str(moving_face_video), **LIMITS) and local.read(clip).frames
        for sandbox in (isolated, local):
            sandbox.open("decord", str(moving_face_video), **LIMITS)
            sandbox.hold(clip)
            for spec in specs:
                crops = sandbox.crop_boxes([3, 4, 24], boxes, spec)
                assert crops.shape == (3, spec.size, spec.size, 3) and crops.dtype == np.uint8
                for crop, pos, box in zip(crops, (3, 4, 24), boxes):
                    np.testing.assert_array_equal(crop, cut_box_crop(frames[pos], box, spec))
            assert sandbox.crop_boxes([], np.zeros((0, 4)), specs[0]).shape == (0, 380, 380, 3)
            with pytest.raises(ValueError, match="'box' crop spec"):
                sandbox.crop_boxes([0], boxes[:1], CropSpec("aligned", 224))
            with pytest.raises(ValueError, match="one finite box per frame"):
                sandbox.crop_boxes([0, 1], boxes[:1], specs[0])
            with pytest.raises(ValueError, match="one finite box per frame"):
                sandbox.crop_boxes([0], [[0.0, 0.0, np.nan, 10.0]], specs[0])
            sandbox.close_input()
