"""The evaluation job: how good is a checkpoint on labelled data?

The data is scored by the scan job itself (same decoding, faces, model and
aggregation), so the figures describe what a scan would report. Video-level
metrics use each input's verdict score; frame-level metrics use every face's
frame-model score with its video's label.

Which videos are scored: data without splits is scored whole, unless a split is
asked for; then the splits are hashed with the seed and fractions ``extract``
uses (``pipeline.splits.DEFAULT_SPLIT_SEED``), so ``--split test`` is the set
the training never saw. Data with splits is scored on ``test`` unless told
otherwise. The table and the JSON say which split and how many videos.
"""
from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Optional, Sequence

import fsspec
import numpy as np

from models.metrics import binary_report, roc_auc
from pipeline.config import ScanConfig
from pipeline.datasets import LabelledVideo, load_dataset
from transforms.manifests import InputError
from pipeline.scan import plan_scan, run_scan
from pipeline.splits import DEFAULT_SPLIT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SPLITS, TEST
from transforms.tables import read_table
from transforms.elements import MediaInput

logger = logging.getLogger(__name__)


ALL = "all"
# How the scored videos were chosen (the metrics' "split_source").
FROM_DATA = "data"  # a split the data names (a split column, official lists)
SEEDED = "seeded"  # a split of data that names none: hashed with the seed, as extract does
NO_SPLITS = "none"  # the data names no splits and none was asked for: all of it
ASKED_ALL = "all"  # all of it, as asked


@dataclass(frozen=True)
class Selection:
    """The videos an evaluation scores, and how they were chosen."""

    videos: list[LabelledVideo]
    split: str  # "train", "val", "test" or "all"
    source: str  # FROM_DATA, SEEDED, NO_SPLITS or ASKED_ALL
    total: int  # videos in the data
    seed: Optional[int] = None  # SEEDED: the seed of the hash

    def describe(self) -> str:
        """One line for the table, e.g. ``split test: 12 of 80 videos (splits from the data)``."""
        n = len(self.videos)
        if self.source == NO_SPLITS:
            return f"all {n} videos (the data has no split column)"
        if self.source == ASKED_ALL:
            return f"all {n} videos"
        if self.source == SEEDED:
            return (f"split {self.split}: {n} of {self.total} videos (the data has no split column: assigned with "
                    f"seed {self.seed}, val {DEFAULT_VAL_FRACTION:g}, test {DEFAULT_TEST_FRACTION:g}, "
                    "as extract assigns them)")
        return f"split {self.split}: {n} of {self.total} videos (splits from the data)"


def select_split(
    videos: Sequence[LabelledVideo], split: Optional[str] = None, seed: int = DEFAULT_SPLIT_SEED
) -> Selection:
    """The videos to score.

    Args:
        videos: The data, as ``load_dataset`` read it with ``seed``.
        split: ``train``, ``val``, ``test`` or ``all``; None: ``test`` where the
            data names splits, else all of it.
        seed: The seed ``videos``' hashed splits were drawn with (for the record).

    Raises:
        InputError: For an unknown split name, or a split without videos.
    """
    videos = list(videos)
    has_splits = any(v.split_given for v in videos)
    if split is None:
        if not has_splits:
            logger.info("the data has no split column: scoring all %d videos", len(videos))
            return Selection(videos, ALL, NO_SPLITS, len(videos))
        split = TEST
    if split == ALL:
        return Selection(videos, ALL, ASKED_ALL, len(videos))
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r} (valid: {', '.join(SPLITS)}, {ALL})")
    chosen = [v for v in videos if v.split == split]
    if not chosen:
        raise InputError(f"the data has no '{split}' videos (splits: {', '.join(sorted({v.split for v in videos}))})")
    if has_splits:
        return Selection(chosen, split, FROM_DATA, len(videos))
    logger.info("the data has no split column: split '%s' is the %d videos seed %d assigns to it, as extract does",
                split, len(chosen), seed)
    return Selection(chosen, split, SEEDED, len(videos), seed)


def compute_metrics(videos: Sequence[LabelledVideo], rows: Sequence[dict]) -> dict:
    """Frame- and video-level metrics of verdict ``rows`` against the videos' labels."""
    truth = {v.uri: v for v in videos}
    # Each verdict carries the threshold it was labelled with: stills have their own.
    by_kind = {row["media_type"]: row["threshold"] for row in rows if row["score"] is not None}
    threshold = by_kind.get("video", by_kind.get("image", rows[0]["threshold"] if rows else 0.5))
    y, s, t, frame_y, frame_s = [], [], [], [], []
    unscored: dict[str, int] = defaultdict(int)
    per_manipulation: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        video = truth[row["uri"]]
        if row["score"] is None:
            unscored[row["status"]] += 1
            continue
        label = int(video.label == "fake")
        y.append(label)
        s.append(row["score"])
        t.append(row["threshold"])
        if label:
            per_manipulation[video.manipulation or "unknown"].append((row["score"], row["threshold"]))
        for track in row["tracks"]:
            frame_y += [label] * len(track["scores"])
            frame_s += list(track["scores"])
    y_arr, s_arr = np.array(y), np.array(s, dtype=np.float64)
    video = binary_report(y_arr, s_arr, np.array(t, dtype=np.float64) if t else threshold)
    frame = binary_report(np.array(frame_y), np.array(frame_s, dtype=np.float64), 0.5)
    reals = s_arr[y_arr == 0]
    breakdown = {}
    for name, pairs in sorted(per_manipulation.items()):
        scores_arr, thresholds_arr = np.array(pairs, dtype=np.float64).T
        auc = None
        if len(reals) and len(scores_arr):
            auc = float(roc_auc(np.r_[np.zeros(len(reals)), np.ones(len(scores_arr))], np.r_[reals, scores_arr]))
        breakdown[name] = {"n": len(pairs), "auc_vs_real": auc, "recall": float(np.mean(scores_arr >= thresholds_arr))}
    return {
        "video_auc": video["auc"],
        "video_ap": video["ap"],
        "video_accuracy": video["accuracy"],
        "video_log_loss": video["log_loss"],
        "eer": video["eer"],
        "eer_threshold": video["eer_threshold"],
        "frame_auc": frame["auc"],
        "frame_ap": frame["ap"],
        "frame_accuracy": frame["accuracy"],
        "threshold": threshold,
        "thresholds_by_media_type": by_kind,
        "confusion": video["confusion"],
        "videos": len(rows),
        "videos_scored": len(y),
        "frames_scored": len(frame_y),
        "unscored_by_status": dict(unscored),
        "per_manipulation": breakdown,
        "video": video,
        "frame": frame,
    }


def _thresholds(metrics: dict) -> str:
    """``0.689``, or ``0.689 (images 0.950)`` when stills were labelled with their own."""
    by_kind = metrics.get("thresholds_by_media_type") or {}
    text = f"{metrics['threshold']:.3f}"
    if "image" in by_kind and by_kind["image"] != metrics["threshold"]:
        text += f" (images {by_kind['image']:.3f})"
    return text


def format_table(metrics: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"data: {metrics['selection']}" if metrics.get("selection") else "",
        f"{'':<10}{'AUC':>8}{'AP':>8}{'acc':>8}{'logloss':>9}{'EER':>8}",
        f"{'video':<10}{f(metrics['video_auc']):>8}{f(metrics['video_ap']):>8}{f(metrics['video_accuracy']):>8}"
        f"{f(metrics['video_log_loss']):>9}{f(metrics['eer']):>8}",
        f"{'frame':<10}{f(metrics['frame_auc']):>8}{f(metrics['frame_ap']):>8}{f(metrics['frame_accuracy']):>8}",
        f"videos scored {metrics['videos_scored']}/{metrics['videos']}, threshold {_thresholds(metrics)}, "
        f"confusion [[tn, fp], [fn, tp]] = {metrics['confusion']}",
    ]
    for name, m in metrics["per_manipulation"].items():
        lines.append(f"  {name:<16} n={m['n']:<4} AUC vs real {f(m['auc_vs_real'])}  recall {f(m['recall'])}")
    return "\n".join(line for line in lines if line)


def run_evaluate(
    checkpoint: Optional[str],
    data: str,
    output: str,
    config: ScanConfig,
    split: Optional[str] = None,
    work_dir: Optional[str] = None,
    options=None,
    seed: int = DEFAULT_SPLIT_SEED,
) -> dict:
    """Scan ``data``'s ``split`` with ``checkpoint`` and write the metrics JSON to ``output``.

    ``split`` None scores ``test`` where the data names splits and all of it where
    it names none; ``seed`` must be the one ``extract`` was given (its default too).
    """
    selection = select_split(load_dataset(data, seed=seed), split, seed)
    videos = selection.videos
    if checkpoint:
        config.model.checkpoint = checkpoint
    work_dir = work_dir or os.path.splitext(output)[0] + "_scan"
    inputs = [MediaInput(v.uri, config.inputs.media_type(v.uri)) for v in videos]
    plan = plan_scan(inputs, work_dir, config)
    logger.info("evaluating %s on %s; verdicts in %s", plan.checkpoint, selection.describe(), work_dir)
    run_scan(plan, options)
    rows = read_table(plan.verdicts_dir).to_pylist()
    metrics = compute_metrics(videos, rows)
    metrics.update({"checkpoint": plan.checkpoint, "checkpoint_sha256": plan.run.checkpoint_sha256,
                    "model_name": plan.run.model_name, "data": data, "split": selection.split,
                    "split_source": selection.source, "split_seed": selection.seed,
                    "videos_in_data": selection.total, "selection": selection.describe()})
    with fsspec.open(output, "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
