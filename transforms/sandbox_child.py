"""The decoder child: ``python -m transforms.sandbox_child MEMORY_MB CONTAINMENT SCRATCH``.

Started by ``transforms.sandbox``. It reads requests on stdin and writes
replies on the original stdout (``transforms.sandbox_protocol``); anything
native code prints goes to stderr, which the worker keeps to quote when the
child dies.

The child lives for many inputs but decodes none itself. It imports the
decoders' libraries once, takes the process-wide containment layers, and for
each input (``open`` to ``close``) forks a process that opens nothing by
name: it gets the input as a descriptor this process opened, a private folder
under SCRATCH, and the per-input layers (``transforms.containment``), then
serves the input's requests and exits. So a decoder taken over by one file
reads that file and nothing else and cannot touch the next input; a process
per input costs a fork (20-30 ms per input measured, see bench/containment.py),
not an interpreter start. The process-wide start-up is in
``transforms.sandbox_child_startup``. A decoder failure
is a property of the file and goes back as an error reply; when the input's
process crashes this one dies of the same signal, so the worker sees a crash
as before and starts a fresh child.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Optional, Sequence

import numpy as np

from transforms import sandbox_child_startup as startup
from transforms.containment import OFF, Report, code_paths, contain_child, contain_input
from transforms.decode_session import DecodeSession, handle
from transforms.decoders import decoder_class
from transforms.elements import ERROR, UNREADABLE
from transforms.media import MediaError, first_line
from transforms.sandbox_protocol import read_message, write_message

logger = logging.getLogger(__name__)


def main(argv: Sequence[str]) -> None:
    memory_mb, level, scratch = int(argv[0]), argv[1], argv[2]
    startup.normal_scheduling()
    startup.limit_memory(memory_mb)
    # Replies go over the original stdout; anything native code prints goes to stderr instead.
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which stops us
    process_wide = contain_child(level)  # before the imports, which add to the environment themselves
    startup.preload(level)
    startup.warm_up(scratch)
    setup = _Setup(level, scratch, code_paths())
    report = process_wide.merge(_probe(setup))
    for layer, why in report.missing.items():
        logger.warning("decoder containment: %s unavailable (%s); carrying on without it", layer, why)
    # Unbuffered: each input's process reads its own requests from the same pipe.
    serve_inputs(os.fdopen(0, "rb", buffering=0), outbox, report, setup)


@dataclass(frozen=True)
class _Setup:
    level: str  # decode.containment
    scratch: str  # where the per-input folders go
    code: list[str]  # what an input's process may read besides its input (``containment.code_paths``)


def serve_inputs(inbox: BinaryIO, outbox: BinaryIO, report: Report, setup: _Setup) -> None:
    """Answer requests until the worker closes the pipe, one forked process per input."""
    while True:
        request = read_message(inbox)
        if request is None:
            return
        cmd = request["cmd"]
        if cmd == "containment":
            write_message(outbox, report.to_dict())
        elif cmd == "open" and report.refusal():
            write_message(outbox, {"error": report.refusal(), "status": ERROR})
        elif cmd == "open":
            _decode_one_input(request, inbox, outbox, setup)
        elif cmd == "close":
            write_message(outbox, {})
        else:
            write_message(outbox, {"error": "no input is open", "status": UNREADABLE})


def serve(session: DecodeSession, request: Optional[dict], inbox: BinaryIO, outbox: BinaryIO) -> None:
    """Answer ``request`` (an ``open``) and those after it until the input is closed or the pipe is."""
    opened = False
    while request is not None:
        if request["cmd"] == "open" and opened:  # the worker closes one input before opening the next
            reply, pixels = {"error": "an input is already open", "status": ERROR}, None
        else:
            reply, pixels = _answer(session, request)
        opened = True
        write_message(outbox, reply, pixels)
        if request["cmd"] == "close":
            return
        request = read_message(inbox)


def _answer(session: DecodeSession, request: dict) -> tuple[dict, Optional[np.ndarray]]:
    try:
        return handle(session, request)
    except MediaError as e:
        return {"error": str(e), "status": e.status}, None
    except MemoryError:
        return {"error": "the decoder ran out of memory (decode.memory_mb)", "status": UNREADABLE}, None
    except Exception as e:  # any other decoder failure is a property of the file
        return {"error": f"{session.name} failed: {type(e).__name__}: {first_line(e)}", "status": UNREADABLE}, None


# ---------------------------------------------------------------- one input, one process


def _decode_one_input(request: dict, inbox: BinaryIO, outbox: BinaryIO, setup: _Setup) -> None:
    try:
        staged = _StagedInput(request["path"], setup.level, setup.scratch)
    except OSError as e:
        write_message(outbox, {"error": f"cannot open the file: {first_line(e)}", "status": UNREADABLE})
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _input_process(request, staged, inbox, outbox, setup)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    staged.remove()
    _end_as(status)


def _input_process(request: dict, staged: "_StagedInput", inbox: BinaryIO, outbox: BinaryIO, setup: _Setup) -> int:
    """The forked process's life: contain itself, then serve the input's requests."""
    from transforms.contain_privileges import die_with_parent

    parent = os.getppid()
    code = setup.code
    module = request["decoder"].partition(":")[0]
    try:  # a module:attr decoder is code, loaded before the input's first byte; a bad name fails in ``open``
        decoder_class(request["decoder"])
        code = code + code_paths([module]) if module != request["decoder"] else code
    except Exception:
        pass
    os.chdir(staged.folder)
    os.environ["HOME"] = os.environ["TMPDIR"] = tempfile.tempdir = staged.folder
    report = contain_input(setup.level, staged.folder, code, staged.fds)
    die_with_parent(parent)
    refusal = report.refusal()
    if refusal:  # strict, and a layer failed here although the start-up probe had it
        while request is not None and request["cmd"] != "close":
            write_message(outbox, {"error": refusal, "status": ERROR})
            request = read_message(inbox)
        if request is not None:
            write_message(outbox, {})
        return 0
    serve(DecodeSession(), {**request, "path": staged.readable_path()}, inbox, outbox)
    return 0


class _StagedInput:
    """An input as its forked process gets it: a descriptor opened here, and a private folder.

    The process opens ``input.EXT`` in its folder, a link to its own copy of
    the descriptor (``/proc/self/fd/N``), keeping the name's extension for
    FFmpeg's format guess; Landlock allows that one file. With ``off`` the
    decoders get the path itself, as they always did.
    """

    def __init__(self, path: str, level: str, scratch: str):
        self.path = os.path.abspath(path)  # the input's process works in its own folder
        self.fds: list[int] = []
        self.folder = tempfile.mkdtemp(prefix="input-", dir=scratch)
        if level == OFF:
            return
        try:
            self.fds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
            if os.geteuid() == 0:
                from transforms.contain_privileges import unprivileged_ids

                os.chown(self.folder, *unprivileged_ids())
            suffix = "".join(c for c in os.path.splitext(path)[1][:16] if c.isalnum() or c == ".")
            self.path = os.path.join(self.folder, "input" + suffix)
            os.symlink(f"/proc/self/fd/{self.fds[0]}", self.path)
        except OSError:
            self.remove()
            raise

    def readable_path(self) -> str:
        """``path``, or where the file mode keeps this process out (no Landlock, a root-only staged copy),
        a copy made through the descriptor."""
        if not self.fds:
            return self.path
        try:
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
            return self.path
        except OSError:  # PermissionError; FileNotFoundError where /proc is not mounted
            copy = os.path.join(self.folder, "copy" + os.path.splitext(self.path)[1])
            with open(copy, "wb") as out:
                os.lseek(self.fds[0], 0, os.SEEK_SET)
                shutil.copyfileobj(os.fdopen(os.dup(self.fds[0]), "rb"), out, 1 << 20)
            return copy

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _end_as(status: int) -> None:
    """Carry on after a clean exit; otherwise die as the input's process did, for the worker to report."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        os._exit(code)


def _probe(setup: _Setup) -> Report:
    """The per-input layers as a forked process gets them, tried once at start-up for the record."""
    if setup.level == OFF:
        return Report(setup.level)
    folder = tempfile.mkdtemp(prefix="probe-", dir=setup.scratch)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(contain_input(setup.level, folder, setup.code).to_dict()))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reply:
        text = reply.read()
    os.waitpid(pid, 0)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        return Report.from_dict(json.loads(text))
    except ValueError:
        return Report(setup.level, missing={"per_input_layers": "the start-up probe process failed"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    main(sys.argv[1:])
