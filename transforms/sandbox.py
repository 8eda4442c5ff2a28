"""Decoding untrusted media in a child process with a time and a memory limit.

decord can segfault, abort, or hang forever holding the GIL on malformed
files (decord issues 25, 229, 373). Every decoder therefore runs in a child
process (``transforms.sandbox_child``) that the worker talks to over a pipe:
a crash ends the child, not the worker; a request that overruns its time limit
gets the child killed; an address-space limit (``RLIMIT_AS``) turns runaway
allocations into a failed request. The next input starts a fresh child.

``read`` returns whole frames; the scan uses ``hold`` instead, which keeps the
decoded clip in the child and sends back only what the worker asks for:
downscaled copies for detection (``downscaled``) and face crops, aligned
(``warp``: 2x3 matrices in) or cut around detector boxes (``crop_boxes``: boxes
and the crop spec's size and margins in), so full frames never cross the pipe.
The wire format is in ``transforms.sandbox_protocol``; the child's side of it
in ``transforms.decode_session``; the two ways requests travel in
``transforms.sandbox_transports``.

The child is also contained (``transforms.containment``): each input is
decoded by a process of its own that can read that input and its code, write
a private folder, and reach nothing else: no network, no credentials, no other
programs. ``containment`` says how much of that is demanded.

``DecoderSandbox(isolate=False)`` runs the same decoders in-process: for
debugging only, it gives up the protection.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np

from models.crops import BOX, CropSpec
from transforms.clips import Clip, Probe
from transforms.containment import BEST_EFFORT, STRICT, ContainmentError, Report, check_level
from transforms.media import MediaError
from transforms.sandbox_transports import ChildProcess, InProcess, Transport


class DecoderSandbox:
    """Opens and reads media through a decoder living in a child process.

    ``open`` starts a per-input time budget shared by the calls that follow:
    ``timeout_s``, plus ``timeout_s_per_minute`` for each minute of video the
    probe finds (scouting a long video makes many calls); no single call may
    take longer than ``timeout_s``, so a hang is caught as fast on a long video
    as on a short one. ``close`` ends the input. Failures raise
    ``MediaError`` with status ``unreadable`` (decoder error, crash, out of
    memory), ``timeout``, or ``error`` (a ``strict`` child missing a
    containment layer). ``containment``: ``strict``, ``best_effort`` or ``off``
    (``decode.containment``; see ``transforms.containment``).
    """

    def __init__(self, timeout_s: float = 120.0, memory_mb: Optional[int] = 4096, isolate: bool = True,
                 containment: str = BEST_EFFORT, timeout_s_per_minute: float = 0.0):
        self.timeout_s = timeout_s
        self.timeout_s_per_minute = timeout_s_per_minute
        self.memory_mb = memory_mb
        self.isolate = isolate
        self.containment = check_level(containment)
        if containment == STRICT and not isolate:
            raise ValueError("decode.containment: strict needs decode.isolate: true (a decoder child to contain)")
        self._transport: Transport = ChildProcess(timeout_s, memory_mb, containment) if isolate else InProcess()
        self._input_deadline = 0.0
        self._input_open = False

    @property
    def children_started(self) -> int:
        """Decoder children started so far: the first, then one after each crash or timeout.

        (Each input's own process, forked by the child, is not counted.)
        """
        return self._transport.children_started

    def containment_layers(self) -> dict:
        """The containment in force where the decoders run (starts the child if none runs).

        ``{"level": ..., "active": {layer: what it does here}, "missing": {layer: why}}``,
        ready for ``run.json``. Raises ``ContainmentError`` when the level is
        ``strict`` and a layer is missing: such a worker must not decode.
        """
        report = Report.from_dict(self._transport.containment(time.monotonic() + 60))
        if report.refusal():
            raise ContainmentError(report.refusal())
        return report.to_dict()

    def open(self, decoder: str, path: str, max_side: int, max_pixels: int, threads: int = 0) -> Probe:
        if self._input_open:  # each input has a decoder process of its own: end the last one first
            self.close_input()
        started = time.monotonic()
        self._input_deadline = started + self.timeout_s
        self._input_open = True
        reply, _ = self._exchange({"cmd": "open", "decoder": decoder, "path": path, "max_side": max_side,
                                   "max_pixels": max_pixels, "threads": threads})
        probe = Probe(**reply["probe"])
        minutes = max(0.0, float(probe.duration_s or 0.0)) / 60.0
        self._input_deadline = started + self.timeout_s + self.timeout_s_per_minute * minutes
        return probe

    @property
    def input_deadline(self) -> float:
        """When (``time.monotonic``) the open input's budget runs out."""
        return self._input_deadline

    def read(self, indices: Sequence[int]) -> Clip:
        reply, frames = self._exchange({"cmd": "read", "indices": [int(i) for i in indices]})
        return Clip(frames, reply["timestamps"], reply["indices"], reply["notes"])

    def plan(self, clips: Sequence[Sequence[int]]) -> None:
        """Start decoding ``clips`` in order, one ahead of the ``hold`` calls that will ask for them."""
        self._exchange({"cmd": "plan", "clips": [[int(i) for i in c] for c in clips]})

    def hold(self, indices: Sequence[int]) -> dict:
        """Decode ``indices`` and keep the frames in the decoder process.

        Returns ``shape``, ``timestamps``, ``indices`` (those decoded), ``notes`` and
        ``repeats`` (frames byte-identical to the one before). The held clip
        replaces any earlier one.
        """
        reply, _ = self._exchange({"cmd": "hold", "indices": [int(i) for i in indices]})
        return reply

    def downscaled(self, positions: Sequence[int], width: int, height: int) -> np.ndarray:
        """Copies of held frames (positions within the held clip) resized to ``width`` x ``height``."""
        positions = [int(p) for p in positions]
        _, pixels = self._exchange({"cmd": "downscaled", "positions": positions, "width": width, "height": height})
        return pixels

    def warp(self, positions: Sequence[int], matrices: np.ndarray, size: int) -> np.ndarray:
        """Aligned crops of held frames: ``(len(positions), size, size, 3)`` uint8."""
        positions = [int(p) for p in positions]
        if not positions:
            return np.empty((0, size, size, 3), np.uint8)
        flat = np.asarray(matrices, np.float64).reshape(len(positions), 6).tolist()
        _, pixels = self._exchange({"cmd": "warp", "positions": positions, "matrices": flat, "size": size})
        return pixels

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
        # JSON writes floats by repr: the child gets the very same box coordinates.
        _, pixels = self._exchange({"cmd": "crop_boxes", "positions": positions, "boxes": boxes.tolist(),
                                    "size": spec.size, "box_margins": list(spec.box_margins)})
        return pixels

    def close_input(self) -> None:
        """Forget the open input (the child stays up for the next one)."""
        self._input_open = False
        if not self._transport.running():
            return  # the child is gone: the next input restarts it
        try:
            self._exchange({"cmd": "close"}, deadline=time.monotonic() + 10)
        except MediaError:
            pass  # the child is gone or stuck and has been killed: the next input restarts it

    def shutdown(self) -> None:
        """Stop the child process."""
        self._transport.shutdown()

    def __enter__(self) -> "DecoderSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _exchange(self, message: dict, deadline: Optional[float] = None) -> tuple[dict, Optional[np.ndarray]]:
        if deadline is None:  # each call gets timeout_s at most, within what is left of the input's budget
            deadline = min(time.monotonic() + self.timeout_s, self._input_deadline)
        return self._transport.exchange(message, deadline)
