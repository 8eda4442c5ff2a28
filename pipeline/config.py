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

from transforms.settings import (  # noqa: F401  (the stage settings are part of ScanConfig)
    ConfigError,
    DecodeConfig,
    FacesConfig,
    InputsConfig,
    SamplingConfig,
    check_choice,
    check_fraction,
    check_non_negative,
    check_positive,
)

T = TypeVar("T")


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
        check_choice("model.device", self.device, ("auto", "cpu", "cuda"))
        check_positive("model.batch_size", self.batch_size)
        check_choice("model.precision", self.precision, ("auto", "fp32", "bf16"))
        check_non_negative("model.torch_threads", self.torch_threads)
        if self.model_copies is not None:
            check_positive("model.model_copies", self.model_copies)


@dataclass
class AggregateConfig:
    """How face scores become a verdict."""

    strategy: str = "max"  # over an input's tracks: "max", "mean" or "longest"
    threshold: Optional[float] = None  # None: the checkpoint's calibrated threshold

    def validate(self) -> None:
        check_choice("aggregate.strategy", self.strategy, ("max", "mean", "longest"))
        if self.threshold is not None:
            check_fraction("aggregate.threshold", self.threshold)


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
