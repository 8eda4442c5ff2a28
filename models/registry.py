"""Model constructors registered by name.

A module that defines models registers each constructor with
:func:`register_model`; everything else builds models with :func:`create_model`
so an architecture name stored in a model card maps to exactly one constructor.
The registry imports the model modules lazily, so ``create_model`` and
``list_models`` work without importing them first.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Callable, TypeVar

from torch import nn

logger = logging.getLogger(__name__)

KINDS = ("frame", "sequence")
# Modules whose import registers models; imported on first lookup.
_MODEL_MODULES = ("models.frame", "models.sequence")

ConstructorT = TypeVar("ConstructorT", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class _Entry:
    kind: str
    constructor: Callable[..., nn.Module]


_REGISTRY: dict[str, _Entry] = {}


class UnknownModelError(KeyError):
    """Raised for a model name nobody registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


def register_model(name: str, kind: str) -> Callable[[ConstructorT], ConstructorT]:
    """Decorator registering a model constructor under ``name``.

    Args:
        name: Unique model name, e.g. ``"efficientnet-b0"``.
        kind: ``"frame"`` (image -> logits/embedding) or ``"sequence"``
            (track of embeddings -> one logit).

    Raises:
        ValueError: If ``kind`` is unknown or ``name`` is already registered.
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {list(KINDS)}, got {kind!r}")

    def decorator(constructor: ConstructorT) -> ConstructorT:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(kind=kind, constructor=constructor)
        logger.debug("registered %s model %s", kind, name)
        return constructor

    return decorator


def _import_model_modules() -> None:
    for module in _MODEL_MODULES:
        importlib.import_module(module)


def list_models(kind: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally only those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"model kind must be one of {list(KINDS)}, got {kind!r}")
    _import_model_modules()
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` with the constructor's ``kwargs``.

    Raises:
        UnknownModelError: A ``KeyError`` listing the valid names.
    """
    return _lookup(name).constructor(**kwargs)


def _lookup(name: str) -> _Entry:
    _import_model_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(f"unknown model {name!r}; valid names: {valid}") from None
