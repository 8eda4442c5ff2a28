"""One input's decoder and the requests it serves, wherever it runs.

The decoder child serves the worker's requests (``transforms.sandbox_protocol``)
through ``handle``; the in-process transport calls the very same function, so
both ways of decoding differ only in where the code runs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from models.crops import BOX, CropSpec
from transforms.clip_reader import ClipReader
from transforms.clips import Clip, HeldClip, Probe
from transforms.decoders import open_decoder
from transforms.elements import UNREADABLE
from transforms.media import MediaError


class DecodeSession:
    """One input's decoder, its clip reader and the held clip.

    Whatever asks, the decoder serves one thread at a time: the clip reader
    is stopped before any unplanned read and before the decoder is closed.
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


def handle(session: DecodeSession, request: dict) -> tuple[dict, Optional[np.ndarray]]:
    """Serve one request: its reply, and the pixels that follow it for a pixel reply.

    Raises what the decoder raises; the caller decides how a failure travels.
    """
    cmd = request["cmd"]
    if cmd == "open":
        probe = session.open(request["decoder"], request["path"], request["max_side"], request["max_pixels"],
                             request.get("threads", 0))
        return {"probe": probe.to_dict()}, None
    if cmd == "read":
        clip = session.read(request["indices"])
        return {"shape": list(clip.frames.shape), "timestamps": clip.timestamps, "indices": clip.indices,
                "notes": clip.notes}, clip.frames
    if cmd == "plan":
        session.plan(request["clips"])
        return {}, None
    if cmd == "hold":
        return session.hold(request["indices"]), None
    if cmd == "close":
        session.close()
        return {}, None
    if cmd == "downscaled":
        return _pixels(session.held().downscaled(request["positions"], request["width"], request["height"]))
    if cmd == "warp":
        matrices = np.asarray(request["matrices"], np.float32).reshape(-1, 2, 3)
        return _pixels(session.held().warp(request["positions"], matrices, request["size"]))
    if cmd == "crop_boxes":
        spec = CropSpec(BOX, int(request["size"]), box_margins=tuple(request["box_margins"]))
        return _pixels(session.held().crop_boxes(request["positions"], request["boxes"], spec))
    raise MediaError(UNREADABLE, f"unknown request {cmd!r}")


def _pixels(pixels: np.ndarray) -> tuple[dict, np.ndarray]:
    return {"shape": list(pixels.shape)}, pixels
