"""The model card: the facts about a pair of trained models that travel with their weights.

A card says how to rebuild the models (architectures and their arguments), how
to feed them (crop policy and margins, input size, pixel range, normalisation)
and how to read their output (class names, threshold and the operating point it
was chosen for, temperature, aggregator). It is stored as plain JSON-able data
inside every checkpoint, so a scan, ``extract``, ``evaluate`` and the report
all prepare a model's faces as it was trained on them (like timm's pretrained cfg).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from models.aggregation import BILSTM, MEAN, SBI
from models.crops import CropSpec
from models.labels import CLASSES, FAKE

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# How frame results become a verdict: the BiLSTM over each track, the mean of a
# track's frame probabilities, or the SBI authors' rule (per frame the maximum
# over faces at least half the size of the largest, per video the mean over frames).
AGGREGATORS = (BILSTM, MEAN, SBI)  # "frame" is for stills, never a card's
# Version 2 added the crop policy, pixel range and operating point; version 1
# cards (aligned crops, margin 0.25, pixels in [0, 1]) still load.
CARD_FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
# Keys older cards carry that no longer mean anything: dropped, quietly, when a card is read.
# clip_len: frames per track, which the scan's sampling config decides, never the card.
_RETIRED_KEYS = ("clip_len",)
# Constructor arguments the checkpoint loader derives itself; a card must not set them.
_DERIVED_FRAME_KWARGS = ("num_classes", "manipulation_classes")
_DERIVED_SEQUENCE_KWARGS = ("input_dim",)


@dataclass
class ModelCard:
    """Architecture, preprocessing and decision facts for one frame + sequence model pair.

    Attributes:
        name: Human-readable model name, e.g. ``"b4-celebdf-v2"``.
        frame_arch: Registered frame model name, e.g. ``"efficientnet-b4"``.
        input_size: Square face-crop side in pixels fed to the frame model; crops are
            cut at this size, never resized to fit.
        crop_policy: ``"aligned"``: five-point similarity onto our template with
            ``crop_margin`` context; ``"box"``: the detector box grown by
            ``box_margins`` and resized to ``input_size`` without keeping the aspect ratio.
        crop_margin: ``aligned`` only: context on each side, as a fraction of the
            template's tight face box.
        box_margins: ``box`` only: growth of the box on the left, top, right and
            bottom, as fractions of its width (left/right) or height (top/bottom).
        pixel_range: uint8 0..255 maps linearly onto this range before ``mean``/``std``.
        mean: Per-channel RGB mean subtracted after scaling to ``pixel_range``
            ((0, 0, 0) with std (1, 1, 1): no normalisation).
        std: Per-channel RGB std applied after subtracting ``mean``.
        class_names: Frame model output classes, in logit order.
        manipulation_classes: Classes of the optional second head that names the method
            behind a fake (empty: no such head).
        fake_class: Which of ``class_names`` means "fake".
        threshold: Fake probability at or above which a video is flagged.
        image_threshold: The same for a still image, whose score is a face's frame
            probability rather than the aggregator's video score (another scale);
            None: ``threshold``.
        operating_point: How ``threshold`` was chosen and what it gave on validation,
            e.g. ``{"method": "target_fpr", "target_fpr": 0.01, "val_fpr": 0.0,
            "val_tpr": 0.93, "val_videos": 40}``; empty when not recorded.
        precision: The arithmetic the weights must run in to score as published
            (``"fp32"`` for weights whose authors ran fp32); ``None``: the scan's
            ``model.precision`` decides, ``auto`` meaning bf16 where it is native.
        aggregator: How frame results become a verdict: ``"bilstm"``, ``"mean"`` or
            ``"sbi"`` (see ``AGGREGATORS``).
        sequence_arch: Registered sequence model name, or None.
        sequence_kwargs: Extra sequence constructor arguments (e.g. ``hidden_dim``).
        frame_kwargs: Extra frame constructor arguments (e.g. ``dropout``).
        embedding_dim: Frame embedding width; 0 means not recorded yet.
        temperature: Logit temperature for calibrated probabilities.
        training: Free-form summary of how the weights were made (config, data, metrics).
        format_version: Card layout version.
    """

    name: str
    frame_arch: str
    input_size: int
    crop_policy: str = "aligned"
    crop_margin: float = 0.25
    box_margins: tuple[float, float, float, float] = (0.125, 0.125, 0.125, 0.125)
    pixel_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = CLASSES
    fake_class: str = FAKE
    manipulation_classes: tuple[str, ...] = ()
    threshold: float = 0.5
    image_threshold: float | None = None
    operating_point: dict = field(default_factory=dict)
    precision: str | None = None
    aggregator: str = "bilstm"
    sequence_arch: str | None = "bilstm"
    sequence_kwargs: dict = field(default_factory=dict)
    frame_kwargs: dict = field(default_factory=dict)
    embedding_dim: int = 0
    temperature: float = 1.0
    training: dict = field(default_factory=dict)
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        # Normalise container types (JSON gives lists) and detach from the caller's objects.
        self.mean = _floats("mean", self.mean, 3)
        self.std = _floats("std", self.std, 3)
        self.box_margins = _floats("box_margins", self.box_margins, 4)
        self.pixel_range = _floats("pixel_range", self.pixel_range, 2)
        self.crop_margin = float(self.crop_margin)
        self.class_names = tuple(str(c) for c in self.class_names)
        self.manipulation_classes = tuple(str(c) for c in self.manipulation_classes)
        for attr in ("sequence_kwargs", "frame_kwargs", "training", "operating_point"):
            value = getattr(self, attr)
            if not isinstance(value, dict):
                raise ValueError(f"model card {attr} must be a dict, got {type(value).__name__}")
            setattr(self, attr, _plain(value, attr))
        self._validate()

    def _validate(self) -> None:
        problems = []
        if not self.name:
            problems.append("name must not be empty")
        if not self.frame_arch:
            problems.append("frame_arch must not be empty")
        if not isinstance(self.input_size, int) or self.input_size <= 0:
            problems.append(f"input_size must be a positive int, got {self.input_size!r}")
        else:
            try:
                self.crop  # CropSpec is the one definition of a valid crop
            except ValueError as err:
                problems.append(str(err))
        if not self.pixel_range[0] < self.pixel_range[1]:
            problems.append(f"pixel_range must be (low, high) with low < high, got {self.pixel_range}")
        if any(s <= 0 for s in self.std):
            problems.append(f"std must be positive, got {self.std}")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            problems.append(f"class_names must be >= 2 distinct names, got {self.class_names}")
        if self.fake_class not in self.class_names:
            problems.append(f"fake_class {self.fake_class!r} is not in class_names {self.class_names}")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1), got {self.threshold}")
        if self.image_threshold is not None and not 0.0 < self.image_threshold < 1.0:
            problems.append(f"image_threshold must be in (0, 1), got {self.image_threshold}")
        if self.precision not in (None, "fp32", "bf16"):
            problems.append(f"precision must be null, 'fp32' or 'bf16', got {self.precision!r}")
        if self.aggregator not in AGGREGATORS:
            problems.append(f"aggregator must be one of {list(AGGREGATORS)}, got {self.aggregator!r}")
        if self.aggregator == "bilstm" and not self.sequence_arch:
            problems.append("aggregator 'bilstm' needs a sequence_arch")
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 0:
            problems.append(f"embedding_dim must be an int >= 0, got {self.embedding_dim!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be positive, got {self.temperature}")
        if self.format_version not in READABLE_FORMAT_VERSIONS:
            problems.append(
                f"format_version {self.format_version} is not supported "
                f"(this code reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))})"
            )
        for key in _DERIVED_FRAME_KWARGS:
            if key in self.frame_kwargs:
                problems.append(f"frame_kwargs must not set {key!r} (derived from the card)")
        for key in _DERIVED_SEQUENCE_KWARGS:
            if key in self.sequence_kwargs:
                problems.append(f"sequence_kwargs must not set {key!r} (derived from the card)")
        if problems:
            raise ValueError("invalid model card: " + "; ".join(problems))

    @property
    def crop(self) -> CropSpec:
        """How this model's face crops are cut (policy, size, margins)."""
        return CropSpec(
            policy=self.crop_policy,
            size=self.input_size,
            margin=self.crop_margin,
            box_margins=self.box_margins,
        )

    @property
    def fake_index(self) -> int:
        """Index of ``fake_class`` in ``class_names`` (the logit to read as "fake")."""
        try:
            return self.class_names.index(self.fake_class)
        except ValueError:
            raise ValueError(
                f"fake_class {self.fake_class!r} is not in class_names {self.class_names}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON-able data (tuples become lists), in the current format."""
        d = {f.name: _plain(getattr(self, f.name), f.name) for f in dataclasses.fields(self)}
        d["format_version"] = CARD_FORMAT_VERSION  # older cards are upgraded when written again
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Rebuild a card from :meth:`to_dict` output (an older card's retired keys are dropped).

        Raises:
            ValueError: On unknown keys, missing required keys or invalid values.
        """
        if not isinstance(d, dict):
            raise ValueError(f"model card must be a dict, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k not in _RETIRED_KEYS}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown model card keys: {unknown}; valid keys: {sorted(fields)}")
        required = [
            n for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in d]
        if missing:
            raise ValueError(f"model card is missing required keys: {missing}")
        try:
            return cls(**copy.deepcopy(d))
        except TypeError as err:  # e.g. a string where a number belongs
            raise ValueError(f"invalid model card: {err}") from None


def _floats(name: str, value: Any, count: int) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"model card {name} must be {count} numbers, got {value!r}") from None
    if len(values) != count:
        raise ValueError(f"model card {name} must be {count} numbers, got {value!r}")
    return values


def _plain(value: Any, path: str) -> Any:
    """Deep copy of ``value`` using only JSON types; numpy/torch scalars become Python numbers."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"model card {path} has a non-string key {k!r}")
            out[k] = _plain(v, f"{path}.{k}")
        return out
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return _plain(item(), path)
    raise TypeError(f"model card {path} holds {type(value).__name__}, which is not JSON-able")
