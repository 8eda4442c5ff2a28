"""Small faces: found down to 20 source pixels, measured, and judged only when big enough to judge."""
import dataclasses
import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from models.crops import CropSpec
from models.faces import FaceDetector
from pipeline.config import ScanConfig, load_config
from pipeline.scan import build_scan_pipeline, prepare_scan
from tests.conftest import astronaut_scene, write_h264
from transforms.elements import MediaInput
from transforms.face_extractor import FaceExtractor
from transforms.verdicts import RunInfo, verdict_row

# At 220 px the astronaut photo's face gives MTCNN a box of about 37 x 46 px.
SMALL_FACE_PX = 220


@pytest.fixture(scope="module")
def small_face_video(tmp_path_factory):
    """2 s of clean 640x360 H.264 (crf 18) with one ~37x46 px face drifting right."""
    out = tmp_path_factory.mktemp("small") / "small_face_360p.mp4"
    frames = (astronaut_scene(640, 360, x=200 + i, face_px=SMALL_FACE_PX) for i in range(50))
    return write_h264(out, frames, fps=25, crf=18)


def test_min_face_size_is_in_source_pixels_through_every_downscale():
    frame = astronaut_scene(width=640, height=360, x=100, face_px=300)  # a face box of about 50 x 63 px
    # the frame as decoded from a 1280x720 source: the face is about 100 source pixels
    assert len(FaceDetector(detect_size=320, min_face_size=80).detect(frame[None])[0]) == 0
    assert len(FaceDetector(detect_size=320, min_face_size=80).detect(frame[None], source_scale=0.5)[0]) == 1
    detector = FaceDetector(min_face_size=20)
    assert detector.mtcnn_min_size(1.0) == 20 and detector.mtcnn_min_size(0.8) == 16
    assert detector.mtcnn_min_size(0.5) == 12 and detector.mtcnn_min_size(0.1) == 12  # MTCNN's 12-px window


def test_a_360p_video_with_a_37_px_face_is_judged(small_face_video, tmp_path):
    config = load_config(ScanConfig, None, ["model.checkpoint=untrained", "model.optimize=false"])
    assert config.faces.min_face_size == 20 and config.faces.min_judge_size == 24  # the defaults
    plan = prepare_scan([str(small_face_video)], str(tmp_path), config)
    pipeline = BeamTestPipeline()
    build_scan_pipeline(pipeline, plan)
    pipeline.run().wait_until_finish()
    (row,) = pq.read_table(str(tmp_path / "verdicts")).to_pylist()
    assert row["status"] == "ok", row["error"]
    assert row["score"] is not None and row["label"] in ("real", "fake")
    assert row["num_tracks"] == len(row["tracks"]) == 1
    (track,) = row["tracks"]
    boxes = np.asarray(track["boxes"])
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert 32 < np.median(widths) < 42 and 40 < np.median(heights) < 52  # the 37 x 46 face
    assert track["face_size"] == pytest.approx(float(np.median(np.maximum(widths, heights))), rel=1e-5)
    assert len(track["scores"]) == len(track["frame_indices"]) and track["score"] is not None


def _extractor(**faces) -> FaceExtractor:
    config = ScanConfig()
    detector = FaceDetector(detect_size=640, min_face_size=config.faces.min_face_size)
    return FaceExtractor(config.sampling, dataclasses.replace(config.faces, **faces), detector,
                         CropSpec("aligned", 224), config.decode)


def _run():
    return RunInfo(scan_id="s", model_name="m", checkpoint_sha256=None, package_version="0", threshold=0.5)


def test_faces_too_small_to_judge_get_their_own_status_not_no_face(small_face_video):
    extractor = _extractor(min_judge_size=60)
    try:
        result = extractor.extract(MediaInput(str(small_face_video), "video"))
    finally:
        extractor.sandbox.shutdown()
    assert result.status == "small_face" and result.tracks == ()
    (small,) = result.small_tracks
    assert small.crops is None and 40 < small.face_size < 52 and result.faces_found == len(small)
    assert result.error.startswith(f"faces found but too small ({small.face_size:.0f} px")
    row = verdict_row(result, _run())
    assert row["status"] == "small_face" and row["score"] is None and row["label"] is None
    assert row["num_tracks"] == 1 and row["tracks"][0]["face_size"] == pytest.approx(small.face_size)
    assert row["tracks"][0]["score"] is None and row["tracks"][0]["scores"] == []


def test_small_tracks_beside_a_judged_one_are_reported_unscored(tmp_path):
    """One photo, a large face and a small one: the large one is judged, the small one listed with a warning."""
    frame = np.full((360, 640, 3), 90, np.uint8)
    frame[:, :330] = astronaut_scene(330, 360, x=15, face_px=300)
    frame[:, 330:] = astronaut_scene(310, 360, x=40, face_px=SMALL_FACE_PX)
    path = tmp_path / "two_faces.png"
    cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    extractor = _extractor(min_judge_size=60)
    try:
        result = extractor.extract(MediaInput(str(path), "image"))
    finally:
        extractor.sandbox.shutdown()
    assert result.status == "ok", result.error
    (judged,), (small,) = result.tracks, result.small_tracks
    assert judged.face_size >= 60 > small.face_size and judged.crops.shape == (1, 224, 224, 3)
    assert any("1 track(s) too small to judge" in w for w in result.info.warnings)
    row = verdict_row(result, _run(), track_scores=[[0.9]], track_probabilities=[0.9], score=0.9)
    assert [t["score"] for t in row["tracks"]] == [pytest.approx(0.9), None]
    assert [t["track_id"] for t in row["tracks"]] == [judged.track_id, small.track_id]
    assert os.path.basename(row["uri"]) == "two_faces.png" and row["num_tracks"] == 2
