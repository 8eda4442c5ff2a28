"""Decoding untrusted media in a child process with a time and a memory limit.

decord can segfault, abort, or hang forever holding the GIL on malformed
files (decord issues 25, 229, 373). Every decoder therefore runs in a child
process (``python -m transforms.sandbox``) that the worker talks to over a
pipe: a crash ends the child, not the worker; a request that overruns its
time limit gets the child killed; an address-space limit (``RLIMIT_AS``) turns
runaway allocations into a failed request. The next input starts a fresh child.

Protocol: length-prefixed JSON messages both ways (no pickle: the child
handles hostile bytes, so nothing it sends is ever executed), followed by the
raw pixel bytes for the replies that carry pixels, read straight into a numpy
array. ``read`` returns whole frames; the scan uses ``hold`` instead, which
keeps the decoded clip in the child and sends back only what the worker asks
for: downscaled copies for detection (``downscaled``) and face crops, aligned
(``warp``: 2x3 matrices in) or cut around detector boxes (``crop_boxes``: boxes
and the crop spec's size and margins in), so full frames never cross the pipe.

``DecoderSandbox(isolate=False)`` runs the same decoders in-process: for
debugging only, it gives up the protection.
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import BinaryIO, Optional, Sequence

import numpy as np

from models.crops import BOX, CropSpec
from transforms.decoders import Clip, ClipReader, HeldClip, Probe, open_decoder
from transforms.elements import TIMEOUT, UNREADABLE
from transforms.media import MediaError, first_line

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
_MAX_MESSAGE = 1 << 20  # JSON replies are small; anything bigger is a broken child
_STDERR_LIMIT = 8 << 20  # restart a child whose FFmpeg chatter has filled this much


class DecoderSandbox:
    """Opens and reads media through a decoder living in a child process.

    ``open`` starts a per-input time budget of ``timeout_s`` shared by the
    ``read`` calls that follow; ``close`` ends the input. Failures raise
    ``MediaError`` with status ``unreadable`` (decoder error, crash, out of
    memory) or ``timeout``.
    """

    def __init__(self, timeout_s: float = 120.0, memory_mb: Optional[int] = 4096, isolate: bool = True):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.isolate = isolate
        self._proc: Optional[subprocess.Popen] = None
        self._stderr: Optional[BinaryIO] = None
        self._deadline = 0.0
        self._local = DecodeSession()  # serves the requests in-process when isolate=False
        self.children_started = 0

    # ------------------------------------------------------------ public

    def open(self, decoder: str, path: str, max_side: int, max_pixels: int, threads: int = 0) -> Probe:
        self._deadline = time.monotonic() + self.timeout_s
        if not self.isolate:
            return self._local.open(decoder, path, max_side, max_pixels, threads)
        reply = self._request({"cmd": "open", "decoder": decoder, "path": path, "max_side": max_side,
                               "max_pixels": max_pixels, "threads": threads})
        return Probe(**reply["probe"])

    def read(self, indices: Sequence[int]) -> Clip:
        if not self.isolate:
            return self._local.read(indices)
        reply = self._request({"cmd": "read", "indices": [int(i) for i in indices]})
        shape = tuple(int(v) for v in reply["shape"])
        frames = np.empty(shape, np.uint8)
        self._read_into(memoryview(frames).cast("B"))
        return Clip(frames, reply["timestamps"], reply["indices"], reply["notes"])

    def plan(self, clips: Sequence[Sequence[int]]) -> None:
        """Start decoding ``clips`` in order, one ahead of the ``hold`` calls that will ask for them."""
        clips = [[int(i) for i in c] for c in clips]
        if not self.isolate:
            self._local.plan(clips)
            return
        self._request({"cmd": "plan", "clips": clips})

    def hold(self, indices: Sequence[int]) -> dict:
        """Decode ``indices`` and keep the frames in the decoder process.

        Returns ``shape``, ``timestamps``, ``indices`` (those decoded), ``notes`` and
        ``repeats`` (frames byte-identical to the one before). The held clip
        replaces any earlier one.
        """
        if not self.isolate:
            return self._local.hold(indices)
        return self._request({"cmd": "hold", "indices": [int(i) for i in indices]})

    def downscaled(self, positions: Sequence[int], width: int, height: int) -> np.ndarray:
        """Copies of held frames (positions within the held clip) resized to ``width`` x ``height``."""
        positions = [int(p) for p in positions]
        if not self.isolate:
            return self._local.held().downscaled(positions, width, height)
        return self._pixels({"cmd": "downscaled", "positions": positions, "width": width, "height": height})

    def warp(self, positions: Sequence[int], matrices: np.ndarray, size: int) -> np.ndarray:
        """Aligned crops of held frames: ``(len(positions), size, size, 3)`` uint8."""
        positions = [int(p) for p in positions]
        if not positions:
            return np.empty((0, size, size, 3), np.uint8)
        if not self.isolate:
            return self._local.held().warp(positions, matrices, size)
        flat = np.asarray(matrices, np.float64).reshape(len(positions), 6).tolist()
        return self._pixels({"cmd": "warp", "positions": positions, "matrices": flat, "size": size})

    def crop_boxes(self, positions: Sequence[int], boxes: np.ndarray, spec: CropSpec) -> np.ndarray:
        """``box`` crops of held frames (``models.crops.cut_box_crop``): ``(len(positions), size, size, 3)`` uint8.

        ``boxes`` are ``(len(positions), 4)``, ``x0, y0, x1, y1`` in the held (decoded) frames' pixels.
        """
        positions = [int(p) for p in positions]
        if spec.policy != BOX:
            raise ValueError(f"crop_boxes needs a 'box' crop spec, got {spec.describe()}")
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) != len(positions) or not np.isfinite(boxes).all():
            raise ValueError(f"need one finite box per frame position, got {len(boxes)} for {len(positions)}")
        if not positions:
            return np.empty((0, spec.size, spec.size, 3), np.uint8)
        if not self.isolate:
            return self._local.held().crop_boxes(positions, boxes, spec)
        # JSON writes floats by repr: the child gets the very same box coordinates.
        return self._pixels({"cmd": "crop_boxes", "positions": positions, "boxes": boxes.tolist(),
                             "size": spec.size, "box_margins": list(spec.box_margins)})

    def _pixels(self, message: dict) -> np.ndarray:
        reply = self._request(message)
        pixels = np.empty(tuple(int(v) for v in reply["shape"]), np.uint8)
        self._read_into(memoryview(pixels).cast("B"))
        return pixels

    def close_input(self) -> None:
        """Forget the open input (the child stays up for the next one)."""
        if not self.isolate:
            self._local.close()
            return
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._deadline = time.monotonic() + 10
                self._request({"cmd": "close"})
            except MediaError:
                pass  # the child is gone or stuck and has been killed: the next input restarts it

    def shutdown(self) -> None:
        """Stop the child process."""
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

    def __enter__(self) -> "DecoderSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ------------------------------------------------------------ child management

    def _ensure_child(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            if self._stderr is not None and os.fstat(self._stderr.fileno()).st_size > _STDERR_LIMIT:
                self.shutdown()
            else:
                return self._proc
        self._proc = None
        if self._stderr is None:
            self._stderr = tempfile.TemporaryFile(prefix="deepfake-scan-decoder-")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # same modules as the worker
        args = [sys.executable, "-m", "transforms.sandbox", str(self.memory_mb or 0)]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0, env=env,
            close_fds=True,
        )
        self.children_started += 1
        return self._proc

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

    # ------------------------------------------------------------ messages

    def _request(self, message: dict) -> dict:
        proc = self._ensure_child()
        payload = json.dumps(message).encode()
        try:
            proc.stdin.write(_HEADER.pack(len(payload)) + payload)
        except (BrokenPipeError, OSError):
            raise self._died() from None
        header = bytearray(_HEADER.size)
        self._read_into(memoryview(header))
        (size,) = _HEADER.unpack(header)
        if size > _MAX_MESSAGE:
            self._kill()
            raise MediaError(UNREADABLE, "the decoder sent a malformed reply")
        body = bytearray(size)
        self._read_into(memoryview(body))
        reply = json.loads(body)
        if reply.get("error"):
            raise MediaError(reply.get("status", UNREADABLE), reply["error"])
        return reply

    def _read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the child before the input's deadline, or raise."""
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


# ---------------------------------------------------------------- the child


class DecodeSession:
    """One input's decoder, its clip reader and the held clip: what the child serves.

    The child process runs one; ``DecoderSandbox(isolate=False)`` runs one in the
    worker. Either way the same code keeps the decoder to one thread at a time.
    """

    def __init__(self) -> None:
        self.decoder = None
        self.name = "decoder"
        self._reader: Optional[ClipReader] = None
        self._held: Optional[HeldClip] = None

    def open(self, name: str, path: str, max_side: int, max_pixels: int, threads: int = 0) -> Probe:
        self.close()
        self.name = name
        self.decoder = open_decoder(name, path, max_side, max_pixels, threads)
        return self.decoder.probe

    def plan(self, clips: Sequence[Sequence[int]]) -> None:
        self._stop_reader()
        self._reader = ClipReader(self._opened(), clips)

    def read(self, indices: Sequence[int]) -> Clip:
        """A clip from the planned reader when it is the next one planned, else decoded now."""
        number = self._reader.planned(indices) if self._reader is not None else None
        if number is not None:
            return self._reader.get(number)
        self._stop_reader()  # an unplanned request: the decoder serves one thread at a time
        return self._opened().read(indices)

    def hold(self, indices: Sequence[int]) -> dict:
        self._held = None  # free the previous clip before taking the next
        self._held = HeldClip(self.read(indices))
        return self._held.summary()

    def held(self) -> HeldClip:
        if self._held is None:
            raise MediaError(UNREADABLE, "no clip is held")
        return self._held

    def close(self) -> None:
        self._stop_reader()  # before the decoder it uses is closed
        if self.decoder is not None:
            self.decoder.close()
        self.decoder = self._held = None

    def _opened(self):
        if self.decoder is None:
            raise MediaError(UNREADABLE, "no input is open")
        return self.decoder

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _serve(inbox: BinaryIO, outbox: BinaryIO) -> None:
    session = DecodeSession()

    def send(message: dict, data: Optional[np.ndarray] = None) -> None:
        payload = json.dumps(message).encode()
        outbox.write(_HEADER.pack(len(payload)) + payload)
        if data is not None:
            outbox.write(memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B"))
        outbox.flush()

    while True:
        header = inbox.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the worker closed the pipe
        (size,) = _HEADER.unpack(header)
        request = json.loads(inbox.read(size))
        cmd = request["cmd"]
        try:
            if cmd == "open":
                probe = session.open(request["decoder"], request["path"], request["max_side"],
                                     request["max_pixels"], request.get("threads", 0))
                send({"probe": probe.to_dict()})
            elif cmd == "read":
                clip = session.read(request["indices"])
                send({"shape": list(clip.frames.shape), "timestamps": clip.timestamps, "indices": clip.indices,
                      "notes": clip.notes}, clip.frames)
            elif cmd == "plan":
                session.plan(request["clips"])
                send({})
            elif cmd == "hold":
                send(session.hold(request["indices"]))
            elif cmd == "downscaled":
                pixels = session.held().downscaled(request["positions"], request["width"], request["height"])
                send({"shape": list(pixels.shape)}, pixels)
            elif cmd == "warp":
                matrices = np.asarray(request["matrices"], np.float32).reshape(-1, 2, 3)
                pixels = session.held().warp(request["positions"], matrices, request["size"])
                send({"shape": list(pixels.shape)}, pixels)
            elif cmd == "crop_boxes":
                spec = CropSpec(BOX, int(request["size"]), box_margins=tuple(request["box_margins"]))
                pixels = session.held().crop_boxes(request["positions"], request["boxes"], spec)
                send({"shape": list(pixels.shape)}, pixels)
            elif cmd == "close":
                session.close()
                send({})
            else:
                send({"error": f"unknown request {cmd!r}"})
        except MediaError as e:
            send({"error": str(e), "status": e.status})
        except MemoryError:
            send({"error": "the decoder ran out of memory (decode.memory_mb)", "status": UNREADABLE})
        except Exception as e:  # any other decoder failure is a property of the file
            send({"error": f"{session.name} failed: {type(e).__name__}: {first_line(e)}",
                  "status": UNREADABLE})


def _limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    try:
        import resource

        limit = megabytes << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError) as e:  # not every platform enforces RLIMIT_AS
        logger.warning("decoder memory limit not applied: %s", e)


def _normal_scheduling() -> None:
    """Run at normal priority even if the worker thread that started us was real-time.

    Children inherit their parent thread's scheduling policy, and some native
    libraries switch the thread that calls them to SCHED_FIFO when allowed (root):
    SVT-AV1's encoder does. A real-time decoder that hangs in a busy loop would
    then keep the worker from ever running its timeout. Measured: such a scan
    hung forever instead of killing the child after ``decode.timeout_s``.
    """
    if not hasattr(os, "sched_setscheduler"):  # not Linux: no inherited real-time policy to drop
        return
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as e:
        logger.warning("decoder scheduling policy not reset: %s", e)


def main(argv: Sequence[str]) -> None:
    _normal_scheduling()
    _limit_memory(int(argv[0]) if argv else 0)
    # Replies go over the original stdout; anything native code prints goes to stderr instead.
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which stops us
    _serve(sys.stdin.buffer, outbox)


if __name__ == "__main__":
    main(sys.argv[1:])
