"""Tests of the detection metrics and calibration (models/metrics.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.metrics import (
    accuracy,
    average_precision,
    binary_report,
    confusion_matrix,
    eer,
    fit_temperature,
    log_loss,
    operating_point,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)

Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])


def _mann_whitney(y: np.ndarray, s: np.ndarray) -> float:
    """Brute-force AUC: P(positive score > negative score) + P(tie) / 2."""
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_hand_computed_auc_ap_and_curves() -> None:
    assert roc_auc(Y, S) == pytest.approx(0.75)
    assert average_precision(Y, S) == pytest.approx(5.0 / 6.0)
    fpr, tpr, thresholds = roc_curve(Y, S)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    precision, recall, pr_thresholds = precision_recall_curve(Y, S)
    np.testing.assert_allclose(precision, [0.5, 2 / 3, 0.5, 1, 1])
    np.testing.assert_allclose(recall, [1, 1, 0.5, 0.5, 0])
    np.testing.assert_allclose(pr_thresholds, [0.1, 0.35, 0.4, 0.8])


def test_ties_count_half() -> None:
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    # A tie group of one positive and one negative enters AP as a single step.
    assert average_precision([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1]) == pytest.approx(5.0 / 6.0)
    fpr, tpr, _ = roc_curve([0, 1, 1, 0], [0.5, 0.5, 0.9, 0.1])
    assert len(fpr) == 4  # inf, 0.9, 0.5 (one point for the tie), 0.1


@pytest.mark.parametrize("seed", range(3))
def test_auc_and_ap_match_brute_force_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + y, 1)  # rounding makes many ties
    assert roc_auc(y, scores) == pytest.approx(_mann_whitney(y, scores))
    distinct = rng.random(300) + 0.3 * y  # no ties: AP = mean precision at positives
    order = np.argsort(-distinct)
    hits = y[order]
    precision_at_hits = (np.cumsum(hits) / np.arange(1, 301))[hits == 1]
    assert average_precision(y, distinct) == pytest.approx(precision_at_hits.mean())


def test_perfect_and_inverted_scores() -> None:
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert roc_auc(y, s) == 1.0 and average_precision(y, s) == 1.0
    assert eer(y, s) == (0.0, 0.8)
    assert roc_auc(y, 1 - s) == 0.0
    assert eer(y, 1 - s)[0] == pytest.approx(1.0)
    # Positives ranked 3rd and 4th: precision 1/3 and 2/4.
    assert average_precision(y, 1 - s) == pytest.approx(0.5 / 3 + 0.5 / 2)


def test_eer_hand_computed_and_interpolated() -> None:
    assert eer(Y, S) == (pytest.approx(0.5), pytest.approx(0.4))
    # Scores high to low: +, -, -, +, -. FNR stays 1/2 while FPR crosses it
    # between the thresholds 0.8 (FPR 1/3) and 0.7 (FPR 2/3).
    rate, threshold = eer([1, 0, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5])
    assert rate == pytest.approx(0.5) and threshold == pytest.approx(0.75)
    rate, threshold = eer([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])  # uninformative scores
    assert rate == pytest.approx(0.5) and threshold == 0.5


def test_one_class_raises() -> None:
    for fn in (roc_auc, roc_curve, eer):
        with pytest.raises(ValueError, match="one class"):
            fn([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="positive"):
        average_precision([0, 0], [0.2, 0.4])
    assert average_precision([1, 1], [0.2, 0.4]) == 1.0


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        roc_auc([], [])
    with pytest.raises(ValueError, match="non-empty"):
        roc_auc([0, 1], [0.3])
    with pytest.raises(ValueError, match="0 and 1"):
        roc_auc([0, 2], [0.3, 0.4])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.3, np.nan])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log_loss([0, 1], [0.3, 1.2])


def test_log_loss_accuracy_and_confusion() -> None:
    expected = -(math.log(0.8) + math.log(0.7)) / 2
    assert log_loss([1, 0], [0.8, 0.3]) == pytest.approx(expected)
    assert log_loss([0, 1], [1.0, 0.0]) == pytest.approx(-math.log(1e-7))  # clipped, finite
    assert accuracy([0, 0, 1, 1], [0.1, 0.6, 0.5, 0.9]) == 0.75  # 0.5 >= threshold is fake
    assert accuracy([0, 0, 1, 1], [0.1, 0.6, 0.5, 0.9], threshold=0.55) == 0.5
    matrix = confusion_matrix([0, 0, 1, 1, 1], [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(matrix, [[1, 1], [1, 2]])
    with pytest.raises(ValueError, match="y_pred"):
        confusion_matrix([0, 1], [0.2, 0.7])


def test_binary_report_is_json_and_consistent() -> None:
    p = np.array([0.1, 0.6, 0.35, 0.8])
    report = binary_report(Y, p, threshold=0.5)
    json.dumps(report, allow_nan=False)
    assert report["auc"] == pytest.approx(0.75) and report["ap"] == pytest.approx(5 / 6)
    assert report["accuracy"] == 0.5 and report["confusion"] == [[1, 1], [1, 1]]
    assert report["log_loss"] == pytest.approx(log_loss(Y, p))
    assert (report["eer"], report["eer_threshold"]) == eer(Y, p)
    assert (report["n"], report["n_pos"], report["n_neg"]) == (4, 2, 2)
    assert type(report["n"]) is int and type(report["auc"]) is float


def test_binary_report_with_one_class_uses_none() -> None:
    report = binary_report([0, 0, 0], [0.1, 0.7, 0.2])
    json.dumps(report, allow_nan=False)
    assert report["auc"] is None and report["ap"] is None
    assert report["eer"] is None and report["eer_threshold"] is None
    assert report["accuracy"] == pytest.approx(2 / 3) and report["confusion"] == [[2, 1], [0, 0]]


def _sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(probs, axis=1)
    return (rng.random((len(probs), 1)) > cumulative[:, :-1]).sum(axis=1)


@pytest.mark.parametrize("true_t, classes", [(2.5, 2), (0.6, 3), (1.0, 2)])
def test_fit_temperature_recovers_a_known_temperature(true_t: float, classes: int) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, classes))
    scaled = logits / true_t
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    labels = _sample_labels(rng, probs / probs.sum(axis=1, keepdims=True))
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.15)


def test_fit_temperature_on_fake_logits() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(scale=2.0, size=20000)
    labels = (rng.random(20000) < 1.0 / (1.0 + np.exp(-z / 0.5))).astype(int)
    assert fit_temperature(z, labels) == pytest.approx(0.5, rel=0.15)
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(z[:10], np.full(10, 2))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_separable_validation_puts_the_threshold_mid_gap_in_logit_space() -> None:
    point = operating_point([0.02, 0.10, 0.17, 0.40, 0.85, 0.99], [0, 0, 0, 1, 1, 1])
    assert point.method == "gap_midpoint"
    assert (point.score_below, point.score_above) == (0.17, 0.40)
    assert _logit(point.threshold) == pytest.approx((_logit(0.17) + _logit(0.40)) / 2)
    assert point.threshold == pytest.approx(0.26982, abs=1e-5)  # the linear middle would be 0.285
    assert (point.val_fpr, point.val_tpr) == (0.0, 1.0)
    assert (point.val_videos, point.val_real, point.val_fake) == (6, 3, 3)
    # A gap that validation saturates: the middle in logit space, never its edge.
    point = operating_point([0.001, 0.003, 0.9999, 1.0], [0, 0, 1, 1])
    assert 0.003 < point.threshold < 0.9999
    assert _logit(point.threshold) == pytest.approx((_logit(0.003) + _logit(0.9999)) / 2)
    # The gap's middle whatever the target: a perfect split needs no false-positive budget.
    assert operating_point([0.1, 0.2, 0.8], [0, 0, 1], target_fpr=0.6).threshold == pytest.approx(0.5)


def test_overlapping_classes_take_the_best_cut_within_the_budget() -> None:
    # Scores high to low: F .9, F .7, R .6, F .5, R .3, F .25, R .2, R .05.
    scores = [0.05, 0.2, 0.3, 0.6, 0.25, 0.5, 0.7, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    strict = operating_point(scores, labels, target_fpr=0.01)  # no false positive allowed
    assert strict.method == "target_fpr"
    assert (strict.score_below, strict.score_above) == (0.6, 0.7)
    assert (strict.val_fpr, strict.val_tpr) == (0.0, 0.5)
    loose = operating_point(scores, labels, target_fpr=0.25)  # one of four reals may be flagged
    assert (loose.score_below, loose.score_above) == (0.3, 0.5)
    assert _logit(loose.threshold) == pytest.approx((_logit(0.3) + _logit(0.5)) / 2)
    assert (loose.val_fpr, loose.val_tpr) == (0.25, 0.75)


def test_of_cuts_with_equal_tpr_the_one_with_fewer_false_positives_wins() -> None:
    # R .5 lies between F .6 and R .4: flagging it would cost a false positive and gain no fake.
    point = operating_point([0.1, 0.4, 0.5, 0.3, 0.6, 0.9], [0, 0, 0, 1, 1, 1], target_fpr=0.34)
    assert (point.score_below, point.score_above) == (0.5, 0.6)
    assert (point.val_fpr, point.val_tpr) == (0.0, pytest.approx(2 / 3))


def test_ties_move_together() -> None:
    # A real and a fake tie at 0.6: any threshold flags both or neither.
    point = operating_point([0.1, 0.6, 0.6, 0.8], [0, 0, 1, 1])
    assert (point.score_below, point.score_above) == (0.6, 0.8)
    assert (point.val_fpr, point.val_tpr) == (0.0, 0.5)
    point = operating_point([0.1, 0.6, 0.6, 0.8], [0, 0, 1, 1], target_fpr=0.5)
    assert (point.score_below, point.score_above) == (0.1, 0.6)
    assert (point.val_fpr, point.val_tpr) == (0.5, 1.0)
    # Tied fakes at the gap's edge: the threshold stays strictly above the highest real.
    point = operating_point([0.3, 0.3, 0.7, 0.7], [0, 0, 1, 1])
    assert 0.3 < point.threshold < 0.7 and point.method == "gap_midpoint"


def test_a_real_on_top_puts_the_threshold_above_every_score(caplog) -> None:
    with caplog.at_level("WARNING"):
        point = operating_point([0.9, 0.1, 0.5], [0, 1, 1])
    assert 0.9 < point.threshold < 1.0 and (point.val_fpr, point.val_tpr) == (0.0, 0.0)
    assert "above every score" in caplog.text


def test_operating_point_needs_both_classes_and_a_sane_target() -> None:
    with pytest.raises(ValueError, match="both classes; got 3 real and 0 fake"):
        operating_point([0.2, 0.5, 0.9], [0, 0, 0])
    with pytest.raises(ValueError, match="both classes; got 0 real and 2 fake"):
        operating_point([0.2, 0.5], [1, 1])
    with pytest.raises(ValueError, match="target_fpr"):
        operating_point([0.2, 0.5], [0, 1], target_fpr=0.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        operating_point([0.2, 1.5], [0, 1])
    point = operating_point([0.2, 0.5], [0, 1]).to_dict()
    assert json.loads(json.dumps(point)) == point
    assert set(point) >= {"threshold", "method", "target_fpr", "val_fpr", "val_tpr", "val_videos"}
