"""Stage 1 of training: the frame model, from its starting weights to the epoch validation liked best.

The model starts from scratch, from ImageNet weights (``model.pretrained``) or
from another checkpoint (``model.init``), and its card normalises inputs as those
weights expect. Each epoch draws new crops from every training track, streams
them from the face table's row groups through a shuffle buffer
(``models.streaming``; DataLoader workers decode and augment them:
``models.augment.TrainAugment``, blur, JPEG, ... and self-blended pseudo-fakes
made from real crops), trains under autocast (``frame.precision``), and
validates on fixed, evenly spaced validation crops (with ``data.val_families``,
also on fixed validation-only edits of the real ones: ``pipeline.frame_validation``);
the weights with the lowest validation log loss (or, with ``frame.select_on: auc``,
the highest validation AUC) are kept (early stopping on ``frame.patience``). With ``frame.ema_decay`` a moving average of the weights is
what is validated and kept. Under torchrun each rank trains on its own shard
(``pipeline.distributed``). The state after every epoch, and every
``frame.save_every_steps`` steps, goes to ``OUTPUT/state.pt`` (``pipeline.train_state``).
"""
from __future__ import annotations

import functools
import itertools
import logging
import time
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from models import pretrained
from models.augment import TrainAugment
from models.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from models.checkpoint import load_checkpoint, read_card
from models.crops import CropSpec
from models.frame import calibrate_batchnorm
from models.inference import fake_probabilities
from models.losses import FrameLoss
from models.metrics import binary_report
from models.preprocess import FacePreprocess
from models.registry import create_model
from models.streaming import ShuffledStream, StreamTracker, resume_streams
from models.training import EarlyStopping, FrameTotals, MixedPrecision, train_frame_epoch, weight_ema
from pipeline.distributed import Ranks
from pipeline.frame_validation import ValidationSet, auc_by_manipulation, item_order, log_aucs, validation_set
from pipeline.train_config import TrainConfig
from pipeline.train_data import FaceIndex, epoch_crops
from pipeline.train_state import FrameTraining, MetricsLog, restore_state, save_state
from pipeline.train_stream import FaceCrops, stream_loader

logger = logging.getLogger(__name__)


def normalisation(config: TrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The card's mean and std: those of the weights the model starts from.

    ImageNet weights bring their own (``models.pretrained``); a checkpoint given as
    ``model.init`` brings its card's, since its features were learnt on inputs
    normalised that way. From scratch, ImageNet's statistics.
    """
    if config.model.pretrained == "imagenet":
        cfg = pretrained.pretrained_config(config.model.arch)
        return tuple(cfg.mean), tuple(cfg.std)
    if config.model.init:
        card, _ = read_card(config.model.init)
        return tuple(card.mean), tuple(card.std)
    return IMAGENET_MEAN, IMAGENET_STD


def initial_frame_model(config: TrainConfig, card: ModelCard) -> torch.nn.Module:
    """The frame model ``card`` describes, with the starting weights the config names.

    Raises:
        ValueError: If ``model.init`` is a checkpoint of another architecture.
    """
    model = create_model(
        card.frame_arch,
        num_classes=len(card.class_names),
        manipulation_classes=len(card.manipulation_classes),
        **card.frame_kwargs,
    )
    if config.model.pretrained == "imagenet":
        pretrained.load_imagenet_backbone(model)
    if config.model.init:
        start = load_checkpoint(config.model.init)
        if start.card.frame_arch != card.frame_arch:
            raise ValueError(f"model.init is a {start.card.frame_arch} checkpoint, not {card.frame_arch}")
        # The backbone and embedding carry over; heads whose shape changed start afresh.
        own = model.state_dict()
        compatible = {k: v for k, v in start.frame_model.state_dict().items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(compatible, strict=False)
        logger.info("frame model initialised from %s (%d/%d tensors)", config.model.init, len(compatible), len(own))
    return model


def train_frames(
    config: TrainConfig,
    card: ModelCard,
    model: torch.nn.Module,
    index: FaceIndex,
    crop: CropSpec,
    ranks: Ranks,
    log: MetricsLog,
    resume: Optional[dict],
    out: str,
) -> tuple[torch.nn.Module, int, bool]:
    """Train ``model`` for ``frame.epochs`` (or until early stopping).

    Args:
        crop: How the face table's crops were cut (self-blending needs their margin).
        ranks: This process's place among the data-parallel ranks (``pipeline.distributed``).
        resume: A state from ``pipeline.train_state.load_state``, or None for a fresh start.
        out: The output folder; rank 0 writes ``state.pt`` there.

    Returns:
        The model with the best weights, the last whole epoch (0-based, as ``state.pt``
        records it), and whether this run trained at all (a resumed run may find the
        stage done).
    """
    stage = config.frame
    preprocess = FacePreprocess.from_card(card)
    precision = MixedPrecision(ranks.device, stage.precision)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    parts = FrameTraining(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=stage.epochs),
        early=EarlyStopping(stage.patience, mode="max" if stage.select_on == "auc" else "min"),
        ema=weight_ema(model, stage.ema_decay) if stage.ema_decay > 0 else None,
        scaler=precision.scaler,
    )
    evaluated = parts.ema.module if parts.ema is not None else model  # what is validated and kept
    best_state, start_epoch, position = None, 0, None
    if resume is not None:
        best_state, start_epoch, position = restore_state(parts, resume)
        at = f" at step {position['ranks'][0]['stream']['steps'] + 1}" if position is not None else ""
        logger.info("resuming the frame stage in epoch %d%s", start_epoch + 1, at)
    epoch_run = _EpochRun(config, card, ranks.wrap(model), parts, index, preprocess, precision, ranks, out,
                          augment=TrainAugment(config=config.augment, margin=crop.margin))
    val_items = validation_set(config, index, crop)
    trained, last_epoch = False, start_epoch - 1
    for epoch in range(start_epoch, stage.epochs):
        if parts.early.should_stop:
            break
        trained = True
        train = epoch_run(epoch, best_state, position if position is not None and position["epoch"] == epoch else None)
        position = None
        parts.scheduler.step()
        if parts.ema is not None:
            _recalibrate(parts.ema.module, index, epoch_run.crops, preprocess, ranks.device, stage.batch_size,
                         config.seed, epoch)
        else:
            ranks.sync_buffers(model)
        logits = validation_logits(evaluated, index, val_items, preprocess, precision, ranks, stage)
        probabilities = fake_probabilities(logits, card.fake_index)
        val = binary_report(val_items.labels, probabilities, 0.5)
        by_manipulation = auc_by_manipulation(val_items, probabilities)
        if ranks.is_main:
            log_aucs(epoch, by_manipulation)
        improved = parts.early.step(val[stage.select_on])
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
        log.write({"stage": "frame", "epoch": epoch + 1, "lr": parts.scheduler.get_last_lr()[0],
                   **{f"train_{k}": v for k, v in train.items()},
                   "val_auc": val["auc"], "val_log_loss": val["log_loss"], "val_accuracy": val["accuracy"],
                   "val_auc_by_manipulation": by_manipulation, "val_items": len(val_items), "best": improved})
        if ranks.is_main:
            save_state(f"{out}/state.pt", config, epoch, parts, best_state)
        last_epoch = epoch
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, last_epoch, trained


class _EpochRun:
    """One frame epoch over this rank's shard of the epoch's crops, saving the position as it goes."""

    def __init__(self, config: TrainConfig, card: ModelCard, network: torch.nn.Module, parts: FrameTraining,
                 index: FaceIndex, preprocess: FacePreprocess, precision: MixedPrecision, ranks: Ranks, out: str,
                 augment: TrainAugment):
        self.config, self.card, self.network, self.parts = config, card, network, parts
        self.index, self.preprocess, self.precision, self.ranks, self.out = index, preprocess, precision, ranks, out
        self.augment = augment
        self.loss_fn = FrameLoss(contrastive_weight=config.frame.contrastive_weight,
                                 margin=config.frame.contrastive_margin, label_smoothing=config.frame.label_smoothing)
        self.crops = np.zeros(0, np.int64)

    def __call__(self, epoch: int, best_state: Optional[dict], position: Optional[dict]) -> dict:
        config, stage, ranks = self.config, self.config.frame, self.ranks
        self.crops = epoch_crops(self.index, config.data.frames_per_track, config.seed, epoch)
        source = FaceCrops(self.index, self.crops, augment=self.augment, seed=config.seed, epoch=epoch,
                           manipulation_classes=self.card.manipulation_classes)
        mine = _own_position(position, ranks, stage.workers, epoch)
        positions, rotation = resume_streams(mine["stream"] if mine else None, stage.workers)
        stream = ShuffledStream(source, batch_size=stage.batch_size, seed=config.seed, epoch=epoch,
                                buffer_size=config.data.shuffle_buffer, rank=ranks.rank, world=ranks.world,
                                positions=positions, rotation=rotation)
        steps = min(stream.batches_per_rank(stage.workers))  # every rank takes as many steps
        tracker = StreamTracker(stage.workers, mine["stream"] if mine else None)
        totals = FrameTotals(mine["totals"] if mine else None)
        done_before, seen_before = tracker.steps, totals.seen

        first_batch: list[float] = []  # seconds until the first step ended: loader start-up, first row groups

        def after_step(batch) -> None:
            if not first_batch:
                first_batch.append(time.perf_counter() - started)
            if self.parts.ema is not None:
                self.parts.ema.update_parameters(self.parts.model)
            tracker.update(batch)
            if stage.save_every_steps and tracker.steps % stage.save_every_steps == 0 and tracker.steps < steps:
                ranks_data = ranks.gather({"stream": tracker.state(), "totals": totals.state_dict()})
                if ranks.is_main:
                    save_state(f"{self.out}/state.pt", config, epoch - 1, self.parts, best_state,
                               {"epoch": epoch, "world": ranks.world, "ranks": ranks_data})

        started = time.perf_counter()
        loader = stream_loader(stream, stage.workers, pin_memory=ranks.device.type == "cuda",
                               seed=config.seed + epoch)
        bar = functools.partial(tqdm, desc=f"frame epoch {epoch + 1}/{stage.epochs}", leave=False, unit="batch",
                                total=steps, initial=done_before, disable=not ranks.is_main)
        train_frame_epoch(self.network, itertools.islice(loader, max(steps - done_before, 0)), self.preprocess,
                          self.loss_fn, self.parts.optimizer, ranks.device, progress=bar, after_step=after_step,
                          precision=self.precision, totals=totals)
        seconds = time.perf_counter() - started
        gathered = ranks.gather((totals.state_dict(), totals.seen - seen_before))
        combined = FrameTotals.merged([state for state, _ in gathered])
        crops_now = sum(n for _, n in gathered)
        return {**combined.summary(), "steps": steps, "seconds": round(seconds, 2),
                "first_batch_seconds": round(first_batch[0], 2) if first_batch else None,
                "crops_per_second": round(crops_now / max(seconds, 1e-9), 1)}


def _own_position(position: Optional[dict], ranks: Ranks, workers: int, epoch: int) -> Optional[dict]:
    """This rank's part of a saved data position, if the run can continue it exactly."""
    if position is None:
        return None
    saved = position["ranks"][0]["stream"]["workers"]
    if position["world"] != ranks.world or saved != max(workers, 1):
        logger.warning("the data position was saved by %d rank(s) with %d loader worker(s), not %d with %d: "
                       "frame epoch %d starts again from its first batch", position["world"], saved, ranks.world,
                       max(workers, 1), epoch + 1)
        return None
    return position["ranks"][ranks.rank]


@torch.inference_mode()
def validation_logits(model, index: FaceIndex, items: ValidationSet, preprocess: FacePreprocess,
                       precision: MixedPrecision, ranks: Ranks, stage) -> np.ndarray:
    """The model's logits on the validation items, each rank a shard of the crops, gathered in item order.

    A real crop comes with its copies by the validation families (made in the
    loader's workers), so a batch reads ``2 * batch_size // (1 + families)`` crops:
    at most ``2 * batch_size`` images, as without families.
    """
    per_crop = 1 + len(items.families)
    stream = ShuffledStream(FaceCrops(index, items.crops, families=items.source_families),
                            batch_size=max(1, 2 * stage.batch_size // per_crop), seed=0, shuffle=False,
                            rank=ranks.rank, world=ranks.world)
    model.eval()
    numbers, variants, logits = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], []
    for batch in stream_loader(stream, stage.workers, pin_memory=ranks.device.type == "cuda"):
        with precision.autocast():
            out = model(preprocess(batch.crops.to(ranks.device, non_blocking=True)))
        numbers.append(batch.index)
        variants.append(batch.variant)
        logits.append(out["logits"].float().cpu().numpy())
    gathered = ranks.gather((np.concatenate(numbers), np.concatenate(variants),
                             np.concatenate(logits) if logits else None))
    numbers = np.concatenate([n for n, _, _ in gathered])
    variants = np.concatenate([v for _, v, _ in gathered])
    logits = np.concatenate([z for _, _, z in gathered if z is not None])
    order = item_order(numbers, variants)
    if not items.same_items(numbers[order], variants[order]):
        raise RuntimeError("validation did not see every validation crop (and family copy) exactly once")
    return logits[order]


def _recalibrate(model, index: FaceIndex, crops: np.ndarray, preprocess, device, batch_size: int, seed: int,
                 epoch: int, batches: int = 16) -> None:
    """BatchNorm statistics of the weight average, from un-augmented training crops (the same on every rank)."""
    stream = ShuffledStream(FaceCrops(index, crops), batch_size=batch_size, seed=seed + 1, epoch=epoch,
                            buffer_size=4 * batch_size)
    loader = stream_loader(stream, workers=0)
    calibrate_batchnorm(model, (preprocess(b.crops).to(device) for b in itertools.islice(loader, batches)))
