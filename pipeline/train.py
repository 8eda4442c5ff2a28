"""The training job: face crops in, one scan checkpoint out.

``run_train`` reads top-down as the job runs:

1. the face table (``pipeline.train_data``): its crops must be cut as the
   training config says (``model.crop_policy`` and its margins,
   ``model.input_size``); the face table records how they were, and the card
   takes it from there. Training indexes the table's small columns and streams
   the crops from its row groups as each stage needs them; it never holds the table;
2. stage 1 (``pipeline.frame_stage``): the EfficientNet frame model on labelled
   crops, with blur/JPEG augmentation and self-blended pseudo-fakes made from
   real crops; data-parallel under torchrun (``pipeline.distributed``);
   resumable mid-epoch from ``state.pt`` (``pipeline.train_state``);
3. the frame model's temperature, fitted on validation logits (``pipeline.calibration``);
4. stage 2 (``pipeline.sequence_stage``): the frozen frame model's embeddings
   train the BiLSTM, kept only if validation says it judges videos better than
   the mean of frame probabilities;
5. the verdict threshold: every validation video is scored by
   ``models.inference``'s predictors and ``models.aggregation`` exactly as a scan
   scores it, and the threshold is the operating point for
   ``calibration.target_fpr`` on those scores (``models.metrics.operating_point``).

Outputs under ``config.output`` (rank 0 writes them): ``config.yaml``,
``metrics.jsonl`` (one line per epoch), ``state.pt`` and ``sequence_state.pt``
(resumable training state) and ``model.pt`` (the checkpoint ``deepfake-scan
scan`` loads). Under torchrun, steps 3 to 5 run on rank 0 once the others have left.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import fsspec
import torch

from models.aggregation import BILSTM
from models.card import ModelCard
from models.checkpoint import LoadedCheckpoint, save_checkpoint
from models.crops import CropSpec
from models.labels import CLASSES
from models.manipulate import SELF_BLEND
from models.metrics import binary_report
from models.training import set_batchnorm_momentum, set_seed
from pipeline import distributed
from pipeline.calibration import calibrate_temperature, calibrate_threshold
from pipeline.config import dump_config
from pipeline.frame_stage import initial_frame_model, normalisation, train_frames
from pipeline.sequence_stage import choose_aggregator, sequence_tracks, train_sequence
from pipeline.train_config import TrainConfig
from pipeline.train_data import FaceIndex, build_index, face_table_crop
from pipeline.train_state import MetricsLog, load_state, sequence_state_path

logger = logging.getLogger(__name__)


def run_train(config: TrainConfig) -> str:
    """Train both stages; returns the path of the checkpoint (written by rank 0 under torchrun)."""
    started = time.time()
    crop = face_table_crop(config)  # before any work: the crops must be the ones the config names
    set_seed(config.seed)
    ranks = distributed.start(config.device)
    _leave_cores_to_workers(ranks.device, config.frame.workers)
    out = config.output.rstrip("/")
    path = f"{out}/model.pt"
    if ranks.is_main:
        fs, root = fsspec.core.url_to_fs(out)
        fs.makedirs(root, exist_ok=True)
        dump_config(config, f"{out}/config.yaml")
    resume = load_state(config.resume) if config.resume else None
    log = MetricsLog(f"{out}/metrics.jsonl", append=resume is not None, enabled=ranks.is_main)

    index = build_index(config.data.faces, config.data.max_tracks_per_video)
    card = _card(config, crop, index)
    frame_model = set_batchnorm_momentum(initial_frame_model(config, card)).to(ranks.device)
    frame_model, frame_epoch, frame_trained = train_frames(config, card, frame_model, index, crop, ranks, log,
                                                           resume, out)
    ranks.leave()
    if not ranks.is_main:
        return path

    # From here on the frozen frame model runs in the scan's own predictor, on every validation track.
    card, frames, val = calibrate_temperature(card, frame_model, index, ranks.device, config.frame.workers)
    sequence_model, train_tracks = None, None
    try:
        if config.sequence.enabled:
            train_tracks = sequence_tracks(config, frames, index, crop)
            sequence_model = train_sequence(config, card, train_tracks, val.outputs, log,
                                            sequence_state_path(f"{out}/state.pt"),
                                            _sequence_resume(resume, frame_trained), frame_epoch)
            if config.sequence.select_on_validation:
                card, sequence_model = choose_aggregator(card, frame_model, sequence_model, val, log)
        trained = LoadedCheckpoint(card=card, frame_model=frame_model, sequence_model=sequence_model, sha256=None,
                                   source=out)
        card, point, video_scores, video_labels = calibrate_threshold(trained, val, config.calibration.target_fpr)
    finally:
        val.outputs.close()
        if train_tracks is not None:
            train_tracks.close()

    frame_report = binary_report(val.frame_labels, val.probabilities, 0.5)
    video_report = binary_report(video_labels, video_scores, card.threshold)
    card.training = {
        "config": dataclasses.asdict(config),
        "data": index.summary(),
        "validation": {"frame": frame_report, "video": video_report},
        "temperature": card.temperature,
        "threshold": card.threshold,
        "seconds": round(time.time() - started, 1),
    }
    log.write({"stage": "calibration", "temperature": card.temperature, "threshold": card.threshold,
               "method": point.method, "val_fpr": point.val_fpr, "val_tpr": point.val_tpr,
               "val_videos": point.val_videos, "val_video_auc": video_report["auc"],
               "val_frame_auc": frame_report["auc"]})
    sha = save_checkpoint(path, card, frame_model.cpu(), sequence_model, half=False)
    logger.info("checkpoint written to %s (sha256 %s)", path, sha[:12])
    return path


def _leave_cores_to_workers(device: torch.device, workers: int) -> None:
    """On the CPU, one core fewer for torch per DataLoader worker: oversubscribed OpenMP threads
    wait on each other (on 2 cores with 1 worker, a step takes 2-3x as long with 2 threads as with 1)."""
    if device.type == "cpu" and workers > 0:
        threads = max(1, torch.get_num_threads() - workers)
        if threads != torch.get_num_threads():
            logger.info("torch uses %d thread(s), leaving %d core(s) to the loader workers", threads, workers)
            torch.set_num_threads(threads)


def _sequence_resume(resume, frame_trained: bool):
    """The sequence stage's saved state, if it learnt from the frame model this run ends with."""
    if resume is None or resume.get("sequence") is None:
        return None
    if frame_trained or resume["sequence"]["frame_epoch"] != resume["epoch"]:
        logger.info("the frame model changed since the sequence stage's state was saved: it starts afresh")
        return None
    return resume["sequence"]


def _card(config: TrainConfig, crop: CropSpec, index: FaceIndex) -> ModelCard:
    """The new model's card before training: architectures, crops, normalisation and classes."""
    mean, std = normalisation(config)
    return ModelCard(
        name=config.model.name,
        frame_arch=config.model.arch,
        input_size=crop.size,
        crop_policy=crop.policy,
        crop_margin=crop.margin,
        box_margins=crop.box_margins,
        mean=mean,
        std=std,
        class_names=CLASSES,
        manipulation_classes=_manipulation_classes(config, index),
        frame_kwargs={"dropout": config.model.dropout},
        aggregator=BILSTM if config.sequence.enabled else "mean",
        sequence_arch="bilstm" if config.sequence.enabled else None,
        sequence_kwargs={"hidden_dim": config.sequence.hidden_dim} if config.sequence.enabled else {},
    )


def _manipulation_classes(config: TrainConfig, index: FaceIndex) -> tuple[str, ...]:
    """The second head's classes: the training split's manipulations, and the self-blend when it is on."""
    if not config.model.manipulation_head:
        return ()
    names = index.manipulations("train")
    if config.augment.sbi_p > 0:
        names.add(SELF_BLEND)
    return tuple(sorted(names))
