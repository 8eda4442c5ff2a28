"""The model card: the facts about a pair of trained models that travel with their weights.

A card says how to rebuild the models (architectures and their arguments), how
to feed them (input size, normalisation, clip length) and how to read their
output (class names, threshold, temperature). It is stored as plain JSON-able
data inside every checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
AGGREGATORS = ("bilstm", "mean")
CARD_FORMAT_VERSION = 1
# Constructor arguments the checkpoint loader derives itself; a card must not set them.
_DERIVED_FRAME_KWARGS = ("num_classes", "manipulation_classes")
_DERIVED_SEQUENCE_KWARGS = ("input_dim",)


@dataclass
class ModelCard:
    """Architecture, preprocessing and decision facts for one frame + sequence model pair.

    Attributes:
        name: Human-readable model name, e.g. ``"b4-celebdf-v2"``.
        frame_arch: Registered frame model name, e.g. ``"efficientnet-b4"``.
        input_size: Square face-crop side in pixels fed to the frame model.
        mean: Per-channel RGB mean applied after scaling pixels to [0, 1].
        std: Per-channel RGB std applied after subtracting ``mean``.
        class_names: Frame model output classes, in logit order.
        manipulation_classes: Classes of the optional second head that names the method
            behind a fake (empty: no such head).
        fake_class: Which of ``class_names`` means "fake".
        threshold: Fake probability at or above which a video is flagged.
        aggregator: How frame results become a track score: ``"bilstm"`` or ``"mean"``.
        sequence_arch: Registered sequence model name, or None.
        sequence_kwargs: Extra sequence constructor arguments (e.g. ``hidden_dim``).
        frame_kwargs: Extra frame constructor arguments (e.g. ``dropout``).
        embedding_dim: Frame embedding width; 0 means not recorded yet.
        clip_len: Frames sampled per track.
        temperature: Logit temperature for calibrated probabilities.
        training: Free-form summary of how the weights were made (config, data, metrics).
        format_version: Card layout version.
    """

    name: str
    frame_arch: str
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = ("real", "fake")
    fake_class: str = "fake"
    manipulation_classes: tuple[str, ...] = ()
    threshold: float = 0.5
    aggregator: str = "bilstm"
    sequence_arch: str | None = "bilstm"
    sequence_kwargs: dict = field(default_factory=dict)
    frame_kwargs: dict = field(default_factory=dict)
    embedding_dim: int = 0
    clip_len: int = 25
    temperature: float = 1.0
    training: dict = field(default_factory=dict)
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        # Normalise container types (JSON gives lists) and detach from the caller's objects.
        self.mean = _float3("mean", self.mean)
        self.std = _float3("std", self.std)
        self.class_names = tuple(str(c) for c in self.class_names)
        self.manipulation_classes = tuple(str(c) for c in self.manipulation_classes)
        for attr in ("sequence_kwargs", "frame_kwargs", "training"):
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
        if any(s <= 0 for s in self.std):
            problems.append(f"std must be positive, got {self.std}")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            problems.append(f"class_names must be >= 2 distinct names, got {self.class_names}")
        if self.fake_class not in self.class_names:
            problems.append(f"fake_class {self.fake_class!r} is not in class_names {self.class_names}")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must be in (0, 1), got {self.threshold}")
        if self.aggregator not in AGGREGATORS:
            problems.append(f"aggregator must be one of {list(AGGREGATORS)}, got {self.aggregator!r}")
        if self.aggregator == "bilstm" and not self.sequence_arch:
            problems.append("aggregator 'bilstm' needs a sequence_arch")
        if not isinstance(self.embedding_dim, int) or self.embedding_dim < 0:
            problems.append(f"embedding_dim must be an int >= 0, got {self.embedding_dim!r}")
        if not isinstance(self.clip_len, int) or self.clip_len <= 0:
            problems.append(f"clip_len must be a positive int, got {self.clip_len!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be positive, got {self.temperature}")
        if self.format_version != CARD_FORMAT_VERSION:
            problems.append(
                f"format_version {self.format_version} is not supported "
                f"(this code reads {CARD_FORMAT_VERSION})"
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
    def fake_index(self) -> int:
        """Index of ``fake_class`` in ``class_names`` (the logit to read as "fake")."""
        try:
            return self.class_names.index(self.fake_class)
        except ValueError:
            raise ValueError(
                f"fake_class {self.fake_class!r} is not in class_names {self.class_names}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON-able data (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name), f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Rebuild a card from :meth:`to_dict` output.

        Raises:
            ValueError: On unknown keys, missing required keys or invalid values.
        """
        if not isinstance(d, dict):
            raise ValueError(f"model card must be a dict, got {type(d).__name__}")
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


def _float3(name: str, value: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"model card {name} must be 3 numbers, got {value!r}") from None
    if len(values) != 3:
        raise ValueError(f"model card {name} must be 3 numbers (R, G, B), got {value!r}")
    return values  # type: ignore[return-value]


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
