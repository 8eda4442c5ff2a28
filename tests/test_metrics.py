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
    calibrated_threshold,
    confusion_matrix,
    eer,
    fit_temperature,
    log_loss,
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
    with pytest.raises(ValueError, match="one class"):
        calibrated_threshold([0.2, 0.5, 0.9], [0, 0, 0])
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


def test_calibrated_threshold_maximises_balanced_accuracy() -> None:
    assert calibrated_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.5)
    probs = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    threshold = calibrated_threshold(probs, [0, 0, 0, 1, 1, 1])
    assert threshold == pytest.approx(0.175)
    assert accuracy([0, 0, 0, 1, 1, 1], probs, threshold) == 1.0
    # Two cuts tie (J = 1/2 at 0.875 and 0.275): the one nearer 0.5 wins.
    assert calibrated_threshold([0.1, 0.45, 0.8, 0.95], [0, 1, 0, 1]) == pytest.approx(0.275)
    # Imbalanced classes: balanced accuracy, not accuracy, picks the cut.
    rng = np.random.default_rng(2)
    y = (rng.random(2000) < 0.1).astype(int)
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.1), 0, 1)
    threshold = calibrated_threshold(p, y)
    assert 0.0 < threshold < 1.0 and abs(threshold - 0.45) < 0.05
