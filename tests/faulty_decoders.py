"""Decoders that misbehave on purpose, loaded by the sandbox child as ``tests.faulty_decoders:NAME``.

They stand in for decord's known failures on malformed files: a segfault, an
abort, a hang that holds the GIL, runaway memory, and frames silently repeated
in place of ones it could not decode; and for the worst case, a decoder a
crafted file has taken over (``Escapist``), and one that counts the inputs
its process has opened (``Counts``: each input should get a process of its own).
"""
from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess

from transforms.elements import UNREADABLE
from transforms.media import MediaError

from transforms.clips import Clip
from transforms.decord_decoder import DecordDecoder


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


class Escapist:
    """A decoder taken over by its input: the file's ``comment`` tag says what to try, and it tries it all.

    The plan travels in the hostile file itself, as an exploit's payload would:
    ``port`` (a TCP listener on 127.0.0.1), ``secret_env`` (a variable of the
    worker's environment), ``secret_file`` (a file the worker can read),
    ``write_to`` (a path outside the decoder's folders), ``worker_pid``. Each
    attempt's outcome goes back in the error this decoder raises:
    ``escapes {"connect": "ok: ..." or "failed: ...", ...}``, so the next
    decoder reads the file and the outcomes reach the row's warnings.
    """

    name = "escapist"

    def __init__(self, path, max_side, max_pixels):
        import av

        with av.open(path) as container:
            plan = json.loads(container.metadata["comment"])
        attempts = {
            "connect": lambda: _send(plan["port"]),
            "environment": lambda: os.environ[plan["secret_env"]],
            "read": lambda: open(plan["secret_file"]).read(),
            "write": lambda: open(plan["write_to"], "w").write("escaped"),
            "exec": lambda: subprocess.run(["/bin/sh", "-c", "echo ran"], capture_output=True, timeout=10,
                                           check=True).stdout.decode().strip(),
            "signal": lambda: os.kill(plan["worker_pid"], 0),
        }
        outcomes = {name: _outcome(attempt) for name, attempt in attempts.items()}
        raise MediaError(UNREADABLE, "escapes " + json.dumps(outcomes))


def _send(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"escaped")
    return "sent"


def _outcome(attempt) -> str:
    try:
        return f"ok: {attempt()}"
    except BaseException as e:  # noqa: B902 (whatever stops the attempt is the outcome)
        return f"failed: {type(e).__name__}: {e}"


_OPENED: list[str] = []


class Counts:
    """Counts the inputs opened in its process, in a module global, and says so in its error."""

    name = "counts"

    def __init__(self, path, max_side, max_pixels):
        _OPENED.append(path)
        raise MediaError(UNREADABLE, f"inputs opened in this process: {len(_OPENED)}")
