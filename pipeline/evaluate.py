"""The evaluation job: how good is a checkpoint on labelled data?

The data is scored by the scan job itself (same decoding, faces, model and
aggregation), so the figures describe what a scan would report. Video-level
metrics use each input's verdict score; frame-level metrics use every face's
frame-model score with its video's label.
"""
from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Optional, Sequence

import fsspec
import numpy as np

from models.metrics import binary_report, roc_auc
from pipeline.config import ScanConfig
from pipeline.datasets import LabelledVideo, load_dataset
from pipeline.inputs import media_type_of
from pipeline.scan import plan_scan, run_scan
from transforms.parquet_sink import read_table
from transforms.elements import MediaInput

logger = logging.getLogger(__name__)


def select_split(videos: Sequence[LabelledVideo], split: Optional[str]) -> list[LabelledVideo]:
    if not split or split == "all":
        return list(videos)
    chosen = [v for v in videos if v.split == split]
    if not chosen:
        raise ValueError(f"the data has no '{split}' split (splits: {sorted({v.split for v in videos})})")
    return chosen


def compute_metrics(videos: Sequence[LabelledVideo], rows: Sequence[dict]) -> dict:
    """Frame- and video-level metrics of verdict ``rows`` against the videos' labels."""
    truth = {v.uri: v for v in videos}
    threshold = rows[0]["threshold"] if rows else 0.5
    y, s, frame_y, frame_s = [], [], [], []
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
        if label:
            per_manipulation[video.manipulation or "unknown"].append(row["score"])
        for track in row["tracks"]:
            frame_y += [label] * len(track["scores"])
            frame_s += list(track["scores"])
    y_arr, s_arr = np.array(y), np.array(s, dtype=np.float64)
    video = binary_report(y_arr, s_arr, threshold)
    frame = binary_report(np.array(frame_y), np.array(frame_s, dtype=np.float64), 0.5)
    reals = s_arr[y_arr == 0]
    breakdown = {}
    for name, scores in sorted(per_manipulation.items()):
        scores_arr = np.array(scores)
        auc = None
        if len(reals) and len(scores_arr):
            auc = float(roc_auc(np.r_[np.zeros(len(reals)), np.ones(len(scores_arr))], np.r_[reals, scores_arr]))
        breakdown[name] = {"n": len(scores), "auc_vs_real": auc, "recall": float(np.mean(scores_arr >= threshold))}
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
        "confusion": video["confusion"],
        "videos": len(rows),
        "videos_scored": len(y),
        "frames_scored": len(frame_y),
        "unscored_by_status": dict(unscored),
        "per_manipulation": breakdown,
        "video": video,
        "frame": frame,
    }


def format_table(metrics: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"{'':<10}{'AUC':>8}{'AP':>8}{'acc':>8}{'logloss':>9}{'EER':>8}",
        f"{'video':<10}{f(metrics['video_auc']):>8}{f(metrics['video_ap']):>8}{f(metrics['video_accuracy']):>8}"
        f"{f(metrics['video_log_loss']):>9}{f(metrics['eer']):>8}",
        f"{'frame':<10}{f(metrics['frame_auc']):>8}{f(metrics['frame_ap']):>8}{f(metrics['frame_accuracy']):>8}",
        f"videos scored {metrics['videos_scored']}/{metrics['videos']}, threshold {metrics['threshold']:.3f}, "
        f"confusion [[tn, fp], [fn, tp]] = {metrics['confusion']}",
    ]
    for name, m in metrics["per_manipulation"].items():
        lines.append(f"  {name:<16} n={m['n']:<4} AUC vs real {f(m['auc_vs_real'])}  recall {f(m['recall'])}")
    return "\n".join(lines)


def run_evaluate(
    checkpoint: Optional[str],
    data: str,
    output: str,
    config: ScanConfig,
    split: Optional[str] = "test",
    work_dir: Optional[str] = None,
    options=None,
) -> dict:
    """Scan ``data``'s ``split`` with ``checkpoint`` and write the metrics JSON to ``output``."""
    videos = select_split(load_dataset(data), split)
    if checkpoint:
        config.model.checkpoint = checkpoint
    work_dir = work_dir or os.path.splitext(output)[0] + "_scan"
    inputs = [MediaInput(v.uri, media_type_of(v.uri, config.inputs), v.label) for v in videos]
    plan = plan_scan(inputs, work_dir, config)
    logger.info("evaluating %s on %d videos (split %s); verdicts in %s", plan.checkpoint, len(inputs), split, work_dir)
    run_scan(plan, options)
    rows = read_table(plan.verdicts_dir).to_pylist()
    metrics = compute_metrics(videos, rows)
    metrics.update({"checkpoint": plan.checkpoint, "checkpoint_sha256": plan.run.checkpoint_sha256,
                    "model_name": plan.run.model_name, "data": data, "split": split})
    with fsspec.open(output, "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
