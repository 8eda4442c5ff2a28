"""The report's figures, drawn with matplotlib (Agg) and returned as PNG bytes."""
from __future__ import annotations

import io
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from models.metrics import average_precision, precision_recall_curve, roc_auc, roc_curve

_DPI = 110


def _figure(width: float = 6.0, height: float = 3.4, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=_DPI)
    return plt, fig, axes


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def counts_figure(statuses: Sequence[str], labels: Sequence[Optional[str]]) -> bytes:
    """Inputs by status, and judged inputs by verdict label."""
    plt, fig, ax = _figure()
    status_counts = Counter(statuses)
    label_counts = Counter(l for l in labels if l)
    names = [f"status: {k}" for k in sorted(status_counts)] + [f"label: {k}" for k in sorted(label_counts)]
    values = [status_counts[k] for k in sorted(status_counts)] + [label_counts[k] for k in sorted(label_counts)]
    colors = ["#7a8ca3"] * len(status_counts) + [
        "#c0392b" if k == "fake" else "#27ae60" for k in sorted(label_counts)
    ]
    bars = ax.barh(names[::-1], values[::-1], color=colors[::-1])
    ax.bar_label(bars, padding=2)
    ax.set_xlabel("inputs")
    ax.set_title("Inputs by status and verdict")
    return _png(plt, fig)


def histogram_figure(scores: Sequence[float], truth: Sequence[Optional[int]], threshold: float) -> bytes:
    """Scores of judged inputs, split by known ground truth where there is one."""
    plt, fig, ax = _figure()
    scores = np.asarray(scores, float)
    truth = list(truth)
    bins = np.linspace(0, 1, 21)
    groups = [("unlabelled", [s for s, t in zip(scores, truth) if t is None], "#7a8ca3"),
              ("real", [s for s, t in zip(scores, truth) if t == 0], "#27ae60"),
              ("fake", [s for s, t in zip(scores, truth) if t == 1], "#c0392b")]
    for name, values, color in groups:
        if values:
            ax.hist(values, bins=bins, alpha=0.6, label=f"{name} ({len(values)})", color=color)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("score (probability the input is manipulated)")
    ax.set_ylabel("inputs")
    ax.set_title("Score distribution")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def roc_figure(y_true: Sequence[int], scores: Sequence[float]) -> bytes:
    plt, fig, ax = _figure(4.2, 3.6)
    fpr, tpr, _ = roc_curve(y_true, scores)
    ax.plot(fpr, tpr, color="#2c3e50", label=f"AUC {roc_auc(y_true, scores):.3f}")
    ax.plot([0, 1], [0, 1], color="#bbb", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _png(plt, fig)


def pr_figure(y_true: Sequence[int], scores: Sequence[float]) -> bytes:
    plt, fig, ax = _figure(4.2, 3.6)
    precision, recall, _ = precision_recall_curve(y_true, scores)
    ax.plot(recall, precision, color="#8e44ad", label=f"AP {average_precision(y_true, scores):.3f}")
    ax.axhline(float(np.mean(y_true)), color="#bbb", linestyle=":", label="chance")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall")
    ax.legend(loc="lower left", fontsize=8)
    return _png(plt, fig)


def video_timeline_figure(duration_s: float, timeline: Sequence[dict], tracks: Sequence[dict], clips: Sequence[dict],
                          segments: Sequence[dict], threshold: float) -> bytes:
    """The whole video on one axis: scout frames' scores, dense clips and their tracks, the segments judged fake.

    Arguments are the verdict row's columns of the same names (``duration_s`` may be 0: the
    axis then ends at the last frame shown).
    """
    from models.segments import clock

    plt, fig, ax = _figure(7.5, 2.6)
    end = max([duration_s or 0.0] + [t["timestamp"] for t in timeline] + [c["end_s"] for c in clips])
    for k, seg in enumerate(segments):
        ax.axvspan(seg["start_s"], seg["end_s"], color="#c0392b", alpha=0.22, linewidth=0,
                   label="judged manipulated" if k == 0 else None)
        ax.text((seg["start_s"] + seg["end_s"]) / 2, 1.0, f"{clock(seg['start_s'])}-{clock(seg['end_s'])}",
                ha="center", va="bottom", fontsize=7, color="#c0392b")
    for k, clip in enumerate(clips):
        ax.axvspan(clip["start_s"], clip["end_s"], color="#2c7fb8", alpha=0.12, linewidth=0,
                   label="dense clips (faces)" if k == 0 else None)
    judged = [c for c in clips if c["score"] is not None]
    for k, clip in enumerate(judged):
        ax.hlines(clip["score"], clip["start_s"], clip["end_s"], color="#08519c", linewidth=3,
                  label="dense clip score" if k == 0 else None)
    scored = [(t["timestamp"], t["score"]) for t in timeline if t["score"] is not None]
    if scored:
        times, scores = zip(*scored)
        ax.plot(times, scores, color="#555", marker=".", markersize=3, linewidth=0.8, label="scout frames")
    faceless = [t["timestamp"] for t in timeline if t["score"] is None]
    if faceless:
        ax.plot(faceless, [0.0] * len(faceless), "x", color="#999", markersize=3, label="scout: no face judged")
    for track in tracks:
        if track["scores"]:
            ax.plot(track["timestamps"], track["scores"], color="#2c7fb8", linewidth=1)
    ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label=f"threshold {threshold:.2f}")
    ax.set_xlim(0, end if end > 0 else 1)
    ax.set_ylim(-0.02, 1.1)
    ax.xaxis.set_major_formatter(_clock_formatter(clock))
    ax.set_xlabel("time in the video")
    ax.set_ylabel("fake prob.")
    ax.legend(fontsize=6, loc="upper left", ncol=3)
    return _png(plt, fig)


def _clock_formatter(clock):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: clock(x))


def gradcam_figure(crop: np.ndarray, heat: np.ndarray, probability: float) -> bytes:
    """The face crop, the heat map over it, side by side."""
    plt, fig, (left, right) = _figure(5.0, 2.6, ncols=2)
    left.imshow(crop)
    left.set_title("face crop", fontsize=9)
    right.imshow(crop)
    right.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    right.set_title(f"Grad-CAM, fake p={probability:.2f}", fontsize=9)
    for ax in (left, right):
        ax.axis("off")
    return _png(plt, fig)


def thumbnails_png(crops: Sequence[np.ndarray], size: int = 96) -> bytes:
    """A strip of face crops as one PNG (no matplotlib needed)."""
    import cv2

    strip = np.concatenate([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops], axis=1)
    ok, data = cv2.imencode(".png", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return data.tobytes()
