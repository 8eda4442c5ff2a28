"""Binary detection metrics and probability calibration, in plain numpy.

Conventions: label 1 is fake (positive), 0 real; a score is "fake-ness" and a
sample counts as positive when ``score >= threshold``. Curves keep every
distinct score as a threshold (no point dropping). Metrics that need both
classes (AUC, ROC, EER, the operating point) raise ``ValueError`` when one is
missing; :func:`binary_report` turns those into ``None``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

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


def binary_report(y_true, y_score, threshold: float | np.ndarray = 0.5) -> dict:
    """All metrics of fake probabilities ``y_score`` as a JSON-able dict.

    ``threshold`` is one number, or one per sample (verdicts of stills and videos
    are labelled with different thresholds). Keys: ``auc, ap, accuracy, log_loss,
    eer, eer_threshold, threshold`` (a number, or the sorted distinct ones),
    ``confusion`` (nested list ``[[tn, fp], [fn, tp]]``), ``n, n_pos, n_neg``.
    Metrics undefined for this data (one class only) are ``None``.
    """
    y, s = _check(y_true, y_score)
    _check_probabilities(s)
    equal_error = _or_none(eer, y, s) or (None, None)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), s.shape)
    pred = (s >= thresholds).astype(np.int64)
    distinct = sorted({float(t) for t in np.unique(thresholds)}) if s.size else [float(np.asarray(threshold).flat[0])]
    return {
        "auc": _json_float(_or_none(roc_auc, y, s)),
        "ap": _json_float(_or_none(average_precision, y, s)),
        "accuracy": _json_float(float(np.mean(pred == y)) if y.size else float("nan")),
        "log_loss": _json_float(log_loss(y, s)),
        "eer": _json_float(equal_error[0]),
        "eer_threshold": _json_float(equal_error[1]),
        "threshold": _json_float(distinct[0]) if len(distinct) == 1 else [_json_float(t) for t in distinct],
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


# Scores are clipped into [_LOGIT_EPS, 1 - _LOGIT_EPS] before taking logits, so a
# saturated probability (float32 softmax gives exactly 1.0 past a logit gap of
# about 17) counts as logit +-13.8 instead of infinity.
_LOGIT_EPS = 1e-6
GAP_MIDPOINT = "gap_midpoint"  # validation separates the classes: the middle of the gap
TARGET_FPR = "target_fpr"  # classes overlap: the best cut within the false-positive budget


@dataclass(frozen=True)
class OperatingPoint:
    """A verdict threshold and what it gave on the validation scores it was chosen on.

    Attributes:
        threshold: Flag as fake when ``score >= threshold``.
        method: ``"gap_midpoint"`` (validation separates the classes) or ``"target_fpr"``.
        target_fpr: The false-positive rate the threshold was chosen for.
        val_fpr: Share of validation reals at or above the threshold.
        val_tpr: Share of validation fakes at or above the threshold.
        val_videos: Validation scores (videos) used.
        val_real: Reals among them.
        val_fake: Fakes among them.
        score_below: The highest validation score under the threshold.
        score_above: The lowest validation score at or above it (1.0 when none is).
    """

    threshold: float
    method: str
    target_fpr: float
    val_fpr: float
    val_tpr: float
    val_videos: int
    val_real: int
    val_fake: int
    score_below: float
    score_above: float

    def to_dict(self) -> dict:
        """The operating point as plain JSON-able data (what the model card stores)."""
        return asdict(self)


def _logit(p: float) -> float:
    p = min(max(p, _LOGIT_EPS), 1.0 - _LOGIT_EPS)
    return math.log(p) - math.log1p(-p)


def _between(low: float, high: float) -> float:
    """A threshold in ``(low, high]``: the middle of the two scores in logit space."""
    z = (_logit(low) + _logit(high)) / 2.0
    threshold = 1.0 / (1.0 + math.exp(-z))
    if not low < threshold <= high:  # both ends clipped to the same logit, or rounding
        threshold = (low + high) / 2.0
    return threshold if low < threshold else high


def operating_point(scores, labels, target_fpr: float = 0.01) -> OperatingPoint:
    """The verdict threshold for a target false-positive rate on validation videos.

    The threshold always lies between two distinct validation scores, never on
    one, at the middle of the two in logit space:
    ``logit(t) = (logit(below) + logit(above)) / 2``.

    - When validation separates the classes (every real below every fake), it is
      the middle of that gap: ``below`` is the highest real, ``above`` the lowest
      fake (method ``"gap_midpoint"``). A threshold at the gap's edge would flag
      the first real that scores a little higher than validation's highest.
    - Otherwise (method ``"target_fpr"``) it is the cut with the highest
      validation TPR among those whose FPR is at most ``target_fpr``; of cuts
      with that TPR, the one with the fewest false positives: ``above`` is the
      lowest fake score it flags, ``below`` the next lower score. With fewer than
      ``1 / target_fpr`` reals no false positive is allowed, so the cut is just
      above the highest real. When even the highest score is a real's, nothing
      can be flagged within the budget and the threshold goes above every score.

    Args:
        scores: Fake probabilities of the validation videos, in [0, 1].
        labels: 1 for fake, 0 for real.
        target_fpr: Largest acceptable share of validation reals flagged, in (0, 1).

    Raises:
        ValueError: Without both classes, with scores outside [0, 1], or a bad ``target_fpr``.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    y, s = _check(labels, scores, "scores")
    _check_probabilities(s)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            "an operating point needs validation videos of both classes; "
            f"got {n_neg} real and {n_pos} fake"
        )
    reals, fakes = s[y == 0], s[y == 1]
    separable = bool(reals.max() < fakes.min())
    if separable:
        below, above = float(reals.max()), float(fakes.min())
    else:
        tps, fps, cuts = _counts(y, s)  # cut i flags every score >= cuts[i]; cuts decrease
        allowed = fps <= target_fpr * n_neg + 1e-9
        best = int(tps[allowed].max()) if allowed.any() else 0
        if best == 0:  # nothing can be flagged within the budget
            below, above = float(s.max()), 1.0
            logger.warning("no threshold flags any validation fake at FPR <= %g: the highest score "
                           "(%.4g) is a real's; the threshold goes above every score", target_fpr, below)
        else:
            i = int(np.flatnonzero(allowed & (tps == best))[0])
            above = float(cuts[i])
            below = float(cuts[i + 1]) if i + 1 < cuts.size else 0.0
    # A verdict threshold lies in (0, 1): 1.0 itself only when a real scores exactly 1.0.
    threshold = min(_between(below, above), math.nextafter(1.0, 0.0))
    flagged = s >= threshold
    return OperatingPoint(
        threshold=threshold,
        method=GAP_MIDPOINT if separable else TARGET_FPR,
        target_fpr=float(target_fpr),
        val_fpr=float(flagged[y == 0].mean()),
        val_tpr=float(flagged[y == 1].mean()),
        val_videos=int(y.size),
        val_real=n_neg,
        val_fake=n_pos,
        score_below=below,
        score_above=above,
    )
