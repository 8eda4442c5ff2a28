"""The ``decord`` decoder: fast, seeks by the container's index.

decord 0.6 has two habits this module works around: an open reader keeps a
thread spinning on a core, and its ``asnumpy`` copies every frame once more
than needed. Files whose index decord rejects are read by ``pyav`` instead.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from transforms.clips import Clip, Probe, fit_size
from transforms.container import ContainerFacts, check_pixels, container_facts
from transforms.elements import UNREADABLE
from transforms.media import MediaError, first_line

logger = logging.getLogger(__name__)


class DecordDecoder:
    """decord's ``VideoReader``: one accurate seek per clip, then decoding forward.

    The reader is freed after each ``read`` and opened again for the next: an open
    decord 0.6 reader keeps a decoding thread spinning on a full core while it
    waits (measured: 3.0 s of CPU in 3 s idle), which on a 2-core worker
    halves what face detection and the model get. Reopening costs 20-80 ms.
    """

    name = "decord"

    def __init__(self, path: str, max_side: int, max_pixels: int, threads: int = 0):
        facts = None
        try:
            facts = container_facts(path)
        except MediaError as e:
            if "no video stream" in str(e):
                raise
        if facts is not None:
            check_pixels(facts.width, facts.height, max_pixels)
        # decord applies the display rotation itself; its target size is in display orientation.
        quarter = facts is not None and (facts.rotation // 90) % 2 == 1
        display = (facts.height, facts.width) if quarter else (facts.width, facts.height) if facts else None
        size = fit_size(*display, max_side) if display else (-1, -1)
        # decord's own default (a thread per core) did not decode faster here: one unless told
        self._path, self._size, self._threads = path, size, threads or 1
        self._reader = self._open()
        num_frames = len(self._reader)
        if num_frames == 0:
            raise MediaError(UNREADABLE, "the video has no frames")
        fps = float(self._reader.get_avg_fps() or 0.0)
        if facts is None:  # PyAV could not read the header: take decord's own word for it
            shape = self._reader[0].shape
            facts = ContainerFacts(None, int(shape[1]), int(shape[0]), 0, None, fps, 0.0)
            check_pixels(facts.width, facts.height, max_pixels)
            display = size = (facts.width, facts.height)
        notes = []
        if facts.frames and facts.frames != num_frames:
            notes.append(f"the container header claims {facts.frames} frames, its index holds {num_frames}")
        self.probe = Probe(
            num_frames=num_frames,
            fps=fps,
            width=display[0],
            height=display[1],
            duration_s=num_frames / fps if fps > 0 else facts.duration_s,
            codec=facts.codec,
            decoded_width=size[0],
            decoded_height=size[1],
            rotation=facts.rotation,
            container_frames=facts.frames,
            notes=notes,
            keyframes=self._key_indices(),
        )
        # Kept for the first read, which follows at once; later reads open their own.

    def _open(self):
        import decord

        try:
            return decord.VideoReader(self._path, ctx=decord.cpu(0), width=self._size[0], height=self._size[1],
                                      num_threads=self._threads)
        except Exception as e:  # decord raises DECORDError and RuntimeError
            raise MediaError(UNREADABLE, f"cannot open the video: {first_line(e)}") from None

    def _key_indices(self) -> Optional[list[int]]:
        try:
            keys = [int(k) for k in self._reader.get_key_indices()]
        except Exception:  # an index without keyframe flags: clips are not snapped
            return None
        return keys or None

    def read(self, indices: Sequence[int]) -> Clip:
        wanted = [int(i) for i in indices if 0 <= int(i) < self.probe.num_frames]
        notes = []
        if len(wanted) < len(indices):
            notes.append(f"{len(indices) - len(wanted)} requested frame(s) lie beyond the last frame")
        if not wanted:
            raise MediaError(UNREADABLE, "none of the requested frames exist")
        reader, self._reader = self._reader or self._open(), None
        try:
            frames = None
            if wanted == list(range(wanted[0], wanted[0] + len(wanted))):
                try:
                    frames = _decord_run(reader, wanted[0], len(wanted))
                except Exception as e:  # e.g. the index promised more frames than decode: the batch path decides
                    logger.debug("decord sequential read failed (%s); reading the batch instead", first_line(e))
                    reader = self._open()
            if frames is None:
                frames = reader.get_batch(wanted).asnumpy()  # writeable, unlike a DLPack view
            stamps = reader.get_frame_timestamp(wanted)[:, 0].astype(np.float64)
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(UNREADABLE, f"failed to decode frames: {first_line(e)}") from None
        finally:
            del reader  # stops its spinning thread
        return Clip(frames, [float(t) for t in stamps], wanted, notes)

    def close(self) -> None:
        self._reader = None


def _decord_run(reader, first: int, count: int) -> np.ndarray:
    """``count`` consecutive frames from ``first``: one accurate seek, then decoding forward.

    Cheaper than ``get_batch`` for a clip (measured 28-30 against 37-40 ms of CPU
    per 1080p frame): each frame is copied once into the clip's array.
    """
    reader.seek_accurate(first)
    frame = _decord_numpy(reader.next())
    if frame.ndim != 3 or frame.shape[2] != 3:  # decord 0.6 hands back (16, 16, 6) for 16x16 video
        raise ValueError(f"decord returned a frame of shape {frame.shape}")
    out = np.empty((count,) + frame.shape, np.uint8)
    out[0] = frame
    for k in range(1, count):
        out[k] = _decord_numpy(reader.next())  # a frame of another shape raises here
    return out


def _decord_numpy(array) -> np.ndarray:
    """A read-only numpy view of a decord ``NDArray``, without ``asnumpy``'s copy (~8 ms per 1080p frame)."""
    return np.from_dlpack(_DLPack(array.to_dlpack()))


class _DLPack:
    """Hands numpy a decord DLPack capsule (decord 0.6 has ``to_dlpack`` but not the ``__dlpack__`` protocol)."""

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, stream=None, **_):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0
