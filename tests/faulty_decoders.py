"""Decoders that misbehave on purpose, loaded by the sandbox child as ``tests.faulty_decoders:NAME``.

They stand in for decord's known failures on malformed files: a segfault, an
abort, a hang that holds the GIL, runaway memory, and frames silently repeated
in place of ones it could not decode.
"""
from __future__ import annotations

import ctypes
import os

from transforms.decoders import Clip, DecordDecoder


class Segfault(DecordDecoder):
    name = "segfault"

    def read(self, indices):
        ctypes.string_at(0)  # SIGSEGV in native code


class Abort(DecordDecoder):
    name = "abort"

    def __init__(self, path, max_side, max_pixels):
        os.abort()  # SIGABRT while opening, as a C++ exception escaping would


class Hang(DecordDecoder):
    name = "hang"

    def read(self, indices):
        while True:  # spins holding the GIL, like decord stuck in a seek loop
            pass


class MemoryHog(DecordDecoder):
    name = "memory_hog"

    def read(self, indices):
        hoard = []
        while True:
            hoard.append(bytearray(256 << 20))


class RepeatsFrames(DecordDecoder):
    """Returns every second frame as a copy of the one before it."""

    name = "repeats"

    def read(self, indices):
        clip = super().read(indices)
        frames = clip.frames.copy()
        frames[1::2] = frames[0:-1:2][: len(frames[1::2])]
        return Clip(frames, clip.timestamps, clip.indices, clip.notes)
