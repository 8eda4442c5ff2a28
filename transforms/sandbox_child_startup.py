"""The decoder child's start-up: settings for the whole process, and what it loads before any input.

Everything here happens once per child, before the first request, so that
each input's forked process (``transforms.sandbox_child``) starts with its
libraries imported and warmed and its limits in place.
"""
from __future__ import annotations

import importlib
import logging
import os

import numpy as np

from transforms.containment import OFF
from transforms.decode_session import DecodeSession, handle
from transforms.media import first_line

logger = logging.getLogger(__name__)

# Imported once here, so that each input's process starts with them loaded.
_PRELOAD = ("numpy", "av", "decord", "cv2", "PIL.Image", "PIL.ImageOps", "models.align", "models.crops")


def preload(level: str) -> None:
    for name in _PRELOAD + (() if level == OFF else ("pyseccomp",)):
        try:
            importlib.import_module(name)
        except Exception as e:  # a decoder that needs it reports the same failure when used
            logger.info("decoder child: %s not preloaded: %s", name, first_line(e))
    try:
        from PIL import Image

        Image.init()  # Pillow imports its format plugins on the first unknown file otherwise
    except Exception:
        pass


def warm_up(scratch: str) -> None:
    """Decode a tiny H.264 clip with decord and with PyAV, once, before any input.

    FFmpeg and decord set up tables and buffers on their first decode in a
    process; done here, every input's forked process inherits them. Measured:
    about 30 ms less per input (1080p H.264, decord).
    """
    path = os.path.join(scratch, "warm-up.mp4")
    try:
        _tiny_h264(path)
        session = DecodeSession()
        for decoder in ("decord", "pyav"):
            handle(session, {"cmd": "open", "decoder": decoder, "path": path, "max_side": 64, "max_pixels": 4096})
            handle(session, {"cmd": "read", "indices": [0, 1]})
        session.close()
    except Exception as e:  # a decoder that cannot decode this cannot decode inputs either, and says so then
        logger.info("decoder child: warm-up decode failed: %s", first_line(e))
    finally:
        if os.path.exists(path):
            os.remove(path)
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads > 1:  # a fork copies only the forking thread: a library's pool would be left broken
        logger.warning("decoder child: %d threads after start-up; inputs' processes may inherit broken pools", threads)


def _tiny_h264(path: str) -> None:
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for value in (16, 160):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), value, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    try:
        import resource

        limit = megabytes << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError) as e:  # not every platform enforces RLIMIT_AS
        logger.warning("decoder memory limit not applied: %s", e)


def normal_scheduling() -> None:
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
