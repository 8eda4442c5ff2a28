"""Detection on a few frames per clip, interpolation between them, and its accuracy on real video."""
import dataclasses

import numpy as np
import pytest

from models.crops import CropSpec
from models.faces import FaceDetector, FrameFaces
from models.keyframes import fill_between, interpolate, keyframe_positions, match_faces, undecided_positions
from models.tracking import box_iou
from pipeline.config import ScanConfig
from tests.conftest import astronaut_scene, write_h264
from transforms.elements import MediaInput
from transforms.face_extractor import FaceExtractor


def faces(*boxes, score=0.99):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    corners = np.stack([boxes[:, :2], boxes[:, 2:], boxes[:, :2], boxes[:, 2:], boxes[:, :2]], axis=1)
    return FrameFaces(boxes, np.full(len(boxes), score, np.float32), corners.astype(np.float32))


def test_keyframe_positions_always_include_both_ends():
    assert keyframe_positions(25, 12) == [0, 12, 24]
    assert keyframe_positions(25, 6) == [0, 6, 12, 18, 24]
    assert keyframe_positions(20, 12) == [0, 12, 19]
    assert keyframe_positions(5, 1) == [0, 1, 2, 3, 4]
    assert keyframe_positions(1, 12) == [0] and keyframe_positions(0, 12) == []


def test_faces_pair_up_best_first_and_never_swap():
    a = faces([0, 0, 10, 10], [12, 0, 22, 10])
    b = faces([13, 0, 23, 10], [1, 0, 11, 10])  # same two faces, listed the other way round
    assert match_faces(a, b, 0.5) == [1, 0]
    assert match_faces(a, faces([0, 0, 10, 10]), 0.5) is None  # a face left
    assert match_faces(a, faces([50, 0, 60, 10], [70, 0, 80, 10]), 0.5) is None  # both moved far
    assert match_faces(FrameFaces.empty(), FrameFaces.empty(), 0.5) == []


def test_interpolation_is_linear_and_flagged():
    a, b = faces([0, 0, 10, 10], score=0.95), faces([4, 2, 14, 12], score=0.99)
    mid = interpolate(a, b, [0], 0.5)
    np.testing.assert_allclose(mid.boxes, [[2, 1, 12, 11]])
    np.testing.assert_allclose(mid.landmarks[0, 0], [2, 1])
    assert mid.interpolated and not a.interpolated and mid.scores[0] == pytest.approx(0.95)


def test_disagreeing_gaps_are_bisected_until_they_agree():
    # A face drifting 1 px a frame that jumps between frames 6 and 7: only the gap around the jump
    # is bisected (12 -> 6 -> 9 -> 7); the drift alone is interpolated.
    truth = {p: faces([p + (150 if p >= 7 else 0), 0, p + 100 + (150 if p >= 7 else 0), 100]) for p in range(13)}
    found = {p: truth[p] for p in keyframe_positions(13, 12)}
    asked = []
    while todo := undecided_positions(found, 0.75):
        asked += todo
        found.update({p: truth[p] for p in todo})
    assert asked == [6, 9, 7]
    filled = fill_between(found, 13, 0.75)
    assert len(filled) == 13
    for p, f in enumerate(filled):
        assert box_iou(f.boxes, truth[p].boxes)[0, 0] > 0.95
        assert f.interpolated == (p not in found)


def test_fill_between_refuses_undetected_ends_and_disagreement():
    with pytest.raises(ValueError):
        fill_between({0: faces([0, 0, 10, 10])}, 3, 0.5)
    with pytest.raises(ValueError):
        fill_between({0: faces([0, 0, 10, 10]), 2: faces([50, 0, 60, 10])}, 3, 0.5)


@pytest.fixture(scope="module")
def shaky_video(tmp_path_factory):
    """The astronaut moving fast and unevenly: a fast pan, a jump (a new track), then 2 Hz shake."""
    xs = [30 + 3 * i for i in range(20)] + [int(150 + 8 * np.sin(2 * np.pi * 2 * i / 25)) for i in range(30)]
    out = tmp_path_factory.mktemp("kf") / "shaky.mp4"
    return write_h264(out, (astronaut_scene(x=x, face_px=300) for x in xs), fps=25), xs


def _extract(path, detect_every):
    config = ScanConfig()
    faces = dataclasses.replace(config.faces, detect_every=detect_every)
    detector = FaceDetector(detect_size=320, min_face_size=40)
    extractor = FaceExtractor(config.sampling, faces, detector, CropSpec("aligned", 224), config.decode)
    try:
        return extractor.extract(MediaInput(str(path), "video")), extractor.take_stage_seconds()
    finally:
        extractor.sandbox.shutdown()


def test_interpolated_boxes_match_detecting_every_frame(shaky_video):
    path, _ = shaky_video
    every, _ = _extract(path, 1)
    sparse, _ = _extract(path, 12)
    assert every.status == sparse.status == "ok"
    assert len(every.tracks) == len(sparse.tracks) == 2  # the jump starts a second track in both
    for a, b in zip(every.tracks, sparse.tracks):
        assert a.frame_indices == b.frame_indices
        assert not any(a.interpolated) and any(b.interpolated) and not all(b.interpolated)
        iou = np.diag(box_iou(a.boxes, b.boxes))
        assert iou.mean() >= 0.95 and iou.min() >= 0.85, iou
        # the crops are cut at the interpolated landmarks, so they stay aligned
        diff = np.abs(a.crops.astype(int) - b.crops.astype(int)).mean(axis=(1, 2, 3))
        assert diff.max() < 25, diff
