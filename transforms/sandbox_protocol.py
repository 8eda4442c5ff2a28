"""The wire between the worker and its decoder child: length-prefixed JSON, then raw pixels.

Every message, both ways, is an 8-byte little-endian length and that many
bytes of JSON. No pickle: the child handles hostile bytes, so nothing it sends
is ever executed, and a reply larger than ``MAX_MESSAGE`` marks a broken child.
The replies to the requests in ``PIXEL_REPLIES`` are followed by the raw
uint8 pixels of the ``shape`` they name, read straight into a numpy array.

Requests (``cmd``): ``open`` (decoder, path, max_side, max_pixels, threads),
``read`` (indices: whole frames back), ``plan`` (clips to decode ahead),
``hold`` (indices: decode and keep), ``downscaled`` (positions, width, height),
``warp`` (positions, 2x3 matrices, size), ``crop_boxes`` (positions, boxes,
size, box_margins) and ``close``; ``open`` to ``close`` is one input, which
the child decodes in a process of its own, so the worker closes an input
before opening the next. ``containment`` asks for the child's containment
report (``transforms.containment.Report``). A failed request is answered
``{"error": text, "status": status}``.
"""
from __future__ import annotations

import json
import struct
from typing import BinaryIO, Optional

import numpy as np

HEADER = struct.Struct("<Q")
MAX_MESSAGE = 1 << 20  # JSON replies are small; anything bigger is a broken child
PIXEL_REPLIES = frozenset({"read", "downscaled", "warp", "crop_boxes"})


def encode(message: dict) -> bytes:
    """One framed message."""
    payload = json.dumps(message).encode()
    return HEADER.pack(len(payload)) + payload


def write_message(out: BinaryIO, message: dict, pixels: Optional[np.ndarray] = None) -> None:
    """Send ``message`` and, for a pixel reply, its pixels; flushed at once."""
    out.write(encode(message))
    if pixels is not None:
        out.write(memoryview(np.ascontiguousarray(pixels, dtype=np.uint8)).cast("B"))
    out.flush()


def read_message(inbox: BinaryIO) -> Optional[dict]:
    """The next message, or ``None`` when the other side closed the pipe."""
    header = read_exactly(inbox, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    body = read_exactly(inbox, size)
    return None if body is None else json.loads(body)


def read_exactly(inbox: BinaryIO, size: int) -> Optional[bytes]:
    """``size`` bytes, or ``None`` at end of file (unbuffered streams return short reads)."""
    chunks, got = [], 0
    while got < size:
        chunk = inbox.read(size - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
