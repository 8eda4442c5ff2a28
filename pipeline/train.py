"""The training job: face crops in, one scan checkpoint out.

Stage 1 trains the EfficientNet frame model on labelled crops (with blur/JPEG
augmentation and self-blended pseudo-fakes made from real crops); stage 2
freezes it and trains the BiLSTM on each track's sequence of embeddings. The
frame model's temperature and the verdict threshold are calibrated on the
validation split. Outputs under ``config.output``: ``config.yaml``,
``metrics.jsonl`` (one line per epoch), ``state.pt`` (resumable training state,
written every epoch) and ``model.pt`` (the checkpoint ``deepfake-scan scan`` loads).
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

from models.augment import AugmentConfig, TrainAugment
from models.card import ModelCard
from models.checkpoint import load_checkpoint, save_checkpoint
from models.device import resolve_device
from models.frame import calibrate_batchnorm
from models.losses import FrameLoss
from models.metrics import binary_report, calibrated_threshold, fit_temperature
from models.preprocess import FacePreprocess, decode_crop
from models.registry import create_model
from models.training import (
    CropDataset,
    CropSample,
    EarlyStopping,
    crop_loader,
    predict_frames,
    predict_sequences,
    set_batchnorm_momentum,
    set_seed,
    train_frame_epoch,
    train_sequence_epoch,
    weight_ema,
)
from pipeline.config import dump_config
from transforms.parquet_sink import read_table
from pipeline.train_config import TrainConfig

logger = logging.getLogger(__name__)

CLASSES = ("real", "fake")


def read_faces(faces_dir: str) -> list[dict]:
    """The face table written by the extraction job, without decoding crops."""
    table = read_table(faces_dir.rstrip("/") + "/faces")
    columns = ["video_id", "split", "label", "manipulation", "track_id", "clip_index", "frame_index", "crop_png"]
    return table.select(columns).to_pylist()


def group_tracks(rows: list[dict], max_tracks_per_video: int) -> dict[str, list[tuple[dict, list[dict]]]]:
    """split -> [(video meta, crops of one track in frame order)], longest tracks first per video."""
    tracks: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        tracks[(row["split"], row["video_id"], row["track_id"])].append(row)
    per_video: dict[tuple, list[list[dict]]] = defaultdict(list)
    for (split, video_id, _), crops in tracks.items():
        per_video[(split, video_id)].append(sorted(crops, key=lambda r: r["frame_index"]))
    out: dict[str, list] = defaultdict(list)
    for (split, _), video_tracks in sorted(per_video.items()):
        video_tracks.sort(key=len, reverse=True)
        for crops in video_tracks[:max_tracks_per_video]:
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
    set_seed(config.seed)
    device = resolve_device(config.device)
    out = config.output.rstrip("/")
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    dump_config(config, f"{out}/config.yaml")
    resume = _load_state(config.resume) if config.resume else None
    log = MetricsLog(f"{out}/metrics.jsonl", append=resume is not None)

    tracks = group_tracks(read_faces(config.data.faces), config.data.max_tracks_per_video)
    summary = data_summary(tracks)
    logger.info("training data: %s", summary)
    for split in ("train", "val"):
        if not tracks.get(split):
            raise ValueError(f"the face table has no '{split}' crops; extract a dataset with a {split} split")
    manipulations = _manipulation_classes(config, tracks["train"])
    card = ModelCard(
        name=config.model.name,
        frame_arch=config.model.arch,
        input_size=config.model.input_size,
        class_names=CLASSES,
        manipulation_classes=manipulations,
        frame_kwargs={"dropout": config.model.dropout},
        aggregator="bilstm" if config.sequence.enabled else "mean",
        sequence_arch="bilstm" if config.sequence.enabled else None,
        sequence_kwargs={"hidden_dim": config.sequence.hidden_dim} if config.sequence.enabled else {},
    )
    preprocess = FacePreprocess.from_card(card)
    frame_model = set_batchnorm_momentum(_initial_frame_model(config, card)).to(device)
    frame_model = _train_frames(config, frame_model, tracks, preprocess, manipulations, device, log, resume, out)

    # Calibration and the sequence stage use the frozen frame model without augmentation.
    val_items = tracks["val"]
    val_logits, val_emb = _track_outputs(frame_model, val_items, preprocess, device)
    val_frame_logits = np.concatenate([l for l in val_logits])
    val_frame_labels = np.concatenate([[_target(m)] * len(l) for (m, _), l in zip(val_items, val_logits)])
    temperature = float(fit_temperature(val_frame_logits, val_frame_labels))
    card.temperature = temperature
    frame_probs = [_softmax_fake(l, temperature) for l in val_logits]

    sequence_model = None
    if config.sequence.enabled:
        _, train_emb = _track_outputs(frame_model, tracks["train"], preprocess, device)
        sequence_model, track_probs = _train_sequence(config, card, train_emb, tracks["train"], val_emb, val_items, log)
    else:
        track_probs = [float(p.mean()) for p in frame_probs]
    video_scores, video_labels = _video_scores(val_items, track_probs)
    card.threshold = float(np.clip(calibrated_threshold(video_scores, video_labels), 0.01, 0.99))
    frame_report = binary_report(val_frame_labels, np.concatenate(frame_probs), 0.5)
    video_report = binary_report(video_labels, video_scores, card.threshold)
    card.training = {
        "config": dataclasses.asdict(config),
        "data": summary,
        "validation": {"frame": frame_report, "video": video_report},
        "temperature": temperature,
        "threshold": card.threshold,
        "seconds": round(time.time() - started, 1),
    }
    log.write({"stage": "calibration", "temperature": temperature, "threshold": card.threshold,
               "val_video_auc": video_report["auc"], "val_frame_auc": frame_report["auc"]})
    path = f"{out}/model.pt"
    sha = save_checkpoint(path, card, frame_model.cpu(), sequence_model, half=False)
    logger.info("checkpoint written to %s (sha256 %s)", path, sha[:12])
    return path


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


def _target(meta: dict) -> int:
    return CLASSES.index(meta["label"])


def _samples(items: list, count: int, rng: Optional[np.random.Generator]) -> list[CropSample]:
    samples = []
    for meta, crops in items:
        for row in pick_frames(crops, count, rng):
            samples.append(CropSample(row["crop_png"], _target(meta), meta["video_id"], meta["manipulation"] or ""))
    return samples


def _train_frames(config, model, tracks, preprocess, manipulations, device, log, resume, out):
    stage = config.frame
    augment = TrainAugment(config=AugmentConfig(**_augment_kwargs(config)))
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
        val = binary_report(val_labels, _softmax_fake(logits, 1.0), 0.5)
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


def extraction_margin(faces_dir: str) -> float:
    """The alignment margin the face table was made with (self-blending needs it)."""
    from pipeline.config import ScanConfig, load_config

    path = faces_dir.rstrip("/") + "/config.yaml"
    fs, local = fsspec.core.url_to_fs(path)
    return load_config(ScanConfig, path).faces.margin if fs.exists(local) else ScanConfig().faces.margin


def _augment_kwargs(config: TrainConfig) -> dict:
    a = config.augment
    return dict(margin=extraction_margin(config.data.faces), blur_p=a.blur_p, blur_sigma=tuple(a.blur_sigma), jpeg_p=a.jpeg_p, jpeg_quality=tuple(a.jpeg_quality),
                flip_p=a.flip_p, color_jitter_p=a.color_jitter_p, downscale_p=a.downscale_p,
                downscale_range=tuple(a.downscale_range), sbi_p=a.sbi_p)


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


def _softmax_fake(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True))[:, CLASSES.index("fake")]


def _track_outputs(model, items, preprocess, device):
    """Per track: frame logits ``(T, C)`` and embeddings ``(T, D)`` of all its crops."""
    crops = [decode_crop(r["crop_png"]) for _, track in items for r in track]
    logits, embeddings = predict_frames(model, crops, preprocess, device)
    out_l, out_e, start = [], [], 0
    for _, track in items:
        out_l.append(logits[start : start + len(track)])
        out_e.append(embeddings[start : start + len(track)])
        start += len(track)
    return out_l, out_e


def _train_sequence(config, card, train_emb, train_items, val_emb, val_items, log):
    stage = config.sequence
    torch.manual_seed(config.seed)
    model = create_model(card.sequence_arch, input_dim=train_emb[0].shape[1], **card.sequence_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr)
    early = EarlyStopping(stage.patience, mode="min")
    train_labels = np.array([_target(m) for m, _ in train_items])
    val_labels = np.array([_target(m) for m, _ in val_items])
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
    model.eval()
    return model, [float(p) for p in predict_sequences(model, val_emb)]


def _video_scores(items, track_probs):
    """Video-level scores as the scan computes them (max over tracks) and labels."""
    scores: dict[str, float] = {}
    labels: dict[str, int] = {}
    for (meta, _), p in zip(items, track_probs):
        scores[meta["video_id"]] = max(scores.get(meta["video_id"], 0.0), p)
        labels[meta["video_id"]] = _target(meta)
    ids = sorted(scores)
    return np.array([scores[i] for i in ids]), np.array([labels[i] for i in ids])
