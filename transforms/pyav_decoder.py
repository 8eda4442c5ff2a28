"""The ``pyav`` decoder: FFmpeg through PyAV, for files whose index decord rejects.

It counts frames by decoding from the start where that is cheap (exact under
a variable frame rate) and seeks by timestamp beyond that.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from transforms.clips import Clip, Probe, fit_size, rotate
from transforms.container import check_pixels, container_facts
from transforms.elements import UNREADABLE
from transforms.media import MediaError, first_line


class PyAVDecoder:
    """FFmpeg through PyAV: decodes forward from the start (short videos) or from a seek."""

    name = "pyav"
    _SEQUENTIAL_UP_TO = 1500  # frames; beyond this, seek to each clip by its timestamp

    def __init__(self, path: str, max_side: int, max_pixels: int, threads: int = 0):
        import av

        facts = container_facts(path)
        check_pixels(facts.width, facts.height, max_pixels)
        try:
            self._container = av.open(path)
        except Exception as e:
            raise MediaError(UNREADABLE, f"cannot open the file: {first_line(e)}") from None
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        if threads:  # else FFmpeg picks (one thread per core)
            self._stream.thread_count = threads
        self._size = fit_size(facts.width, facts.height, max_side)
        self._rotation = facts.rotation
        fps = facts.fps
        claimed = facts.frames or (int(round(facts.duration_s * fps)) if fps > 0 else 0)
        if claimed <= 0:
            self._container.close()
            raise MediaError(UNREADABLE, "the container gives neither a frame count nor a duration")
        start = self._stream.start_time
        self._start_s = float(start * self._stream.time_base) if start is not None and self._stream.time_base else 0.0
        quarter = (facts.rotation // 90) % 2 == 1
        w, h = self._size
        self.probe = Probe(
            num_frames=claimed,
            fps=fps,
            width=facts.height if quarter else facts.width,
            height=facts.width if quarter else facts.height,
            duration_s=facts.duration_s or (claimed / fps if fps > 0 else 0.0),
            codec=facts.codec,
            decoded_width=h if quarter else w,
            decoded_height=w if quarter else h,
            rotation=facts.rotation,
            container_frames=facts.frames,
        )
        self._frames = None  # the running decode generator
        self._next_index: Optional[int] = None  # its next frame's index when counting from frame 0

    def read(self, indices: Sequence[int]) -> Clip:
        wanted = sorted({int(i) for i in indices})
        if not wanted:
            raise MediaError(UNREADABLE, "no frames requested")
        todo = set(wanted)
        frames, stamps, got, notes = [], [], [], []
        try:
            for index, frame in self._frames_from(wanted[0], wanted[-1]):
                if index in todo:
                    frames.append(frame.to_ndarray(format="rgb24", width=self._size[0], height=self._size[1]))
                    stamps.append(float(frame.time or 0.0) - self._start_s)
                    got.append(index)
                    todo.discard(index)
                if index >= wanted[-1]:
                    break
        except Exception as e:  # a damaged packet mid-stream: keep what decoded
            self._frames = None
            if not frames:
                raise MediaError(UNREADABLE, f"failed to decode frames: {first_line(e)}") from None
            notes.append(f"decoding stopped early: {first_line(e)}")
        if not frames:
            raise MediaError(UNREADABLE, "decoded none of the requested frames")
        if todo:
            notes.append(
                f"{len(todo)} of {len(wanted)} requested frame(s) could not be decoded "
                f"(the container claims {self.probe.num_frames} frames)"
            )
        return Clip(rotate(np.stack(frames), self._rotation), stamps, got, notes)

    def _frames_from(self, first_wanted: int, last_wanted: int):
        """Position the decoder before ``first_wanted``; yields ``(index, frame)``."""
        if last_wanted < self._SEQUENTIAL_UP_TO:  # count frames from the start: exact under VFR
            if self._frames is None or self._next_index is None or first_wanted < self._next_index:
                if self._frames is not None:
                    self._container.seek(0, stream=self._stream)
                self._frames, self._next_index = self._container.decode(self._stream), 0
            for frame in self._frames:
                index = self._next_index
                self._next_index += 1
                yield index, frame
            return
        target = first_wanted / self.probe.fps + self._start_s
        self._container.seek(int(target / self._stream.time_base), stream=self._stream, backward=True)
        self._frames, self._next_index = self._container.decode(self._stream), None
        for frame in self._frames:
            yield int(round((float(frame.time or 0.0) - self._start_s) * self.probe.fps)), frame

    def close(self) -> None:
        self._container.close()
