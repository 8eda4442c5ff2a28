"""Calibration of a trained model pair through the scan's own code.

The training job scores its validation videos here exactly as a scan would:
crops through ``models.inference.FramePredictor`` (and the BiLSTM through
``SequencePredictor``), tracks combined by ``models.aggregation.aggregate`` with
the card's aggregator and the scan's default strategy. The verdict threshold is
then chosen on those scores (``models.metrics.operating_point``), so it means on
a scan what it meant on validation.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from models.aggregation import BILSTM, TrackFaces, aggregate
from models.card import ModelCard
from models.checkpoint import LoadedCheckpoint
from models.inference import FramePredictor, SequencePredictor
from models.labels import CLASSES, class_index  # noqa: F401  (CLASSES: until pipeline/train.py imports it from models.labels)
from models.metrics import OperatingPoint, fit_temperature, operating_point
from models.preprocess import decode_crop

logger = logging.getLogger(__name__)

def target(meta: dict) -> int:
    """The class index of a training-table row's (or video's) ``label``."""
    return class_index(meta["label"])

# How a validation video's tracks combine: the scan's default (config aggregate.strategy).
CALIBRATION_STRATEGY = "max"
_BATCH = 64


@dataclass(frozen=True)
class ValidationOutputs:
    """The frame predictor's outputs on every validation track (lists hold one array per track)."""

    items: list  # (video meta, track rows), a video's tracks together, in track-id order
    logits: list[np.ndarray]  # (T, C) raw logits
    embeddings: list[np.ndarray]  # (T, D)
    probabilities: list[np.ndarray]  # (T,) fake probabilities at the card's temperature
    frame_labels: np.ndarray  # (sum T,) 1 for crops of fake videos


def calibrate_temperature(
    card: ModelCard, frame_model: torch.nn.Module, items: list, device: torch.device
) -> tuple[ModelCard, FramePredictor, ValidationOutputs]:
    """Fit the frame model's temperature on the validation crops' logits.

    Returns:
        The card with its temperature, the scan's frame predictor for it, and the
        validation outputs with probabilities at that temperature.
    """
    logits, embeddings = frame_outputs(frame_predictor(card, frame_model, device), items)
    labels = np.concatenate([[target(meta)] * len(track) for meta, track in items])
    card = dataclasses.replace(card, temperature=float(fit_temperature(np.concatenate(logits), labels)))
    frames = frame_predictor(card, frame_model, device)
    probabilities = [frames.fake_probabilities(z) for z in logits]
    return card, frames, ValidationOutputs(items, logits, embeddings, probabilities, labels)


def calibrate_threshold(
    checkpoint: LoadedCheckpoint, val: ValidationOutputs, target_fpr: float
) -> tuple[ModelCard, OperatingPoint, np.ndarray, np.ndarray]:
    """Score the validation videos as a scan does and set the card's threshold for ``target_fpr``.

    Returns:
        The card with ``threshold`` and ``operating_point`` set, the operating point,
        and the validation videos' scores and labels (1 fake), in video-id order.
    """
    scores, labels = validation_video_scores(checkpoint, val.items, val.probabilities, val.embeddings)
    point = operating_point(scores, labels, target_fpr)
    # A still image is judged on its faces' frame probabilities, not on the video
    # aggregator's score: its own operating point, from every validation face as a still.
    image_point = operating_point(np.concatenate(val.probabilities), val.frame_labels, target_fpr)
    card = checkpoint.card
    recorded = {**point.to_dict(), "aggregator": card.aggregator, "strategy": CALIBRATION_STRATEGY,
                "image": {**image_point.to_dict(), "unit": "validation face crops, each as a still"}}
    card = dataclasses.replace(card, threshold=point.threshold, image_threshold=image_point.threshold,
                               operating_point=recorded)
    logger.info("image operating point: threshold %.4g (%s), validation FPR %.3f, TPR %.3f over %d faces",
                image_point.threshold, image_point.method, image_point.val_fpr, image_point.val_tpr,
                image_point.val_videos)
    logger.info("operating point: threshold %.4g (%s), validation FPR %.3f, TPR %.3f over %d videos",
                point.threshold, point.method, point.val_fpr, point.val_tpr, point.val_videos)
    return card, point, scores, labels


def frame_predictor(card: ModelCard, frame_model: torch.nn.Module, device: torch.device) -> FramePredictor:
    """The scan's frame predictor over the trained model: fp32 and untraced, so calibration is deterministic."""
    checkpoint = LoadedCheckpoint(card=card, frame_model=frame_model, sequence_model=None, sha256=None,
                                  source="training")
    return FramePredictor(checkpoint, device, optimize=False, precision="fp32")


def frame_outputs(predictor: FramePredictor, items: list) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per track: the frame model's raw logits ``(T, C)`` and embeddings ``(T, D)`` of all its crops."""
    rows = [r for _, track in items for r in track]
    logits, embeddings = [], []
    for start in range(0, len(rows), _BATCH):
        batch = np.stack([decode_crop(r["crop_png"]) for r in rows[start : start + _BATCH]])
        batch_logits, batch_embeddings = predictor.outputs(batch)
        logits.append(batch_logits)
        embeddings.append(batch_embeddings)
    logits_all, embeddings_all = np.concatenate(logits), np.concatenate(embeddings)
    bounds = np.cumsum([0] + [len(track) for _, track in items])
    return ([logits_all[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
            [embeddings_all[a:b] for a, b in zip(bounds[:-1], bounds[1:])])


def validation_video_scores(
    checkpoint: LoadedCheckpoint,
    items: list,
    probabilities: list[np.ndarray],
    embeddings: list[np.ndarray],
    strategy: str = CALIBRATION_STRATEGY,
) -> tuple[np.ndarray, np.ndarray]:
    """Each video's score as a scan computes it, and its label (1 fake), videos in id order.

    Args:
        checkpoint: The trained models and their card (its ``aggregator`` decides).
        items: ``(video meta, track rows)`` of every track, a video's tracks together.
        probabilities: Per track, the frame predictor's fake probability of each crop.
        embeddings: Per track, the frame predictor's embedding of each crop (``bilstm`` only).
        strategy: How a video's track scores combine (the scan's ``aggregate.strategy``).
    """
    card = checkpoint.card
    sequence = SequencePredictor(checkpoint, torch.device("cpu")) if card.aggregator == BILSTM else None
    by_video: dict[str, list[int]] = defaultdict(list)
    for index, (meta, _) in enumerate(items):
        by_video[meta["video_id"]].append(index)
    scores, labels = [], []
    for video_id in sorted(by_video):
        members = by_video[video_id]
        tracks = [
            TrackFaces(probabilities[i], np.array([r["box"] for r in items[i][1]], np.float64),
                       np.array([r["frame_index"] for r in items[i][1]], np.int64))
            for i in members
        ]
        sequence_scores = sequence([embeddings[i] for i in members]) if sequence is not None else None
        scores.append(aggregate(card.aggregator, tracks, strategy, sequence_scores).score)
        labels.append(target(items[members[0]][0]))
    return np.array(scores, np.float64), np.array(labels, np.int64)
