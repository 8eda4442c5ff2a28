"""The decoders by name: what ``decode.decoders`` may list, and how a name becomes an opened decoder.

Each decoder opens one file, describes it (``probe``, a ``transforms.clips.Probe``)
and returns the frames asked for (``read``, a ``Clip``), downscaled inside the
decoder when the source is larger than ``max_side``. They run in the sandboxed
child process of ``transforms.sandbox`` (a crash or a hang there cannot touch
the worker), so neither this registry nor the decoders import Beam or torch.

Built-in names: ``decord`` (fast, seeks by the container index), ``pyav``
(FFmpeg through PyAV: reads files whose index decord rejects) and ``pillow``
(still images). ``module:attr`` names a decoder class elsewhere (tests use it
to plug in decoders that crash or hang on purpose).
"""
from __future__ import annotations

import importlib

from transforms.decord_decoder import DecordDecoder
from transforms.pillow_decoder import PillowDecoder
from transforms.pyav_decoder import PyAVDecoder

BUILTIN = {"decord": DecordDecoder, "pyav": PyAVDecoder, "pillow": PillowDecoder}


def open_decoder(name: str, path: str, max_side: int, max_pixels: int, threads: int = 0):
    """An opened decoder; ``threads`` reaches the built-in ones (others take the first three)."""
    if name in BUILTIN:
        return BUILTIN[name](path, max_side, max_pixels, threads=threads)
    return decoder_class(name)(path, max_side, max_pixels)


def decoder_class(name: str):
    """A decoder by built-in name or ``module:attr``; raises ``ValueError`` with the valid names."""
    if name in BUILTIN:
        return BUILTIN[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"unknown decoder '{name}' (valid: {', '.join(BUILTIN)} or module:attr)")
    return getattr(importlib.import_module(module), attr)


def validate_decoder_name(name: str) -> None:
    """Checks a configured decoder name without importing anything heavy."""
    if name not in BUILTIN and (":" not in name or not all(name.partition(":")[::2])):
        raise ValueError(f"unknown decoder '{name}' (valid: {', '.join(BUILTIN)} or module:attr)")
