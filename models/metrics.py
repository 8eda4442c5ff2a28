"""Binary detection metrics and probability calibration, in plain numpy.

Conventions: label 1 is fake (positive), 0 real; a score is "fake-ness" and a
sample counts as positive when ``score >= threshold``. Curves keep every
distinct score as a threshold (no point dropping). Metrics that need both
classes (AUC, ROC, EER, balanced-accuracy threshold) raise ``ValueError`` when
one is missing; :func:`binary_report` turns those into ``None``.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

logger = logging.getLogger(__name__)


def _check(y_true, y_score, name: str = "y_score") -> tuple[np.ndarray, np.ndarray]:
    """Validate 1-D binary labels and finite scores of the same, non-zero length."""
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.size == 0 or y.size != s.size:
        raise ValueError(f"need equally long, non-empty y_true and {name}; "
                         f"got {y.size} and {s.size}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"y_true must hold only 0 and 1, got values {np.unique(y)[:5]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite")
    return y.astype(np.int64), s


def _check_probabilities(p: np.ndarray) -> None:
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"probabilities must be in [0, 1], got range [{p.min()}, {p.max()}]")


def _counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct score, from the highest down, and the scores."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each tie group
    tps = np.cumsum(y)[last]
    return tps, last + 1 - tps, s[last]


def _need_both(y: np.ndarray, what: str) -> tuple[int, int]:
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"{what} is undefined with only one class present "
                         f"({n_pos} positives, {n_neg} negatives)")
    return n_pos, n_neg


def roc_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: ``(fpr, tpr, thresholds)``, thresholds decreasing.

    The first point is ``(0, 0)`` at threshold ``+inf``; then one point per
    distinct score. Raises ``ValueError`` unless both classes are present.
    """
    y, s = _check(y_true, y_score)
    n_pos, n_neg = _need_both(y, "the ROC curve")
    tps, fps, thresholds = _counts(y, s)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve (trapezoid rule = Mann-Whitney U with ties counted 1/2).

    Raises:
        ValueError: When only one class is present.
    """
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return float(np.trapezoid(tpr, fpr))


def precision_recall_curve(y_true, y_score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve as scikit-learn (>= 1.1) returns it.

    Returns ``(precision, recall, thresholds)``.

    Thresholds are the distinct scores, increasing; the first point predicts
    everything positive (precision = positive rate, recall 1) and the extra
    last point ``(precision 1, recall 0)`` has no threshold. Raises
    ``ValueError`` without positives.
    """
    y, s = _check(y_true, y_score)
    if not y.any():
        raise ValueError("precision-recall is undefined without positive samples")
    tps, fps, thresholds = _counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(y_true, y_score) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` (step-wise, no interpolation)."""
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def eer(y_true, y_score) -> tuple[float, float]:
    """Equal error rate and its threshold: where FPR = FNR on the ROC curve.

    Between the two ROC points that bracket the crossing, both the rate and
    the threshold are interpolated linearly; when the crossing follows the
    ``+inf`` point the threshold is the first finite one.

    Returns:
        ``(eer, threshold)``. Raises ``ValueError`` unless both classes are present.
    """
    fpr, tpr, thresholds = roc_curve(y_true, y_score)
    gap = (1.0 - tpr) - fpr  # non-increasing: +1 at the start, -1 at the end
    i = int(np.argmax(gap <= 0.0))
    if gap[i] == 0.0:
        return float(fpr[i]), float(thresholds[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    if np.isinf(thresholds[i - 1]):
        return float(rate), float(thresholds[i])
    return float(rate), float(thresholds[i - 1] + t * (thresholds[i] - thresholds[i - 1]))


def log_loss(y_true, p, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of fake probabilities ``p``, clipped to ``[eps, 1 - eps]``."""
    y, p = _check(y_true, p, "p")
    _check_probabilities(p)
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def accuracy(y_true, p, threshold: float = 0.5) -> float:
    """Fraction of samples whose prediction ``p >= threshold`` matches the label."""
    y, p = _check(y_true, p, "p")
    return float(np.mean((p >= threshold) == y))


def confusion_matrix(y_true, y_pred) -> np.ndarray:
    """2x2 int64 counts ``[[tn, fp], [fn, tp]]`` of 0/1 predictions."""
    y, pred = _check(y_true, y_pred, "y_pred")
    if not np.all((pred == 0) | (pred == 1)):
        raise ValueError("y_pred must hold only 0 and 1; threshold scores first")
    counts = np.bincount(2 * y + pred.astype(np.int64), minlength=4)
    return counts.reshape(2, 2)


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _or_none(fn, *args):
    try:
        return fn(*args)
    except ValueError as error:
        logger.debug("metric %s undefined: %s", fn.__name__, error)
        return None


def binary_report(y_true, y_score, threshold: float = 0.5) -> dict:
    """All metrics of fake probabilities ``y_score`` as a JSON-able dict.

    Keys: ``auc, ap, accuracy, log_loss, eer, eer_threshold, threshold,
    confusion`` (nested list ``[[tn, fp], [fn, tp]]``), ``n, n_pos, n_neg``.
    Metrics undefined for this data (one class only) are ``None``.
    """
    y, s = _check(y_true, y_score)
    _check_probabilities(s)
    equal_error = _or_none(eer, y, s) or (None, None)
    pred = (s >= threshold).astype(np.int64)
    return {
        "auc": _json_float(_or_none(roc_auc, y, s)),
        "ap": _json_float(_or_none(average_precision, y, s)),
        "accuracy": _json_float(accuracy(y, s, threshold)),
        "log_loss": _json_float(log_loss(y, s)),
        "eer": _json_float(equal_error[0]),
        "eer_threshold": _json_float(equal_error[1]),
        "threshold": _json_float(float(threshold)),
        "confusion": confusion_matrix(y, pred).tolist(),
        "n": int(y.size),
        "n_pos": int(y.sum()),
        "n_neg": int(y.size - y.sum()),
    }


def _nll(scaled: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of labels under softmax (2-D) or sigmoid (1-D) logits."""
    if scaled.ndim == 1:
        return float(np.mean(np.logaddexp(0.0, scaled) - labels * scaled))
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]))


def fit_temperature(
    logits, labels, *, bounds: tuple[float, float] = (0.05, 20.0), tol: float = 1e-4
) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising NLL of softmax(logits / T).

    Args:
        logits: ``[N, C]`` class logits, or ``[N]`` fake logits (sigmoid model).
        labels: ``[N]`` class ids in ``[0, C)`` (0/1 for fake logits).
        bounds: Search interval for ``T``; the search runs over ``log T``.
        tol: Absolute tolerance on ``log T``.

    Returns:
        The fitted temperature; divide logits by it before softmax/sigmoid.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).reshape(-1).astype(np.int64)
    if z.ndim not in (1, 2) or z.shape[0] != y.size or y.size == 0:
        raise ValueError(f"need [N, C] or [N] logits and N labels, got {z.shape} and {y.size}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite")
    classes = 2 if z.ndim == 1 else z.shape[1]
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must be in [0, {classes}), got range [{y.min()}, {y.max()}]")
    low, high = bounds
    if not 0.0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    result = minimize_scalar(lambda log_t: _nll(z / math.exp(log_t), y),
                             bounds=(math.log(low), math.log(high)), method="bounded",
                             options={"xatol": tol})
    temperature = float(math.exp(result.x))
    if min(abs(result.x - math.log(low)), abs(result.x - math.log(high))) < 10 * tol:
        logger.warning("fitted temperature %.4g is at the search bound %s", temperature, bounds)
    return temperature


def calibrated_threshold(probs, labels) -> float:
    """Decision threshold maximising balanced accuracy (Youden's J = TPR - FPR) on validation data.

    The threshold is the midpoint between the best cut's score and the next
    lower distinct score, so it sits between the two classes rather than on a
    sample; among equally good cuts the one closest to 0.5 wins. The result is
    clipped into ``[1e-6, 1 - 1e-6]``.

    Raises:
        ValueError: Without both classes, or with probabilities outside [0, 1].
    """
    y, p = _check(labels, probs, "probs")
    _check_probabilities(p)
    fpr, tpr, thresholds = roc_curve(y, p)
    scores = thresholds[1:]  # each finite cut: predict fake when p >= score
    lower = np.r_[scores[1:], 0.0]  # next lower score, 0 below the last
    cuts = (scores + lower) / 2.0
    gain = (tpr - fpr)[1:]
    best = np.flatnonzero(gain >= gain.max() - 1e-12)
    choice = best[np.argmin(np.abs(cuts[best] - 0.5))]
    return float(np.clip(cuts[choice], 1e-6, 1.0 - 1e-6))
