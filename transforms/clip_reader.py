"""Decoding an input's planned clips one ahead of the worker, in the decoder process."""
from __future__ import annotations

import threading
from typing import Optional, Sequence

from transforms.clips import Clip


class ClipReader:
    """Decodes an input's clips in order on a background thread, one clip ahead of its consumer.

    While the worker detects faces in clip ``k``, clip ``k + 1`` is being
    decoded (decord and PyAV release the GIL), so decoding overlaps detection
    instead of adding to it. At most two decoded clips exist at a time.
    """

    def __init__(self, decoder, clips: Sequence[Sequence[int]]):
        self._decoder = decoder
        self._clips = [[int(i) for i in c] for c in clips]
        self._done: dict[int, object] = {}  # clip number -> Clip, or the exception its decode raised
        self._wanted = 0  # the clip the consumer holds or waits for
        self._next = 0  # the clip the consumer should ask for next
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clip-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for k, indices in enumerate(self._clips):
            with self._cond:
                while not self._stopped and k > self._wanted + 1:
                    self._cond.wait()
                if self._stopped:
                    return
            try:
                result: object = self._decoder.read(indices)
            except BaseException as e:  # handed to the consumer, raised there
                result = e
            with self._cond:
                self._done[k] = result
                self._cond.notify_all()

    def planned(self, indices: Sequence[int]) -> Optional[int]:
        """The clip number of ``indices`` if it is the next one planned, else ``None``."""
        if not self._stopped and self._next < len(self._clips) and self._clips[self._next] == [int(i) for i in indices]:
            return self._next
        return None

    def get(self, k: int) -> Clip:
        """Clip number ``k`` (waits for its decode); earlier clips are dropped."""
        with self._cond:
            self._wanted, self._next = k, k + 1
            self._cond.notify_all()
            while k not in self._done:
                self._cond.wait()
            for old in [n for n in self._done if n < k]:
                del self._done[old]
            result = self._done[k]
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Stop decoding ahead; waits for a decode in progress (the decoder can then be closed)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        self._done.clear()
