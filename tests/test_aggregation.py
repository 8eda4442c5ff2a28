"""One aggregation for the scan and calibration (models/aggregation.py, transforms/aggregate.py)."""
from __future__ import annotations

import numpy as np
import pytest

from models.aggregation import TrackFaces, aggregate, box_areas, combine_tracks, sbi_score


def _track(probabilities, frames, side=100.0, x=0.0):
    """A track of square ``side``-px boxes at horizontal offset ``x``."""
    boxes = [[x, 0.0, x + side, side]] * len(probabilities)
    return TrackFaces(np.array(probabilities), np.array(boxes), np.array(frames))


def test_track_strategies() -> None:
    assert combine_tracks([0.2, 0.9, 0.4], [10, 3, 5], "max") == pytest.approx(0.9)
    assert combine_tracks([0.2, 0.9, 0.4], [10, 3, 5], "mean") == pytest.approx(0.5)
    assert combine_tracks([0.2, 0.9, 0.4], [10, 3, 5], "longest") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="strategy 'median'"):
        combine_tracks([0.2], [1], "median")
    with pytest.raises(ValueError, match="one length per track"):
        combine_tracks([0.2, 0.3], [1], "max")


def test_sbi_rule_by_hand() -> None:
    # Frame 0: faces of area 100 (p .2), 60 (p .7) and 40 (p .9); the last is under half
    # the largest and does not count: max(.2, .7) = .7. Frame 1: one face, p .4.
    probabilities = [0.2, 0.7, 0.9, 0.4]
    areas = [100.0, 60.0, 40.0, 100.0]
    frames = [0, 0, 0, 1]
    assert sbi_score(probabilities, areas, frames) == pytest.approx((0.7 + 0.4) / 2)
    # Each frame counts once, however many faces it holds.
    assert sbi_score([0.9, 0.9, 0.9, 0.1], [1, 1, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.5)
    # The largest face of a frame always counts, whatever its share.
    assert sbi_score([0.3], [0.0], [7]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="equally many"):
        sbi_score([0.1, 0.2], [1.0], [0, 1])
    np.testing.assert_allclose(box_areas([[0, 0, 10, 20], [5, 5, 4, 9]]), [200, 0])


def test_sbi_aggregate_pools_faces_of_all_tracks_per_frame() -> None:
    # A big face seen in frames 0-2 and a small one (side 60: area 0.36 of the big one's)
    # seen in frames 1-3. Frames 1 and 2: only the big face counts; frame 3: the small
    # face is the largest there, so it counts.
    big = _track([0.1, 0.2, 0.3], [0, 1, 2], side=100)
    small = _track([0.9, 0.9, 0.6], [1, 2, 3], side=60, x=300)
    result = aggregate("sbi", [big, small], "max")
    assert result.aggregator == "sbi"
    assert result.score == pytest.approx((0.1 + 0.2 + 0.3 + 0.6) / 4)
    assert result.track_scores == pytest.approx((0.2, 0.8))  # shown per track: their means
    # The strategy does not change the SBI rule.
    assert aggregate("sbi", [big, small], "longest").score == result.score


def test_other_aggregators_combine_track_scores_by_strategy() -> None:
    tracks = [_track([0.1, 0.3], [0, 1]), _track([0.8, 0.9, 0.7], [0, 1, 2])]
    mean = aggregate("mean", tracks, "max")
    assert mean.track_scores == pytest.approx((0.2, 0.8)) and mean.score == pytest.approx(0.8)
    assert aggregate("frame", tracks, "mean").score == pytest.approx(0.5)
    bilstm = aggregate("bilstm", tracks, "longest", sequence_scores=np.array([0.6, 0.05], np.float32))
    assert bilstm.track_scores == pytest.approx((0.6, 0.05)) and bilstm.score == pytest.approx(0.05)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: aggregate("vote", t, "max"), "unknown aggregator 'vote'"),
        (lambda t: aggregate("mean", t, "median"), "unknown aggregate strategy"),
        (lambda t: aggregate("mean", [], "max"), "at least one face track"),
        (lambda t: aggregate("bilstm", t, "max"), "sequence scores are needed"),
        (lambda t: aggregate("mean", t, "max", [0.5]), "sequence scores are needed"),
        (lambda t: aggregate("bilstm", t, "max", [0.5, 0.6]), "2 sequence scores for 1 tracks"),
    ],
)
def test_aggregate_refuses_what_it_cannot_score(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call([_track([0.5], [0])])


def test_track_faces_checks_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        TrackFaces(np.array([0.1, 0.2]), np.zeros((1, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="at least one face"):
        TrackFaces(np.array([]), np.zeros((0, 4)), np.array([]))


# --- the scan's aggregation stage --------------------------------------------------------


def _scored(media_type: str, tracks: list[tuple[list[float], list[int], float]], embedding_dim: int = 8):
    """A ``ScoredMedia`` with tracks of (probabilities, frame indices, box side)."""
    from transforms.elements import OK, ExtractedMedia, FaceScore, FaceTrackCrops, MediaInfo, ScoredMedia

    crops, scores = [], []
    for track_id, (probabilities, frames, side) in enumerate(tracks):
        x = 400.0 * track_id
        crops.append(FaceTrackCrops(
            track_id=track_id, clip_index=0, frame_indices=tuple(frames),
            timestamps=tuple(f / 25 for f in frames),
            boxes=np.array([[x, 0, x + side, side]] * len(frames), np.float32),
            detection_scores=np.ones(len(frames), np.float32), crops=None,
        ))
        scores.append(tuple(FaceScore(p, np.full(embedding_dim, p, np.float32), "cpu") for p in probabilities))
    info = MediaInfo(f"/archive/{media_type}.bin", media_type)
    item = ExtractedMedia(info, OK, frames_sampled=4, faces_found=sum(len(t[0]) for t in tracks), tracks=tuple(crops))
    return ScoredMedia(item, tuple(scores))


@pytest.fixture(scope="module")
def sbi_card_checkpoint(tmp_path_factory):
    """A small checkpoint whose card names the SBI aggregator (no sequence model)."""
    import dataclasses

    from models.checkpoint import load_checkpoint, save_checkpoint

    untrained = load_checkpoint("untrained")
    card = dataclasses.replace(untrained.card, name="sbi-card", aggregator="sbi", sequence_arch=None,
                               threshold=0.4)
    path = str(tmp_path_factory.mktemp("ckpt") / "sbi_card.pt")
    save_checkpoint(path, card, untrained.frame_model)
    return path


def test_the_scan_names_its_aggregator_and_applies_the_sbi_rule(sbi_card_checkpoint) -> None:
    from transforms.aggregate import AggregateVerdictsFn
    from transforms.checkpoints import acquire_checkpoint
    from transforms.verdicts import RunInfo

    run = RunInfo("scan1", "sbi-card", None, "0", threshold=0.4)
    fn = AggregateVerdictsFn(sbi_card_checkpoint, "max", run)
    fn.setup()
    # The stage holds the worker's shared copy: the one the frame handler gets, not its own.
    assert fn._checkpoint is acquire_checkpoint(sbi_card_checkpoint)
    video = _scored("video", [([0.1, 0.2, 0.3], [0, 1, 2], 100), ([0.9, 0.9, 0.6], [1, 2, 3], 60)])
    (row,) = fn.process(video)
    assert row["aggregator"] == "sbi" and row["status"] == "ok"
    assert row["score"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.6) / 4)
    assert [t["score"] for t in row["tracks"]] == pytest.approx([0.2, 0.8])
    assert row["label"] == "real"  # 0.3 < 0.4, though one track's mean is 0.8
    image = _scored("image", [([0.7], [0], 100), ([0.2], [0], 100)])
    (row,) = fn.process(image)
    assert row["aggregator"] == "frame" and row["score"] == pytest.approx(0.7)


def test_the_scan_runs_the_shared_bilstm_of_a_bilstm_card() -> None:
    from transforms.aggregate import AggregateVerdictsFn
    from transforms.checkpoints import acquire_checkpoint
    from transforms.verdicts import RunInfo

    fn = AggregateVerdictsFn("untrained", "max", RunInfo("scan2", "untrained", None, "0", threshold=0.5))
    fn.setup()
    assert fn._sequence.model is acquire_checkpoint("untrained").sequence_model
    video = _scored("video", [([0.1, 0.2], [0, 1], 100), ([0.8, 0.9], [0, 1], 100)], embedding_dim=1280)
    (row,) = fn.process(video)
    assert row["aggregator"] == "bilstm"
    assert row["score"] == pytest.approx(max(t["score"] for t in row["tracks"]))
