"""The training job: face crops in, one scan checkpoint out.

Stage 1 trains the EfficientNet frame model on labelled crops (with blur/JPEG
augmentation and self-blended pseudo-fakes made from real crops); stage 2
freezes it and trains the BiLSTM on each track's sequence of embeddings. The
crops must be cut as the training config says (``model.crop_policy`` and its
margins, ``model.input_size``); the face table records how they were, and the
card takes it from there. Calibration runs the scan's own code: the frame model's
temperature is fitted on validation logits, every validation video is scored by
``models.inference``'s predictors and ``models.aggregation`` exactly as a scan
scores it, and the verdict threshold is the operating point for
``calibration.target_fpr`` on those scores (``models.metrics.operating_point``).
Outputs under ``config.output``: ``config.yaml``, ``metrics.jsonl`` (one line per
epoch), ``state.pt`` (resumable training state, written every epoch) and
``model.pt`` (the checkpoint ``deepfake-scan scan`` loads).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import time
from collections import defaultdict
from typing import Optional

import fsspec
import numpy as np
import torch
from tqdm import tqdm

from models import pretrained
from models.aggregation import BILSTM
from models.augment import TrainAugment
from models.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from models.checkpoint import LoadedCheckpoint, load_checkpoint, read_card, save_checkpoint
from models.crops import ALIGNED, CropSpec
from models.device import resolve_device
from models.frame import calibrate_batchnorm
from models.inference import fake_probabilities
from models.losses import FrameLoss
from models.metrics import binary_report
from models.preprocess import FacePreprocess, decode_crop
from models.registry import create_model
from models.training import (
    CropDataset,
    CropSample,
    EarlyStopping,
    crop_loader,
    predict_frames,
    set_batchnorm_momentum,
    set_seed,
    train_frame_epoch,
    weight_ema,
)
from pipeline.calibration import CLASSES, calibrate_temperature, calibrate_threshold, target
from pipeline.config import ConfigError, dump_config
from pipeline.crop_record import read_crop_spec
from pipeline.sequence_stage import choose_aggregator, sequence_tracks, train_sequence
from pipeline.train_config import TrainConfig
from transforms.tables import read_table

logger = logging.getLogger(__name__)

def read_faces(faces_dir: str) -> list[dict]:
    """The face table written by the extraction job, without decoding crops."""
    table = read_table(faces_dir.rstrip("/") + "/faces")
    columns = ["video_id", "split", "label", "manipulation", "track_id", "clip_index", "frame_index", "box",
               "crop_png"]
    return table.select(columns).to_pylist()


def group_tracks(
    rows: list[dict], max_tracks_per_video: Optional[int] = None
) -> dict[str, list[tuple[dict, list[dict]]]]:
    """split -> [(video meta, crops of one track in frame order)], videos in id order.

    With ``max_tracks_per_video`` only a video's longest tracks are kept, longest
    first; without, every track is, in track-id order (the order a scan reports them).
    """
    tracks: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        tracks[(row["split"], row["video_id"], row["track_id"])].append(row)
    per_video: dict[tuple, list[tuple[int, list[dict]]]] = defaultdict(list)
    for (split, video_id, track_id), crops in tracks.items():
        per_video[(split, video_id)].append((track_id, sorted(crops, key=lambda r: r["frame_index"])))
    out: dict[str, list] = defaultdict(list)
    for (split, _), video_tracks in sorted(per_video.items()):
        video_tracks.sort(key=lambda t: t[0])
        if max_tracks_per_video is not None:
            video_tracks = sorted(video_tracks, key=lambda t: len(t[1]), reverse=True)[:max_tracks_per_video]
        for _, crops in video_tracks:
            out[split].append((crops[0], crops))
    return out


def pick_frames(track: list[dict], count: int, rng: Optional[np.random.Generator]) -> list[dict]:
    """``count`` crops of a track: random for training, evenly spaced when ``rng`` is None."""
    if len(track) <= count:
        return track
    if rng is None:
        idx = np.linspace(0, len(track) - 1, count).round().astype(int)
    else:
        idx = np.sort(rng.choice(len(track), count, replace=False))
    return [track[i] for i in idx]


def data_summary(tracks: dict[str, list]) -> dict:
    summary = {}
    for split, items in tracks.items():
        videos = {meta["video_id"]: meta for meta, _ in items}
        counts: dict[str, int] = defaultdict(int)
        for meta in videos.values():
            counts[meta["label"]] += 1
            if meta["manipulation"]:
                counts[f"fake:{meta['manipulation']}"] += 1
        summary[split] = {"videos": len(videos), "tracks": len(items), "crops": sum(len(c) for _, c in items), **counts}
    return summary


class MetricsLog:
    def __init__(self, path: str, append: bool):
        self.path = path
        if not append:
            with fsspec.open(path, "w") as f:
                f.write("")

    def write(self, record: dict) -> None:
        with fsspec.open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        logger.info("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()})


def run_train(config: TrainConfig) -> str:
    """Train both stages; returns the path of the checkpoint written."""
    started = time.time()
    crop = face_table_crop(config)  # before any work: the crops must be the ones the config names
    set_seed(config.seed)
    device = resolve_device(config.device)
    out = config.output.rstrip("/")
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    dump_config(config, f"{out}/config.yaml")
    resume = _load_state(config.resume) if config.resume else None
    log = MetricsLog(f"{out}/metrics.jsonl", append=resume is not None)

    rows = read_faces(config.data.faces)
    tracks = group_tracks(rows, config.data.max_tracks_per_video)
    summary = data_summary(tracks)
    logger.info("training data: %s", summary)
    for split in ("train", "val"):
        if not tracks.get(split):
            raise ValueError(f"the face table has no '{split}' crops; extract a dataset with a {split} split")
    manipulations = _manipulation_classes(config, tracks["train"])
    mean, std = _normalisation(config)
    card = ModelCard(
        name=config.model.name,
        frame_arch=config.model.arch,
        input_size=crop.size,
        crop_policy=crop.policy,
        crop_margin=crop.margin,
        box_margins=crop.box_margins,
        mean=mean,
        std=std,
        class_names=CLASSES,
        manipulation_classes=manipulations,
        frame_kwargs={"dropout": config.model.dropout},
        aggregator=BILSTM if config.sequence.enabled else "mean",
        sequence_arch="bilstm" if config.sequence.enabled else None,
        sequence_kwargs={"hidden_dim": config.sequence.hidden_dim} if config.sequence.enabled else {},
    )
    preprocess = FacePreprocess.from_card(card)
    frame_model = set_batchnorm_momentum(_initial_frame_model(config, card)).to(device)
    frame_model = _train_frames(config, card, frame_model, tracks, preprocess, crop, device, log, resume, out)

    # From here on the frozen frame model runs in the scan's own predictor, on every validation track.
    card, frames, val = calibrate_temperature(card, frame_model, group_tracks(rows)["val"], device)
    sequence_model = None
    if config.sequence.enabled:
        train_items, train_embeddings = sequence_tracks(config, frames, tracks["train"], crop)
        sequence_model = train_sequence(config, card, train_embeddings, train_items, val.embeddings, val.items, log)
        if config.sequence.select_on_validation:
            card, sequence_model = choose_aggregator(card, frame_model, sequence_model, val, log)
    trained = LoadedCheckpoint(card=card, frame_model=frame_model, sequence_model=sequence_model, sha256=None,
                               source=out)
    card, point, video_scores, video_labels = calibrate_threshold(trained, val, config.calibration.target_fpr)
    frame_report = binary_report(val.frame_labels, np.concatenate(val.probabilities), 0.5)
    video_report = binary_report(video_labels, video_scores, card.threshold)
    card.training = {
        "config": dataclasses.asdict(config),
        "data": summary,
        "validation": {"frame": frame_report, "video": video_report},
        "temperature": card.temperature,
        "threshold": card.threshold,
        "seconds": round(time.time() - started, 1),
    }
    log.write({"stage": "calibration", "temperature": card.temperature, "threshold": card.threshold,
               "method": point.method, "val_fpr": point.val_fpr, "val_tpr": point.val_tpr,
               "val_videos": point.val_videos, "val_video_auc": video_report["auc"],
               "val_frame_auc": frame_report["auc"]})
    path = f"{out}/model.pt"
    sha = save_checkpoint(path, card, frame_model.cpu(), sequence_model, half=False)
    logger.info("checkpoint written to %s (sha256 %s)", path, sha[:12])
    return path


def face_table_crop(config: TrainConfig) -> CropSpec:
    """How the face table's crops were cut; stops in one line when the training config disagrees.

    Raises:
        ConfigError: If ``model.input_size``/``crop_policy``/``crop_margin``/``box_margins``
            describe other crops than the face table holds, or self-blending is asked
            of crops that are not aligned.
    """
    table = read_crop_spec(config.data.faces)
    wanted = config.model.crop
    if not same_crops(table, wanted):
        raise ConfigError(
            f"the face table {config.data.faces} holds {table.describe()} crops but the training config "
            f"asks for {wanted.describe()} (model.input_size, model.crop_policy, model.crop_margin, "
            "model.box_margins): extract again with this config, or make them agree"
        )
    if table.policy != ALIGNED and config.augment.sbi_p > 0:
        raise ConfigError(f"augment.sbi_p={config.augment.sbi_p:g} self-blends on the aligned face template, "
                          f"but the face table holds {table.describe()} crops: set augment.sbi_p=0")
    return table


def same_crops(a: CropSpec, b: CropSpec) -> bool:
    """Whether two specs cut the same crops (margins compared only where the policy uses them)."""
    if (a.policy, a.size) != (b.policy, b.size):
        return False
    if a.policy == ALIGNED:
        return abs(a.margin - b.margin) <= 1e-9
    return all(abs(x - y) <= 1e-9 for x, y in zip(a.box_margins, b.box_margins))


def _normalisation(config: TrainConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
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


def _manipulation_classes(config: TrainConfig, train_items: list) -> tuple[str, ...]:
    if not config.model.manipulation_head:
        return ()
    names = {meta["manipulation"] for meta, _ in train_items if meta["label"] == "fake" and meta["manipulation"]}
    if config.augment.sbi_p > 0:
        names.add("self_blend")
    return tuple(sorted(names))


def _initial_frame_model(config: TrainConfig, card: ModelCard) -> torch.nn.Module:
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


def _samples(items: list, count: int, rng: Optional[np.random.Generator]) -> list[CropSample]:
    samples = []
    for meta, crops in items:
        for row in pick_frames(crops, count, rng):
            samples.append(CropSample(row["crop_png"], target(meta), meta["video_id"], meta["manipulation"] or ""))
    return samples


def _train_frames(config, card, model, tracks, preprocess, crop, device, log, resume, out):
    stage = config.frame
    manipulations = card.manipulation_classes
    # Self-blending draws its mask on the aligned template, with the margin the crops were cut with.
    augment = TrainAugment(config=config.augment.to_augment_config(crop.margin))
    loss_fn = FrameLoss(
        contrastive_weight=stage.contrastive_weight,
        margin=stage.contrastive_margin,
        label_smoothing=stage.label_smoothing,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=stage.epochs)
    early = EarlyStopping(stage.patience, mode="min")
    ema = weight_ema(model, stage.ema_decay) if stage.ema_decay > 0 else None
    evaluated = ema.module if ema is not None else model  # what is validated and kept
    best_state, start_epoch = None, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        if ema is not None and resume.get("ema") is not None:
            ema.load_state_dict(resume["ema"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        early.load_state_dict(resume["early_stopping"])
        best_state, start_epoch = resume["best_model"], resume["epoch"] + 1
        logger.info("resuming the frame stage at epoch %d", start_epoch + 1)
    val_samples = _samples(tracks["val"], config.data.val_frames_per_track, None)
    val_labels = np.array([s.target for s in val_samples])
    for epoch in range(start_epoch, stage.epochs):
        if early.should_stop:
            break
        rng = np.random.default_rng((config.seed, epoch))
        dataset = CropDataset(_samples(tracks["train"], config.data.frames_per_track, rng), augment,
                              seed=config.seed, manipulation_classes=manipulations)
        dataset.epoch = epoch
        loader = crop_loader(dataset, stage.batch_size, shuffle=True, workers=stage.workers, seed=config.seed + epoch)
        bar = functools.partial(tqdm, desc=f"frame epoch {epoch + 1}/{stage.epochs}", leave=False, unit="batch")
        train = train_frame_epoch(model, loader, preprocess, loss_fn, optimizer, device, progress=bar,
                                  after_step=ema.update_parameters if ema is not None else None)
        scheduler.step()
        if ema is not None:
            _recalibrate(ema.module, dataset.samples, preprocess, device, stage.batch_size, config.seed + epoch)
        logits, _ = predict_frames(evaluated, (decode_crop(s.png) for s in val_samples), preprocess, device)
        val = binary_report(val_labels, fake_probabilities(logits, card.fake_index), 0.5)
        improved = early.step(val["log_loss"])
        if improved:
            best_state = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
        log.write({"stage": "frame", "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0],
                   **{f"train_{k}": v for k, v in train.items()},
                   "val_auc": val["auc"], "val_log_loss": val["log_loss"], "val_accuracy": val["accuracy"],
                   "best": improved})
        _save_state(f"{out}/state.pt", config, epoch, model, optimizer, scheduler, early, best_state, ema)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model


def _recalibrate(model, samples, preprocess, device, batch_size: int, seed: int, batches: int = 16) -> None:
    """BatchNorm statistics of the weight average, from un-augmented training crops."""
    loader = crop_loader(CropDataset(samples), batch_size, shuffle=True, workers=0, seed=seed)
    calibrate_batchnorm(model, (preprocess(crops).to(device) for crops, _, _ in itertools.islice(loader, batches)))


def _save_state(path, config, epoch, model, optimizer, scheduler, early, best_state, ema=None) -> None:
    state = {
        "format": "deepfake-scan-training-state",
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "early_stopping": early.state_dict(),
        "best_model": best_state,
        "ema": ema.state_dict() if ema is not None else None,
    }
    with fsspec.open(path + ".tmp", "wb") as f:
        torch.save(state, f)
    fs, local = fsspec.core.url_to_fs(path)
    fs.mv(local + ".tmp", local)


def _load_state(path: str) -> dict:
    with fsspec.open(path, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    if state.get("format") != "deepfake-scan-training-state":
        raise ValueError(f"{path} is not a deepfake-scan training state file")
    return state
