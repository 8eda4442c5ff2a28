"""Training configuration: ``configs/train_*.yaml`` -> validated dataclasses -> overrides."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from models.augment import AugmentConfig
from models.crops import POLICIES, CropSpec
from models.training import PRECISIONS
from models.validation_families import VALIDATION_FAMILIES
from transforms.settings import ConfigError, check_choice, check_fraction, check_non_negative, check_positive

PRETRAINED = ("imagenet",)
SELECT_ON = ("log_loss", "auc")  # frame.select_on: the validation figure early stopping follows


@dataclass
class TrainDataConfig:
    faces: str = "outputs/faces"  # FACES_DIR written by `deepfake-scan extract`
    frames_per_track: int = 8  # crops drawn per track and epoch for the frame model
    val_frames_per_track: int = 8
    max_tracks_per_video: int = 2
    # Crops each loader worker holds to shuffle the row groups' crops (memory: this many
    # encoded crops per worker, ~70 KB each at 224 px, plus the row group being read).
    shuffle_buffer: int = 1024
    # Validation-only manipulations (models.validation_families): every real validation crop
    # is also scored once per family, manipulated by it, as a fake. Needs aligned crops.
    val_families: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.faces:
            raise ConfigError("data.faces must name the folder written by 'deepfake-scan extract'")
        check_positive("data.frames_per_track", self.frames_per_track)
        check_positive("data.val_frames_per_track", self.val_frames_per_track)
        check_positive("data.max_tracks_per_video", self.max_tracks_per_video)
        check_positive("data.shuffle_buffer", self.shuffle_buffer)
        for name in self.val_families:
            check_choice("data.val_families", name, VALIDATION_FAMILIES)
        if len(set(self.val_families)) != len(self.val_families):
            raise ConfigError(f"config key 'data.val_families' names a family twice: {self.val_families}")


@dataclass
class TrainModelConfig:
    name: str = "deepfake-scan-model"  # written to verdicts as model_name
    arch: str = "efficientnet-b0"
    input_size: int = 224
    dropout: float = 0.2
    manipulation_head: bool = False  # also learn which method made a fake
    init: Optional[str] = None  # start from this checkpoint (fine-tuning, second pass)
    pretrained: Optional[str] = None  # "imagenet": the backbone starts from ImageNet weights
    # How the face table's crops were cut (`deepfake-scan extract` records it); must agree.
    crop_policy: str = "aligned"  # "aligned" (five-point similarity) or "box" (grown detector box)
    crop_margin: float = 0.25  # aligned: context on each side, as a fraction of the face box
    box_margins: list[float] = field(default_factory=lambda: [0.125] * 4)  # box: left, top, right, bottom

    @property
    def crop(self) -> CropSpec:
        """The crops this model is trained on (and its card will name)."""
        return CropSpec(self.crop_policy, self.input_size, self.crop_margin, tuple(self.box_margins))

    def validate(self) -> None:
        from models.registry import list_models

        check_choice("model.arch", self.arch, list_models("frame"))
        check_positive("model.input_size", self.input_size)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"config key 'model.dropout' must be in [0, 1), got {self.dropout}")
        if self.pretrained is not None:
            from models.pretrained import list_pretrained

            check_choice("model.pretrained", self.pretrained, PRETRAINED)
            if self.init:
                raise ConfigError("model.pretrained and model.init both choose the starting weights; set one")
            if self.arch not in list_pretrained():
                raise ConfigError(f"model.pretrained={self.pretrained} needs an architecture with ImageNet "
                                  f"weights ({', '.join(list_pretrained())}); model.arch is {self.arch}")
        check_choice("model.crop_policy", self.crop_policy, POLICIES)
        try:
            self.crop  # CropSpec is the one definition of a valid crop
        except ValueError as e:
            raise ConfigError(f"config section 'model' (crop_margin, box_margins): {e}") from None


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
    workers: int = 1  # DataLoader processes reading and decoding crops (0: the training process itself)
    # Autocast: auto = bf16 on a GPU that has it, fp16 with a gradient scaler on older GPUs, fp32 on the CPU.
    precision: str = "auto"
    save_every_steps: int = 500  # also write state.pt within an epoch (0: at epoch ends only)
    # What early stopping keeps: the lowest validation log loss, or the highest validation AUC.
    # Calibration fits a temperature afterwards, so an over-confident epoch that ranks better
    # is not lost to its log loss with "auc".
    select_on: str = "log_loss"

    def validate(self) -> None:
        check_positive("frame.epochs", self.epochs)
        check_positive("frame.batch_size", self.batch_size)
        check_positive("frame.lr", self.lr)
        check_non_negative("frame.weight_decay", self.weight_decay)
        check_positive("frame.patience", self.patience)
        check_fraction("frame.label_smoothing", self.label_smoothing)
        check_non_negative("frame.contrastive_weight", self.contrastive_weight)
        check_positive("frame.contrastive_margin", self.contrastive_margin)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"config key 'frame.ema_decay' must be in [0, 1), got {self.ema_decay}")
        check_non_negative("frame.workers", self.workers)
        check_choice("frame.precision", self.precision, PRECISIONS)
        check_non_negative("frame.save_every_steps", self.save_every_steps)
        check_choice("frame.select_on", self.select_on, SELECT_ON)


@dataclass
class SequenceStageConfig:
    enabled: bool = True
    hidden_dim: int = 128
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 8
    # Keep the BiLSTM only if validation scores videos better with it than with the
    # mean of frame probabilities; false keeps it whatever validation says.
    select_on_validation: bool = True

    def validate(self) -> None:
        check_positive("sequence.hidden_dim", self.hidden_dim)
        check_positive("sequence.epochs", self.epochs)
        check_positive("sequence.batch_size", self.batch_size)
        check_positive("sequence.lr", self.lr)
        check_positive("sequence.patience", self.patience)


@dataclass
class CalibrationConfig:
    """How the verdict threshold is chosen on the validation videos (models.metrics.operating_point)."""

    target_fpr: float = 0.01  # largest share of validation reals flagged fake

    def validate(self) -> None:
        if not 0 < self.target_fpr < 1:
            raise ConfigError(f"config key 'calibration.target_fpr' must be between 0 and 1 (exclusive), "
                              f"got {self.target_fpr}")


@dataclass
class TrainConfig:
    """Everything the training job can be told."""

    output: str = "outputs/train"
    seed: int = 0
    device: str = "auto"
    resume: Optional[str] = None  # a training state file (OUTPUT/state.pt) to continue from
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # defined, with its defaults, in models/augment.py
    frame: FrameStageConfig = field(default_factory=FrameStageConfig)
    sequence: SequenceStageConfig = field(default_factory=SequenceStageConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def validate(self) -> None:
        check_choice("device", self.device, ("auto", "cpu", "cuda"))
        for section in (self.data, self.model, self.frame, self.sequence, self.calibration):
            section.validate()
        try:
            self.augment.validate()
        except ValueError as e:  # models/ knows no ConfigError
            raise ConfigError(f"config section 'augment': {e}") from None
