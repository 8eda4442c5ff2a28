"""Calibration of a trained model pair through the scan's own code.

The training job scores its validation videos here exactly as a scan would:
crops through ``models.inference.FramePredictor`` (and the BiLSTM through
``SequencePredictor``), tracks combined by ``models.aggregation.aggregate`` with
the card's aggregator and the scan's default strategy. The verdict threshold is
then chosen on those scores (``models.metrics.operating_point``), so it means on
a scan what it meant on validation.

The validation crops stream from the face table (``pipeline.train_stream``):
per crop, training keeps only the logits, box and frame in memory (~30 bytes);
the embeddings the BiLSTM needs go to a file on local disk (:class:`TrackOutputs`),
and a video's tracks are read back together when it is scored.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from models.aggregation import BILSTM, TrackFaces, aggregate
from models.card import ModelCard
from models.checkpoint import LoadedCheckpoint
from models.inference import FramePredictor, SequencePredictor
from models.labels import FAKE_INDEX
from models.metrics import OperatingPoint, fit_temperature, operating_point
from pipeline.train_data import FaceIndex, track_crops
from pipeline.train_stream import EmbeddingStore, TrackEmbeddings, plain_stream, stream_loader

logger = logging.getLogger(__name__)

# How a validation video's tracks combine: the scan's default (config aggregate.strategy).
CALIBRATION_STRATEGY = "max"
_BATCH = 64


@dataclass
class TrackOutputs:
    """The frame predictor's outputs on whole tracks: per crop in memory, embeddings on disk.

    Track ``i`` holds the crops ``bounds[i]:bounds[i + 1]`` of the per-crop arrays.
    With self-blended copies the copies follow the tracks: their rows exist only
    in ``embeddings`` (and ``labels``), not in ``logits``, ``frames`` or ``boxes``.
    """

    tracks: np.ndarray  # (T,) track numbers in the face index
    videos: list[str]  # (T,) video ids; a video's tracks are neighbours, videos in id order
    labels: np.ndarray  # (T,) class index
    bounds: np.ndarray  # (T + 1,)
    frames: np.ndarray  # (M,) frame indices
    boxes: Optional[np.ndarray]  # (M, 4) detector boxes, when read
    logits: np.ndarray  # (M, C) raw logits
    embeddings: TrackEmbeddings  # (T_i, D) per track, read from disk

    def close(self) -> None:
        """Remove the embeddings' file."""
        self.embeddings.store.close()


@dataclass(frozen=True)
class ValidationOutputs:
    """The frame predictor's outputs on every validation track, at the card's temperature."""

    outputs: TrackOutputs  # a video's tracks together, in track-id order
    probabilities: np.ndarray  # (M,) fake probabilities of every crop
    frame_labels: np.ndarray  # (M,) 1 for crops of fake videos


def calibrate_temperature(
    card: ModelCard, frame_model: torch.nn.Module, index: FaceIndex, device: torch.device, workers: int = 0
) -> tuple[ModelCard, FramePredictor, ValidationOutputs]:
    """Fit the frame model's temperature on the logits of every validation crop.

    Returns:
        The card with its temperature, the scan's frame predictor for it, and the
        validation outputs with probabilities at that temperature.
    """
    outputs = frame_outputs(frame_predictor(card, frame_model, device), index, index.tracks("val"), workers,
                            boxes=True, desc="validation crops")
    labels = np.repeat(outputs.labels, np.diff(outputs.bounds))
    card = dataclasses.replace(card, temperature=float(fit_temperature(outputs.logits, labels)))
    frames = frame_predictor(card, frame_model, device)
    return card, frames, ValidationOutputs(outputs, frames.fake_probabilities(outputs.logits), labels)


def calibrate_threshold(
    checkpoint: LoadedCheckpoint, val: ValidationOutputs, target_fpr: float
) -> tuple[ModelCard, OperatingPoint, np.ndarray, np.ndarray]:
    """Score the validation videos as a scan does and set the card's threshold for ``target_fpr``.

    Returns:
        The card with ``threshold`` and ``operating_point`` set, the operating point,
        and the validation videos' scores and labels (1 fake), in video-id order.
    """
    scores, labels = validation_video_scores(checkpoint, val)
    point = operating_point(scores, labels, target_fpr)
    # A still image is judged on its faces' frame probabilities, not on the video
    # aggregator's score: its own operating point, from every validation face as a still.
    image_point = operating_point(val.probabilities, val.frame_labels, target_fpr)
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


def frame_outputs(predictor: FramePredictor, index: FaceIndex, tracks: np.ndarray, workers: int = 0,
                  boxes: bool = False, blend: Optional[tuple] = None, desc: str = "crops") -> TrackOutputs:
    """The predictor's raw logits and embeddings of every crop of ``tracks``, streamed from the face table.

    Args:
        workers: DataLoader processes that read and decode the crops.
        boxes: Also keep each crop's detector box (calibration aggregates with them).
        blend: ``(TrainAugment, seed)``: also embed a self-blended copy of every
            track of a real video (``pipeline.train_stream.FaceCrops``), labelled fake.
    """
    crops = track_crops(index, tracks)
    lengths = np.diff(index.track_start)[tracks]
    labels = index.targets(tracks)
    copied = tracks[labels != FAKE_INDEX] if blend is not None else tracks[:0]
    copied_crops = track_crops(index, copied)
    store = EmbeddingStore(len(crops) + len(copied_crops))
    logits, kept_boxes = None, np.zeros((len(crops), 4), np.float32) if boxes else None
    stream = plain_stream(index, crops, _BATCH, boxes=boxes, blend=blend)
    for batch in tqdm(stream_loader(stream, workers), desc=desc, unit="batch", leave=False,
                      total=sum(stream.batches_per_rank(workers))):
        batch_logits, embeddings = predictor.outputs(batch.crops)
        plain = ~batch.blended
        slots = np.searchsorted(crops, batch.index[plain])
        if logits is None:
            logits = np.zeros((len(crops), batch_logits.shape[1]), np.float32)
        logits[slots] = batch_logits[plain]
        store.write(slots, embeddings[plain])
        if boxes:
            kept_boxes[slots] = batch.boxes[plain]
        if (~plain).any():
            store.write(len(crops) + np.searchsorted(copied_crops, batch.index[~plain]), embeddings[~plain])
    copy_lengths = np.diff(index.track_start)[copied]
    bounds = np.concatenate([[0], np.cumsum(np.concatenate([lengths, copy_lengths]))]).astype(np.int64)
    videos = [index.videos[v] for v in index.track_video[np.concatenate([tracks, copied])]]
    return TrackOutputs(
        tracks=np.concatenate([tracks, copied]), videos=videos,
        labels=np.concatenate([labels, np.full(len(copied), FAKE_INDEX, np.int64)]),
        bounds=bounds, frames=index.crop_frame[crops], boxes=kept_boxes,
        logits=logits if logits is not None else np.zeros((0, 2), np.float32),
        embeddings=TrackEmbeddings(store, bounds))


def validation_video_scores(
    checkpoint: LoadedCheckpoint, val: ValidationOutputs, strategy: str = CALIBRATION_STRATEGY
) -> tuple[np.ndarray, np.ndarray]:
    """Each validation video's score as a scan computes it, and its label (1 fake), videos in id order.

    Args:
        checkpoint: The trained models and their card (its ``aggregator`` decides).
        val: The frame predictor's outputs on every validation track, with their probabilities.
        strategy: How a video's track scores combine (the scan's ``aggregate.strategy``).
    """
    card, out = checkpoint.card, val.outputs
    sequence = SequencePredictor(checkpoint, torch.device("cpu")) if card.aggregator == BILSTM else None
    starts = [i for i in range(len(out.videos)) if i == 0 or out.videos[i] != out.videos[i - 1]]
    scores, labels = [], []
    for first, end in zip(starts, starts[1:] + [len(out.videos)]):
        members = range(first, end)
        tracks = [TrackFaces(val.probabilities[out.bounds[i]:out.bounds[i + 1]],
                             out.boxes[out.bounds[i]:out.bounds[i + 1]].astype(np.float64),
                             out.frames[out.bounds[i]:out.bounds[i + 1]].astype(np.int64))
                  for i in members]
        sequence_scores = sequence([out.embeddings[i] for i in members]) if sequence is not None else None
        scores.append(aggregate(card.aggregator, tracks, strategy, sequence_scores).score)
        labels.append(int(out.labels[first]))
    return np.array(scores, np.float64), np.array(labels, np.int64)
