"""Stage 2 of training: the BiLSTM over each track's frame embeddings, and whether to keep it.

The frame model is frozen by now; its embeddings come from the scan's own
predictor (``pipeline.calibration.frame_outputs``), streamed from the face table
and kept on local disk, so the tracks of a large table never sit in memory.
The stage writes ``OUTPUT/sequence_state.pt`` after every epoch and a resumed
run continues from it. Validation decides between the BiLSTM and the plain mean
of frame probabilities.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from models.aggregation import BILSTM
from models.augment import TrainAugment
from models.card import ModelCard
from models.checkpoint import LoadedCheckpoint
from models.crops import CropSpec
from models.metrics import binary_report, roc_auc
from models.registry import create_model
from models.training import EarlyStopping, predict_sequences, train_sequence_epoch
from pipeline.calibration import TrackOutputs, ValidationOutputs, frame_outputs, validation_video_scores
from pipeline.train_config import TrainConfig
from pipeline.train_data import FaceIndex
from pipeline.train_state import restore_sequence_rng, save_sequence_state

logger = logging.getLogger(__name__)


def sequence_tracks(config: TrainConfig, frames, index: FaceIndex, crop: CropSpec) -> TrackOutputs:
    """The sequence model's training tracks and their embeddings from the frozen frame model.

    The training split's kept tracks, plus, when self-blending is on, one pseudo-fake
    copy of each real track: a single self-blend drawn once and applied to every frame
    (``models.augment.self_blend_track``), labelled fake. A real-only training set
    would otherwise give the BiLSTM one class to learn; with these it learns what a
    consistently manipulated track looks like over time.
    """
    blend = None
    if config.augment.sbi_p > 0:
        blend = (TrainAugment(config=config.augment, margin=crop.margin), config.seed)
    tracks = index.tracks("train", kept_only=True)
    out = frame_outputs(frames, index, tracks, config.frame.workers, blend=blend, desc="training tracks")
    logger.info("sequence model: %d training tracks and %d self-blended copies", len(tracks),
                len(out.tracks) - len(tracks))
    return out


def choose_aggregator(card: ModelCard, frame_model, sequence_model, val: ValidationOutputs,
                      log) -> tuple[ModelCard, Optional[torch.nn.Module]]:
    """Keep the BiLSTM only if validation says it judges videos better than the mean of frame scores.

    Both are scored as the scan scores them (``validation_video_scores``); on equal
    validation AUC the simpler ``mean`` is kept.
    """
    def video_auc(candidate: ModelCard, sequence) -> float:
        checkpoint = LoadedCheckpoint(card=candidate, frame_model=frame_model, sequence_model=sequence,
                                      sha256=None, source="training")
        scores, labels = validation_video_scores(checkpoint, val)
        return float(roc_auc(labels, scores))

    mean_card = dataclasses.replace(card, aggregator="mean", sequence_arch=None, sequence_kwargs={})
    auc_bilstm, auc_mean = video_auc(card, sequence_model), video_auc(mean_card, None)
    keep = auc_bilstm > auc_mean
    log.write({"stage": "aggregator", "val_video_auc_bilstm": auc_bilstm, "val_video_auc_mean": auc_mean,
               "chosen": BILSTM if keep else "mean"})
    return (card, sequence_model) if keep else (mean_card, None)


def train_sequence(config: TrainConfig, card: ModelCard, train: TrackOutputs, val: TrackOutputs, log,
                   state_path: Optional[str], resume: Optional[dict], frame_epoch: int) -> torch.nn.Module:
    """Train the BiLSTM on the training tracks' embeddings; returns it with the weights validation liked best.

    Args:
        state_path: Where to write the stage's state after every epoch (None: nowhere).
        resume: A state written there, to continue from.
        frame_epoch: The frame state's epoch, recorded with the sequence state.
    """
    stage = config.sequence
    torch.manual_seed(config.seed)
    model = create_model(card.sequence_arch, input_dim=train.embeddings.dim, **card.sequence_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr)
    early = EarlyStopping(stage.patience, mode="min")
    rng = np.random.default_rng(config.seed)
    best, start = None, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        early.load_state_dict(resume["early_stopping"])
        best, start, rng = resume["best_model"], resume["epoch"] + 1, restore_sequence_rng(resume)
        logger.info("resuming the sequence stage at epoch %d", start + 1)
    for epoch in tqdm(range(start, stage.epochs), desc="sequence model", unit="epoch", leave=False):
        if early.should_stop:
            break
        loss = train_sequence_epoch(model, train.embeddings, train.labels, optimizer, stage.batch_size, rng)
        report = binary_report(val.labels, predict_sequences(model, val.embeddings), 0.5)
        if early.step(report["log_loss"]):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log.write({"stage": "sequence", "epoch": epoch + 1, "train_loss": loss,
                   "val_auc": report["auc"], "val_log_loss": report["log_loss"]})
        if state_path is not None:
            save_sequence_state(state_path, frame_epoch, epoch, model, optimizer, early, best, rng)
    model.load_state_dict(best)
    return model.eval()
