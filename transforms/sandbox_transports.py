"""How the worker's requests reach a decode session: in a child process, or in the worker itself.

Both transports take a request (``transforms.sandbox_protocol``) and give back
its reply and, for a pixel reply, the pixels; a failed request raises
``MediaError``. ``ChildProcess`` is the sandbox proper: the decoders run in a
child it starts (contained as ``decode.containment`` says, see
``transforms.containment``), restarts after a crash and kills at the input's
deadline. ``InProcess`` serves the same requests with the same code in the
worker, for debugging only (``decode.isolate: false``): it gives up the protection.
"""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import BinaryIO, Optional, Protocol

import numpy as np

from transforms.containment import OFF, Report, child_environment
from transforms.decode_session import DecodeSession, handle
from transforms.elements import TIMEOUT, UNREADABLE
from transforms.media import MediaError
from transforms.sandbox_protocol import HEADER, MAX_MESSAGE, PIXEL_REPLIES, encode

logger = logging.getLogger(__name__)

_STDERR_LIMIT = 8 << 20  # restart a child whose FFmpeg chatter has filled this much
_SCRATCH_PREFIX = "deepfake-scan-decoders-"  # then the worker's pid


class Transport(Protocol):
    children_started: int

    def exchange(self, message: dict, deadline: float) -> tuple[dict, Optional[np.ndarray]]:
        """The reply to ``message`` (and its pixels), by ``deadline`` (``time.monotonic``) where enforceable."""

    def running(self) -> bool:
        """Whether a decode session is up (a dead child is not restarted just to be told to close)."""

    def containment(self, deadline: float) -> dict:
        """The containment report (``transforms.containment.Report.to_dict``) of whatever decodes."""

    def shutdown(self) -> None:
        """Release the session and whatever runs it."""


class InProcess:
    """Serves requests in the worker: a crash or a hang here takes the worker with it."""

    children_started = 0

    def __init__(self) -> None:
        self._session = DecodeSession()

    def exchange(self, message: dict, deadline: float) -> tuple[dict, Optional[np.ndarray]]:
        return handle(self._session, message)  # no deadline: nothing here can stop a stuck decoder

    def running(self) -> bool:
        return True

    def containment(self, deadline: float) -> dict:
        return Report(OFF).to_dict()

    def shutdown(self) -> None:
        self._session.close()


class ChildProcess:
    """Serves requests in a child process (``python -m transforms.sandbox_child``), started on demand.

    A crash ends the child, not the worker, and is reported as ``unreadable``
    with the signal and the child's last stderr line; a reply still missing at
    the deadline gets the child killed and is reported as ``timeout``. The next
    request starts a fresh child. The child starts with the environment
    ``transforms.containment.child_environment`` allows, and keeps its
    per-input folders in a scratch folder of ours, emptied whenever a child ends.
    """

    def __init__(self, timeout_s: float, memory_mb: Optional[int], containment: str):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.level = containment
        self.children_started = 0
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Optional[BinaryIO] = None
        self._scratch: Optional[str] = None  # the child's per-input folders live here
        self._report: Optional[dict] = None
        self._deadline = 0.0

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def exchange(self, message: dict, deadline: float) -> tuple[dict, Optional[np.ndarray]]:
        self._deadline = deadline
        self._ensure_child()
        return self._call(message)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def containment(self, deadline: float) -> dict:
        if self._report is None:  # fetched when the first child starts
            self._deadline = deadline
            self._ensure_child()
        return self._report

    def shutdown(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    self._proc.stdin.close()
                    self._proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self._kill()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    # ------------------------------------------------------------ the child

    def _call(self, message: dict) -> tuple[dict, Optional[np.ndarray]]:
        try:
            self._proc.stdin.write(encode(message))
        except (BrokenPipeError, OSError):
            raise self._died() from None
        header = bytearray(HEADER.size)
        self._read_into(memoryview(header))
        (size,) = HEADER.unpack(header)
        if size > MAX_MESSAGE:
            self._kill()
            raise MediaError(UNREADABLE, "the decoder sent a malformed reply")
        body = bytearray(size)
        self._read_into(memoryview(body))
        reply = json.loads(body)
        if reply.get("error"):
            raise MediaError(reply.get("status", UNREADABLE), reply["error"])
        if message["cmd"] not in PIXEL_REPLIES:
            return reply, None
        pixels = np.empty(tuple(int(v) for v in reply["shape"]), np.uint8)
        self._read_into(memoryview(pixels).cast("B"))
        return reply, pixels

    def _ensure_child(self) -> None:
        if self.running():
            if self._stderr is not None and os.fstat(self._stderr.fileno()).st_size > _STDERR_LIMIT:
                self.shutdown()
            else:
                return
        self._proc = None
        if self._stderr is None:
            self._stderr = tempfile.TemporaryFile(prefix="deepfake-scan-decoder-")
        self._clear_scratch()
        env = child_environment(self.level, os.pathsep.join(p for p in sys.path if p))  # the worker's modules
        args = [sys.executable, "-m", "transforms.sandbox_child", str(self.memory_mb or 0), self.level,
                self._scratch]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0, env=env,
            close_fds=True,
        )
        self.children_started += 1
        if self._report is None:  # the same machine and image give every child the same layers
            self._report, _ = self._call({"cmd": "containment"})
            _log_containment(self._report)

    def _clear_scratch(self) -> None:
        """An empty folder for the next child's per-input folders (a killed child leaves its last one)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
        self._scratch = _new_scratch()

    def _read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the child before the deadline, or raise."""
        out = self._proc.stdout
        got = 0
        while got < len(view):
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out()
            ready, _, _ = select.select([out], [], [], remaining)
            if not ready:
                raise self._timed_out()
            n = out.readinto(view[got:])
            if not n:
                raise self._died()
            got += n

    def _kill(self) -> None:
        if self._proc is None:
            return
        try:
            self._proc.kill()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.warning("decoder child %d did not exit after SIGKILL", self._proc.pid)
        self._proc = None

    def _died(self) -> MediaError:
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if code is not None and code < 0:
            try:
                how = f"crashed ({signal.Signals(-code).name})"
            except ValueError:
                how = f"crashed (signal {-code})"
        else:
            how = f"exited unexpectedly (code {code})"
        tail = self._stderr_tail()
        return MediaError(UNREADABLE, f"the decoder {how}" + (f"; its last message: {tail}" if tail else ""))

    def _timed_out(self) -> MediaError:
        self._kill()
        return MediaError(
            TIMEOUT, f"the decoder did not finish within {self.timeout_s:g} s and was killed"
        )

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 2000))
            lines = [l.strip() for l in self._stderr.read().decode("utf-8", "replace").splitlines() if l.strip()]
            self._stderr.seek(0, os.SEEK_END)
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""


def _new_scratch() -> str:
    """A scratch folder for a child, after removing those of workers that were killed (kill -9, OOM)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name[len(_SCRATCH_PREFIX):].partition("-")[0] if name.startswith(_SCRATCH_PREFIX) else ""
        path = os.path.join(root, name)
        if pid.isdigit() and not _alive(int(pid)) and os.stat(path).st_uid == os.geteuid():
            shutil.rmtree(path, ignore_errors=True)
    scratch = tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-")
    os.chmod(scratch, 0o711)  # an unprivileged decoder may pass through to its own folder
    return scratch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _log_containment(report: dict) -> None:
    active = ", ".join(report["active"]) or "none"
    logger.info("decoder containment (%s): %s in force", report["level"], active)
    for layer, why in report["missing"].items():
        logger.warning("decoder containment: %s unavailable (%s); carrying on without it", layer, why)
