"""The Self-Blended Images authors' released detectors, scored as their authors score them.

``tests/sbi_reference.py`` is their inference rewritten from their code's rules; these
tests check our box crops, our loading of their checkpoint layout and a whole scan
with ``--checkpoint sbi:PATH`` against it, face by face.
"""
import math

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from models.checkpoint import load_checkpoint
from models.checkpoint_io import CheckpointError
from models.crops import CropSpec, box_crop_region, cut_box_crop
from models.device import resolve_device
from models.faces import FaceDetector
from models.inference import FramePredictor
from models.sbi import sbi_card
from pipeline.cli import main
from tests import sbi_reference as ref
from tests.conftest import astronaut_scene, write_h264
from transforms.sandbox import DecoderSandbox

LIMITS = dict(max_side=1920, max_pixels=10**8)


def _calibration_faces() -> np.ndarray:
    """Real face crops cut the authors' way: the astronaut at four places and sizes, boxes jittered."""
    rng = np.random.default_rng(0)
    detector = FaceDetector(detect_size=640, min_face_size=40)
    faces = []
    for x, face_px in ((40, 300), (150, 340), (260, 260), (330, 300)):
        frame = astronaut_scene(x=x, face_px=face_px)
        (box,) = detector.detect(frame[None])[0].boxes[:1]
        w, h = box[2] - box[0], box[3] - box[1]
        for _ in range(3):
            faces.append(ref.face_input(frame, box + rng.uniform(-0.15, 0.15, 4) * [w, h, w, h]))
    return np.stack(faces)  # (12, 3, 380, 380) uint8


def _calibrated_detector(faces_chw: np.ndarray) -> tuple[ref.Detector, np.ndarray]:
    """Their B4 with weights whose output really depends on the face crop.

    Random weights with default BatchNorm statistics give the same output for any
    input; so the statistics are taken from real face crops, and the head reads the
    direction in which the pooled features of those crops vary most, scaled so that
    the central 80% of their fake probabilities spread over (0.05, 0.95) (a random
    network answers some crops far more strongly than others: those saturate).
    Returns the detector and its probabilities on ``faces_chw``.
    """
    torch.manual_seed(0)
    detector = ref.Detector().eval()
    x = torch.from_numpy(faces_chw).float() / 255
    norms = [m for m in detector.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative: the mean of the two equal batches' statistics
            m.train()
        for batch in x.split(6):
            detector(batch)
        detector.eval()
        features = torch.cat([detector.net.extract_features(b).mean(dim=(2, 3)) for b in x.split(6)]).double()
        centred = features - features.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        along = centred @ direction
        low, high = torch.quantile(along, torch.tensor([0.1, 0.9], dtype=along.dtype))
        middle = (low + high) / 2
        gain = 2 * math.log(0.95 / 0.05) / (high - low)  # the 10th and 90th percentiles: p = 0.05 and 0.95
        weight = torch.zeros(2, features.shape[1], dtype=torch.float64)
        weight[1] = gain * direction
        bias = torch.zeros(2, dtype=torch.float64)
        bias[1] = -gain * (features.mean(0) @ direction + middle)
        detector.net._fc.weight.copy_(weight.float())
        detector.net._fc.bias.copy_(bias.float())
        probabilities = torch.softmax(detector.net._fc(features.float()), dim=1)[:, 1].numpy()
    return detector, probabilities


@pytest.fixture(scope="module")
def sbi_checkpoint(tmp_path_factory):
    """An SBI-format checkpoint (``{"model": {"net.*": ...}}``) whose scores vary with the crop."""
    faces = _calibration_faces()
    detector, probabilities = _calibrated_detector(faces)
    path = tmp_path_factory.mktemp("sbi") / "FFraw.tar"
    torch.save({"model": detector.state_dict(), "epoch": 99}, path)
    return path, detector, faces, probabilities


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    """1 s of the astronaut moving right by 2 px a frame (25 fps H.264)."""
    path = tmp_path_factory.mktemp("sbi_video") / "astronaut.mp4"
    return write_h264(path, (astronaut_scene(x=60 + 2 * i) for i in range(25)), fps=25)


def test_box_crops_follow_the_authors_test_phase_rule():
    rng = np.random.default_rng(1)
    spec = CropSpec("box", 380, box_margins=sbi_card().box_margins)
    frame = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    boxes = [
        [20.0, 16.0, 100.0, 96.0],  # margins land on whole pixels
        [10.7, 20.2, 110.3, 115.9],
        [-7.5, -3.2, 60.1, 50.0],  # over the top-left corner: truncation toward zero, then the clamp
        [150.25, 70.5, 210.0, 130.75],  # over the bottom-right corner
    ]
    random = rng.uniform([-30, -30, 8, 8], [190, 110, 120, 120], (300, 4))
    boxes += [[x, y, x + w, y + h] for x, y, w, h in random if x + w > 0 and y + h > 0]  # boxes meet the frame
    for box in boxes:
        x0, y0, x1, y1 = box_crop_region(box, 120, 200, spec.box_margins)
        np.testing.assert_array_equal(frame[y0:y1, x0:x1], ref.crop_face_test_phase(frame, box))
        np.testing.assert_array_equal(cut_box_crop(frame, box, spec), ref.face_input(frame, box).transpose(1, 2, 0))
    assert box_crop_region([-5, 10, 20, 40], 120, 200, spec.box_margins) == (0, 6, 24, 44)
    # Boxes off the frame (theirs: an empty or wrapped-around slice) give the frame's nearest edge strip.
    assert box_crop_region([300, 10, 340, 40], 120, 200, spec.box_margins) == (199, 6, 200, 44)
    assert box_crop_region([-40, -50, -20, -30], 120, 200, spec.box_margins) == (0, 0, 1, 1)
    assert cut_box_crop(frame, [-40, -50, -20, -30], spec).shape == (380, 380, 3)
    with pytest.raises(ValueError, match="finite"):
        box_crop_region([0, 0, float("nan"), 10], 120, 200, spec.box_margins)
    with pytest.raises(ValueError, match="'box' crop spec"):
        cut_box_crop(frame, boxes[0], CropSpec("aligned", 224))


def test_the_sbi_card_feeds_the_weights_as_their_authors_do():
    card = sbi_card()
    assert card.crop == CropSpec("box", 380, box_margins=(0.125, 0.125, 0.125, 0.125))
    assert (card.pixel_range, card.mean, card.std) == ((0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert card.class_names == ("real", "fake") and card.fake_index == 1
    assert card.aggregator == "sbi" and card.sequence_arch is None


def test_the_sbi_aggregation_is_theirs():
    """Several faces a frame: only those at least half the largest's area count (exactly half does)."""
    from models.aggregation import box_areas, sbi_score

    frames = {
        3: [([0, 0, 100, 100], 0.2), ([200, 0, 250, 100], 0.9), ([300, 0, 340, 40], 0.99)],  # half: in; less: out
        4: [([0, 0, 100, 100], 0.4)],
        9: [([0, 0, 60, 60], 0.1), ([100, 0, 150, 70], 0.3)],
    }
    faces = [(index, box, p) for index, found in frames.items() for box, p in found]
    ours = sbi_score([p for _, _, p in faces], box_areas(np.array([b for _, b, _ in faces])), [i for i, _, _ in faces])
    assert ours == pytest.approx(ref.video_score(frames)) == pytest.approx((0.9 + 0.4 + 0.3) / 3)


def test_sbi_checkpoint_scores_like_the_original_network(sbi_checkpoint):
    path, _, faces, expected = sbi_checkpoint
    # the weights are worth testing with: real face crops get scores across the range
    assert expected.min() < 0.1 and expected.max() > 0.9 and np.std(expected) > 0.2
    loaded = load_checkpoint(f"sbi:{path}")
    assert loaded.card.to_dict() == {**sbi_card().to_dict(), "embedding_dim": 1792}
    assert loaded.sequence_model is None and loaded.sha256 is not None
    some = np.unique([expected.argmin(), expected.argmax(), 0, 4, 8])  # a few, the extremes among them
    predict = FramePredictor(loaded, resolve_device("cpu"), precision="fp32")
    probs, embeddings = predict(faces[some].transpose(0, 2, 3, 1))
    np.testing.assert_allclose(probs, expected[some], atol=1e-4)
    assert embeddings.shape == (len(some), 1792)


def test_sbi_refuses_other_layouts(tmp_path, sbi_checkpoint):
    _, detector, _, _ = sbi_checkpoint
    torch.save(detector.state_dict(), tmp_path / "bare.pth")  # no "model" entry
    with pytest.raises(CheckpointError, match="not an SBI checkpoint"):
        load_checkpoint(f"sbi:{tmp_path / 'bare.pth'}")
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="'net.'"):
        load_checkpoint(f"sbi:{tmp_path / 'other.pth'}")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(f"sbi:{tmp_path / 'missing.pth'}")


@pytest.mark.slow
def test_a_scan_with_sbi_weights_scores_each_face_as_their_code_does(sbi_checkpoint, face_video, tmp_path):
    """``--checkpoint sbi:PATH`` and nothing else: their crops, fp32 scores and aggregation."""
    path, detector, _, _ = sbi_checkpoint
    out = tmp_path / "scan"
    argv = ["scan", str(face_video), "--output", str(out), "--checkpoint", f"sbi:{path}"]
    assert main(argv, test_pipeline=BeamTestPipeline()) == 0
    (row,) = pq.read_table(str(out / "verdicts")).to_pylist()
    assert row["status"] == "ok" and row["aggregator"] == "sbi" and row["device"] == "cpu"
    assert row["model_name"] == "sbi-efficientnet-b4" and 20 <= row["faces_found"] <= 25

    # Their frames: decoded by the library the verdict names, pixel for pixel what the scan decoded.
    by_frame = ref.faces_by_frame(row["tracks"])
    indices = sorted(by_frame)
    frames = ref.decode_frames(str(face_video), indices, row["decoder"])
    with DecoderSandbox(isolate=False) as sandbox:
        sandbox.open(row["decoder"], str(face_video), **LIMITS)
        np.testing.assert_array_equal(sandbox.read(indices).frames, frames)

    # Their crops of the verdict's boxes, their network, their aggregation.
    frame_at = dict(zip(indices, frames))
    faces = [(index, box, t, k) for index in indices for box, t, k in by_frame[index]]
    theirs = ref.fake_probabilities(detector, np.stack([ref.face_input(frame_at[i], b) for i, b, _, _ in faces]))
    ours = np.array([row["tracks"][t]["scores"][k] for _, _, t, k in faces])
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert np.ptp(theirs) > 0.2  # the faces' scores differ: the comparison is not between constants
    video = ref.video_score({i: [(b, theirs[n]) for n, (j, b, _, _) in enumerate(faces) if j == i] for i in indices})
    assert row["score"] == pytest.approx(video, abs=1e-3)

    # The tolerance catches the subtlest slip: the same slices one pixel short on the far edges.
    short = [cv2.resize(ref.crop_face_test_phase(frame_at[i], b)[:-1, :-1], ref.IMAGE_SIZE) for i, b, _, _ in faces[:4]]
    moved = ref.fake_probabilities(detector, np.stack(short).transpose(0, 3, 1, 2)) - theirs[:4]
    assert np.abs(moved).max() > 0.05
