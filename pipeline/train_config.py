"""Training configuration: ``configs/train_*.yaml`` -> validated dataclasses -> overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from pipeline.config import ConfigError, _choice, _fraction, _non_negative, _positive


@dataclass
class TrainDataConfig:
    faces: str = "outputs/faces"  # FACES_DIR written by `deepfake-scan extract`
    frames_per_track: int = 8  # crops drawn per track and epoch for the frame model
    val_frames_per_track: int = 8
    max_tracks_per_video: int = 2

    def validate(self) -> None:
        if not self.faces:
            raise ConfigError("data.faces must name the folder written by 'deepfake-scan extract'")
        _positive("data.frames_per_track", self.frames_per_track)
        _positive("data.val_frames_per_track", self.val_frames_per_track)
        _positive("data.max_tracks_per_video", self.max_tracks_per_video)


@dataclass
class TrainModelConfig:
    name: str = "deepfake-scan-model"  # written to verdicts as model_name
    arch: str = "efficientnet-b0"
    input_size: int = 224
    dropout: float = 0.2
    manipulation_head: bool = False  # also learn which method made a fake
    init: Optional[str] = None  # start from this checkpoint (fine-tuning, second pass)

    def validate(self) -> None:
        from models.registry import list_models

        _choice("model.arch", self.arch, list_models("frame"))
        _positive("model.input_size", self.input_size)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"config key 'model.dropout' must be in [0, 1), got {self.dropout}")


@dataclass
class AugmentSettings:
    """Augmentations of training crops (see models/augment.py)."""

    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 3.0])
    jpeg_p: float = 0.5
    jpeg_quality: list[int] = field(default_factory=lambda: [30, 100])
    flip_p: float = 0.5
    color_jitter_p: float = 0.3
    downscale_p: float = 0.2
    downscale_range: list[float] = field(default_factory=lambda: [0.5, 0.9])
    sbi_p: float = 0.5  # real crops turned into self-blended pseudo-fakes

    def validate(self) -> None:
        for key in ("blur_p", "jpeg_p", "flip_p", "color_jitter_p", "downscale_p", "sbi_p"):
            _fraction(f"augment.{key}", getattr(self, key))
        for key in ("blur_sigma", "jpeg_quality", "downscale_range"):
            value = getattr(self, key)
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"config key 'augment.{key}' must be [low, high], got {value}")


@dataclass
class FrameStageConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3
    label_smoothing: float = 0.0
    contrastive_weight: float = 0.0  # DeepFD pairwise loss on embeddings (0: off)
    contrastive_margin: float = 1.0
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights
    workers: int = 1

    def validate(self) -> None:
        _positive("frame.epochs", self.epochs)
        _positive("frame.batch_size", self.batch_size)
        _positive("frame.lr", self.lr)
        _non_negative("frame.weight_decay", self.weight_decay)
        _positive("frame.patience", self.patience)
        _fraction("frame.label_smoothing", self.label_smoothing)
        _non_negative("frame.contrastive_weight", self.contrastive_weight)
        _positive("frame.contrastive_margin", self.contrastive_margin)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"config key 'frame.ema_decay' must be in [0, 1), got {self.ema_decay}")
        _non_negative("frame.workers", self.workers)


@dataclass
class SequenceStageConfig:
    enabled: bool = True
    hidden_dim: int = 128
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 8

    def validate(self) -> None:
        _positive("sequence.hidden_dim", self.hidden_dim)
        _positive("sequence.epochs", self.epochs)
        _positive("sequence.batch_size", self.batch_size)
        _positive("sequence.lr", self.lr)
        _positive("sequence.patience", self.patience)


@dataclass
class TrainConfig:
    """Everything the training job can be told."""

    output: str = "outputs/train"
    seed: int = 0
    device: str = "auto"
    resume: Optional[str] = None  # a training state file (OUTPUT/state.pt) to continue from
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    frame: FrameStageConfig = field(default_factory=FrameStageConfig)
    sequence: SequenceStageConfig = field(default_factory=SequenceStageConfig)

    def validate(self) -> None:
        _choice("device", self.device, ("auto", "cpu", "cuda"))
        for section in (self.data, self.model, self.augment, self.frame, self.sequence):
            section.validate()
