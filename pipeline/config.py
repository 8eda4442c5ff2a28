"""Scan configuration: YAML in configs/ -> validated dataclasses -> overrides.

Every key has one meaning and one spelling. Loading rejects unknown keys and
wrong types with a one-line ``ConfigError`` before any work starts, and the
effective configuration is written beside a job's outputs so a run can be
reproduced with ``--config OUT_DIR/config.yaml``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, TypeVar, Union

import fsspec
import yaml

from models.crops import ALIGNED, CropSpec

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration the user wrote cannot be used; the message says why, in one line."""


@dataclass
class SamplingConfig:
    """Which frames of a video are decoded."""

    policy: str = "clips"  # "clips": K clips of consecutive frames; "uniform": evenly spaced frames
    clip_len: int = 25
    clip_every_s: float = 5.0  # one more clip for every this many seconds of video
    max_clips: int = 4
    snap_to_keyframes: bool = True  # start clips on a keyframe near the planned start (no decode wasted)

    def validate(self) -> None:
        _choice("sampling.policy", self.policy, ("clips", "uniform"))
        _positive("sampling.clip_len", self.clip_len)
        _positive("sampling.clip_every_s", self.clip_every_s)
        _positive("sampling.max_clips", self.max_clips)


@dataclass
class DecodeConfig:
    """Decoders, their isolation and the limits on what is decoded."""

    # Tried in order: a later decoder reads the file when an earlier one fails, crashes or hangs.
    decoders: list[str] = field(default_factory=lambda: ["decord", "pyav"])
    isolate: bool = True  # decode in a child process (false: in-process, for debugging only)
    timeout_s: float = 120.0  # per input and decoder; the child is killed after this
    memory_mb: int = 4096  # address-space limit of the decoder process (0: none)
    max_side: int = 1920  # larger frames are downscaled inside the decoder
    max_pixels: int = 40_000_000  # larger frames (over 8K UHD) are refused: status too_large
    max_file_mb: float = 20480.0  # larger files are refused before reading: status too_large
    max_duration_s: float = 14400.0  # longer videos are refused: status too_large
    threads: int = 0  # decoding threads per decoder process; 0: the decoder's default (decord 1, FFmpeg per core)

    def validate(self) -> None:
        from transforms.decoders import validate_decoder_name

        if not self.decoders:
            raise ConfigError("decode.decoders must name at least one decoder")
        for name in self.decoders:
            try:
                validate_decoder_name(name)
            except ValueError as e:
                raise ConfigError(f"decode.decoders: {e}") from None
        _positive("decode.timeout_s", self.timeout_s)
        _non_negative("decode.memory_mb", self.memory_mb)
        if 0 < self.memory_mb < 512:
            raise ConfigError(f"decode.memory_mb must be 0 (no limit) or at least 512, got {self.memory_mb}")
        _positive("decode.max_side", self.max_side)
        _positive("decode.max_pixels", self.max_pixels)
        _positive("decode.max_file_mb", self.max_file_mb)
        _positive("decode.max_duration_s", self.max_duration_s)
        _non_negative("decode.threads", self.threads)


@dataclass
class FacesConfig:
    """Face detection (MTCNN), tracking, and which faces are big enough to judge."""

    detect_size: int = 640  # frames are downscaled so the longer side is at most this for detection
    # Smallest face detected, in source pixels (shorter box side); scaled with the detection
    # copy's downscale, but MTCNN cannot see below its 12-px window in that copy.
    min_face_size: int = 20
    # Tracks whose face (median longer box side, source pixels) is smaller are reported, not scored.
    min_judge_size: int = 24
    min_confidence: float = 0.9
    detect_every: int = 12  # detect on every Nth frame of a clip (and the last), interpolate between; 1: all
    interpolate_min_iou: float = 0.75  # two detections that agree less than this: the gap between is bisected
    detect_threads: int = 0  # CPU threads for MTCNN while the decoder reads ahead; 0: the worker's cores but one
    mtcnn_thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])
    # Crops are cut as the checkpoint's card says (policy, size, margins). These two are only
    # an assertion: set, they must agree with the card, or the command stops before any work.
    crop_size: Optional[int] = None  # must equal the card's input_size
    margin: Optional[float] = None  # must equal an aligned card's crop_margin (box cards: leave unset)
    track_iou: float = 0.3
    track_max_gap: int = 2
    min_track_frames: int = 5  # shorter tracks are dropped (capped at the clip's length)
    max_tracks_per_clip: int = 8  # the longest tracks are kept

    def validate(self) -> None:
        _positive("faces.detect_size", self.detect_size)
        _positive("faces.min_face_size", self.min_face_size)
        _fraction("faces.min_confidence", self.min_confidence)
        _positive("faces.detect_every", self.detect_every)
        _non_negative("faces.detect_threads", self.detect_threads)
        _fraction("faces.interpolate_min_iou", self.interpolate_min_iou)
        if len(self.mtcnn_thresholds) != 3:
            raise ConfigError("faces.mtcnn_thresholds must hold three numbers (P-Net, R-Net, O-Net)")
        for t in self.mtcnn_thresholds:
            _fraction("faces.mtcnn_thresholds", t)
        _positive("faces.min_judge_size", self.min_judge_size)
        if self.crop_size is not None:
            _positive("faces.crop_size", self.crop_size)
        if self.margin is not None and not 0 <= self.margin <= 2:
            raise ConfigError(f"faces.margin must be between 0 and 2, got {self.margin}")
        _fraction("faces.track_iou", self.track_iou)
        _non_negative("faces.track_max_gap", self.track_max_gap)
        _positive("faces.min_track_frames", self.min_track_frames)
        _positive("faces.max_tracks_per_clip", self.max_tracks_per_clip)

    def check_crop(self, crop: CropSpec, source: str) -> None:
        """Stop, in one line, when ``crop_size``/``margin`` are set and disagree with ``crop``.

        ``source`` names where ``crop`` comes from (e.g. ``checkpoint demo.pt``).
        Nothing is ever resized or re-cut to make them agree.
        """
        bad = []
        if self.crop_size is not None and self.crop_size != crop.size:
            bad.append(f"faces.crop_size={self.crop_size}")
        if self.margin is not None and (crop.policy != ALIGNED or abs(self.margin - crop.margin) > 1e-9):
            bad.append(f"faces.margin={self.margin:g}")
        if bad:
            raise ConfigError(
                f"{' and '.join(bad)} {'disagree' if len(bad) > 1 else 'disagrees'} with {source}, whose crops "
                f"are {crop.describe()}: leave faces.crop_size and faces.margin unset (crops are always cut "
                "as the model was trained, never resized)"
            )


@dataclass
class ModelConfig:
    """Which model scores the faces, and where it runs."""

    checkpoint: Optional[str] = None  # a file or URL; None: the bundled default (see README)
    device: str = "auto"  # "auto": CUDA when visible, else CPU; "cuda" fails loudly without a GPU
    batch_size: int = 8  # face crops per model call: 8 is fastest per crop on CPU; ~128 on a GPU
    optimize: bool = True  # CPU: trace and freeze the frame model (TorchScript), about 1.5x faster
    precision: str = "auto"  # "auto": bf16 where native (CUDA Ampere+, CPUs with AMX/AVX512-BF16), else fp32
    torch_threads: int = 0  # intra-op threads per worker (MTCNN and the models); 0: the cores, shared among local workers
    model_copies: Optional[int] = None  # share this many copies across a worker's processes (GPU)

    def validate(self) -> None:
        _choice("model.device", self.device, ("auto", "cpu", "cuda"))
        _positive("model.batch_size", self.batch_size)
        _choice("model.precision", self.precision, ("auto", "fp32", "bf16"))
        _non_negative("model.torch_threads", self.torch_threads)
        if self.model_copies is not None:
            _positive("model.model_copies", self.model_copies)


@dataclass
class AggregateConfig:
    """How face scores become a verdict."""

    strategy: str = "max"  # over an input's tracks: "max", "mean" or "longest"
    threshold: Optional[float] = None  # None: the checkpoint's calibrated threshold

    def validate(self) -> None:
        _choice("aggregate.strategy", self.strategy, ("max", "mean", "longest"))
        if self.threshold is not None:
            _fraction("aggregate.threshold", self.threshold)


@dataclass
class InputsConfig:
    """Which files a directory or glob yields."""

    video_extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"]
    )
    image_extensions: list[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp"])

    def validate(self) -> None:
        for name in ("video_extensions", "image_extensions"):
            for ext in getattr(self, name):
                if not ext.startswith(".") or ext != ext.lower():
                    raise ConfigError(f"inputs.{name}: '{ext}' must be lower case and start with '.'")


@dataclass
class ScanConfig:
    """Everything the scan job can be told."""

    inputs: InputsConfig = field(default_factory=InputsConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()


# ---------------------------------------------------------------- loading


def load_config(cls: type[T], path: Optional[str] = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from its defaults, a YAML file, then ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path:
        data = read_yaml(path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        _set_dotted(data, key.strip(), _parse_value(raw))
    config = from_dict(cls, data)
    config.validate()
    return config


def read_yaml(path: str) -> dict[str, Any]:
    try:
        with fsspec.open(path, "r") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a config dataclass from plain data, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (valid keys here: {', '.join(fields)})"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_config(config: Any, path: str) -> None:
    """Write the effective configuration as YAML (loadable again with ``--config``)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    with fsspec.open(path, "w") as f:
        f.write(text)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {_kind(value)}")
        return [_coerce(args[0], v, key) for v in value]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {_kind(value)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {_kind(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {_kind(value)}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in this module


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got '{value}'")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"config key '{key}' must be positive, got {value}")


def _non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"config key '{key}' must be zero or more, got {value}")


def _fraction(key: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(f"config key '{key}' must be between 0 and 1, got {value}")
