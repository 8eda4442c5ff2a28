"""MTCNN detection on real decoded frames, five-point alignment, and tracking."""
import numpy as np
import pytest

from models.align import align_face, estimate_similarity, face_template, transform_points
from models.faces import FaceDetector, FrameFaces
from models.tracking import box_iou, link_tracks
from tests.conftest import astronaut_scene
from transforms import media
from transforms.decoders import DecordDecoder


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(detect_size=320, min_face_size=40)


def test_detects_the_face_in_every_frame_of_a_clip(detector, moving_face_video):
    clips = media.sample_clips(75, 25.0, policy="clips", clip_len=25, clip_every_s=10, max_clips=4)
    frames = DecordDecoder(str(moving_face_video), max_side=1920, max_pixels=10**8).read(clips[0]).frames
    faces = detector.detect(frames)
    assert len(faces) == 25 and all(len(f) == 1 for f in faces)
    # boxes are in full-resolution coordinates and follow the pan (2 px per frame)
    xs = np.array([f.boxes[0, 0] for f in faces])
    assert np.all(np.diff(xs) > 0) and 1.2 < np.polyfit(np.arange(25), xs, 1)[0] < 2.8
    assert faces[0].landmarks.shape == (1, 5, 2)


def test_downscaled_detection_maps_back_to_full_resolution(detector):
    frame = astronaut_scene(width=1280, height=720, x=300, face_px=600)
    full = FaceDetector(detect_size=1280, min_face_size=40).detect(frame[None])[0]
    small = detector.detect(frame[None])[0]  # 4x downscaled
    assert detector.scale_for(720, 1280) == pytest.approx(0.25)
    assert box_iou(full.boxes, small.boxes)[0, 0] > 0.85
    np.testing.assert_allclose(full.landmarks, small.landmarks, atol=12)


def test_no_face_gives_empty_results_not_none(detector):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 40, size=(3, 240, 320, 3), dtype=np.uint8)
    faces = detector.detect(frames)
    assert [len(f) for f in faces] == [0, 0, 0]
    assert faces[0].boxes.shape == (0, 4) and faces[0].landmarks.shape == (0, 5, 2)


def test_min_face_size_drops_smaller_faces():
    frame = astronaut_scene(width=640, height=360, x=100, face_px=300)  # face about 80 px wide
    assert len(FaceDetector(detect_size=320, min_face_size=40).detect(frame[None])[0]) == 1
    assert len(FaceDetector(detect_size=320, min_face_size=150).detect(frame[None])[0]) == 0


def test_detection_runs_on_its_own_thread_count_and_restores_the_process_setting(monkeypatch):
    import torch

    from models.device import threads_beside_decoder

    before = torch.get_num_threads()
    detector = FaceDetector(detect_size=320, min_face_size=40, threads=1)
    mtcnn = detector._mtcnn(20)
    seen = []
    original = mtcnn.detect

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    mtcnn.detect = recording
    frame = astronaut_scene(width=640, height=360, x=100, face_px=300)
    assert len(detector.detect(frame[None])[0]) == 1
    assert seen == [1] and torch.get_num_threads() == before
    # auto: the worker's share of the cores but the decoder's one, at least one thread
    monkeypatch.setattr("models.device.available_cores", lambda: 8)
    assert threads_beside_decoder(3) == 3 and threads_beside_decoder(0) == 7
    assert threads_beside_decoder(0, worker_threads=4) == 3 and threads_beside_decoder(0, worker_threads=1) == 1


def test_channels_last_nets_find_what_stock_facenet_finds():
    import torch

    from models.faces import ChannelsLast
    from models.torchvision_compat import import_facenet_mtcnn

    detector = FaceDetector(detect_size=640, min_face_size=40)
    mtcnn = detector._mtcnn(13)
    assert isinstance(mtcnn.rnet, ChannelsLast) and isinstance(mtcnn.onet, ChannelsLast)
    stock = import_facenet_mtcnn()(keep_all=True, min_face_size=13, thresholds=[0.6, 0.7, 0.7],
                                   post_process=False, select_largest=False).eval()
    frames = np.stack([astronaut_scene(width=640, height=360, x=x, face_px=p) for x, p in ((40, 200), (300, 330))])
    with torch.inference_mode():
        ours, theirs = mtcnn.detect(frames, landmarks=True), stock.detect(frames, landmarks=True)
    assert [len(b) for b in theirs[0]] == [1, 1]  # the comparison below is over real detections
    for field in range(3):
        for a, b in zip(ours[field], theirs[field]):
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-4, atol=1e-2)


def test_detect_rejects_wrong_input(detector):
    with pytest.raises(ValueError):
        detector.detect(np.zeros((2, 10, 10), np.uint8))


def test_similarity_recovers_a_known_transform():
    src = np.array([[10, 10], [50, 12], [30, 35], [15, 55], [45, 56]], np.float64)
    angle, scale, shift = np.deg2rad(20), 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    matrix = estimate_similarity(src, dst)
    np.testing.assert_allclose(transform_points(src, matrix), dst, atol=1e-3)
    with pytest.raises(ValueError):
        estimate_similarity(np.zeros((5, 2)), dst)


@pytest.mark.parametrize("size, margin", [(224, 0.25), (380, 0.25), (112, 0.0)])
def test_alignment_puts_eyes_at_template_positions(detector, size, margin):
    from skimage import data

    frame = data.astronaut()
    face = FaceDetector(detect_size=512, min_face_size=40).detect(frame[None])[0]
    crop, matrix = align_face(frame, face.landmarks[0], size, margin)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    template = face_template(size, margin)
    mapped = transform_points(face.landmarks[0], matrix)
    # the eyes land on the template's eye positions (least squares over 5 points)
    assert np.abs(mapped[:2] - template[:2]).max() < 0.04 * size
    # and a fresh detection inside the crop finds the eyes there too
    again = FaceDetector(detect_size=size, min_face_size=20).detect(crop[None])[0]
    assert len(again) >= 1
    assert np.abs(again.landmarks[0, :2] - template[:2]).max() < 0.06 * size


def _faces(*boxes):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return FrameFaces(boxes, np.ones(n, np.float32), np.zeros((n, 5, 2), np.float32))


def test_two_faces_make_two_tracks_without_swapping():
    frames = []
    for i in range(10):
        frames.append(_faces([300 - 5 * i, 50, 380 - 5 * i, 130], [10 + 5 * i, 50, 90 + 5 * i, 130]))
    tracks = link_tracks(frames, iou_threshold=0.3)
    assert len(tracks) == 2
    left, right = tracks
    assert [frames[p].boxes[d][0] for p, d in zip(left.frames, left.detections)] == [10 + 5 * i for i in range(10)]
    assert [frames[p].boxes[d][0] for p, d in zip(right.frames, right.detections)] == [300 - 5 * i for i in range(10)]


def test_tracks_bridge_short_gaps_and_drop_short_tracks():
    frames = [_faces([0, 0, 50, 50]) for _ in range(4)] + [_faces()] + [_faces([2, 0, 52, 50]) for _ in range(4)]
    frames[2] = _faces([0, 0, 50, 50], [400, 400, 450, 450])  # a one-frame false positive
    tracks = link_tracks(frames, max_gap=2, min_length=3)
    assert len(tracks) == 1 and tracks[0].frames == [0, 1, 2, 3, 5, 6, 7, 8]
    split = link_tracks(frames[:4] + [_faces()] * 4 + frames[5:], max_gap=2, min_length=1)
    assert len([t for t in split if len(t) >= 4]) == 2
