"""Stage 2 of training: the BiLSTM over each track's frame embeddings, and whether to keep it.

The frame model is frozen by now; its embeddings come from the scan's own
predictor (``pipeline.calibration``). Validation decides between the BiLSTM and
the plain mean of frame probabilities.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from models.aggregation import BILSTM
from models.augment import TrainAugment, self_blend_track
from models.card import ModelCard
from models.checkpoint import LoadedCheckpoint
from models.crops import CropSpec
from models.manipulate import SELF_BLEND
from models.metrics import binary_report, roc_auc
from models.preprocess import decode_crop
from models.registry import create_model
from models.training import EarlyStopping, predict_sequences, train_sequence_epoch
from pipeline.calibration import frame_outputs, target, validation_video_scores
from pipeline.train_config import TrainConfig

logger = logging.getLogger(__name__)

def sequence_tracks(config: TrainConfig, frames, items: list, crop: CropSpec) -> tuple[list, list[np.ndarray]]:
    """The sequence model's training tracks and their embeddings from the frozen frame model.

    The training split's own tracks, plus, when self-blending is on, one pseudo-fake
    copy of each real track: a single self-blend drawn once and applied to every frame
    (``models.augment.self_blend_track``), labelled fake. A real-only training set
    would otherwise give the BiLSTM one class to learn; with these it learns what a
    consistently manipulated track looks like over time.
    """
    _, embeddings = frame_outputs(frames, items)
    if config.augment.sbi_p <= 0:
        return items, embeddings
    augment = TrainAugment(config=config.augment.to_augment_config(crop.margin))
    rng = np.random.default_rng([config.seed, 11])
    blended_items, blended_embeddings = [], []
    for meta, track in tqdm(items, desc="self-blended tracks", unit="track", leave=False):
        if meta["label"] != "real":
            continue
        fakes = self_blend_track(augment, [decode_crop(r["crop_png"]) for r in track], int(rng.integers(2**31)))
        blended_items.append(({**meta, "label": "fake", "manipulation": SELF_BLEND}, track))
        blended_embeddings.append(frames.outputs(np.stack(fakes))[1])
    logger.info("sequence model: %d training tracks and %d self-blended copies", len(items), len(blended_items))
    return items + blended_items, embeddings + blended_embeddings


def choose_aggregator(card: ModelCard, frame_model, sequence_model, val, log) -> tuple[ModelCard, Optional[torch.nn.Module]]:
    """Keep the BiLSTM only if validation says it judges videos better than the mean of frame scores.

    Both are scored as the scan scores them (``validation_video_scores``); on equal
    validation AUC the simpler ``mean`` is kept.
    """
    def video_auc(candidate: ModelCard, sequence) -> float:
        checkpoint = LoadedCheckpoint(card=candidate, frame_model=frame_model, sequence_model=sequence,
                                      sha256=None, source="training")
        scores, labels = validation_video_scores(checkpoint, val.items, val.probabilities, val.embeddings)
        return float(roc_auc(labels, scores))

    mean_card = dataclasses.replace(card, aggregator="mean", sequence_arch=None, sequence_kwargs={})
    auc_bilstm, auc_mean = video_auc(card, sequence_model), video_auc(mean_card, None)
    keep = auc_bilstm > auc_mean
    log.write({"stage": "aggregator", "val_video_auc_bilstm": auc_bilstm, "val_video_auc_mean": auc_mean,
               "chosen": BILSTM if keep else "mean"})
    return (card, sequence_model) if keep else (mean_card, None)


def train_sequence(config, card, train_emb, train_items, val_emb, val_items, log):
    stage = config.sequence
    torch.manual_seed(config.seed)
    model = create_model(card.sequence_arch, input_dim=train_emb[0].shape[1], **card.sequence_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr)
    early = EarlyStopping(stage.patience, mode="min")
    train_labels = np.array([target(m) for m, _ in train_items])
    val_labels = np.array([target(m) for m, _ in val_items])
    rng = np.random.default_rng(config.seed)
    best = None
    for epoch in tqdm(range(stage.epochs), desc="sequence model", unit="epoch", leave=False):
        loss = train_sequence_epoch(model, train_emb, train_labels, optimizer, stage.batch_size, rng)
        val = binary_report(val_labels, predict_sequences(model, val_emb), 0.5)
        if early.step(val["log_loss"]):
            best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log.write({"stage": "sequence", "epoch": epoch + 1, "train_loss": loss,
                   "val_auc": val["auc"], "val_log_loss": val["log_loss"]})
        if early.should_stop:
            break
    model.load_state_dict(best)
    return model.eval()
