"""What a video's container header says, read before decoding, and the pixel limit it is held to.

decord and PyAV both start here: the header gives the codec, the stored size,
the display rotation and the frame count the container claims, so a decoder
can refuse an oversized stream (``decode.max_pixels``) before allocating a
single frame and report what the header promised against what it decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from transforms.elements import TOO_LARGE, UNREADABLE
from transforms.media import MediaError, first_line


@dataclass
class ContainerFacts:
    codec: Optional[str]
    width: int
    height: int
    rotation: int
    frames: Optional[int]
    fps: float
    duration_s: float


def container_facts(path: str) -> ContainerFacts:
    """Header facts through PyAV: codec, size, display rotation, frame count."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no"]
                raise MediaError(UNREADABLE, f"no video stream (the file has {', '.join(kinds)} streams)")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or 0
            duration = 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1e6
            rotation = 0
            try:  # the display matrix travels with the decoded frame
                rotation = int(round(next(container.decode(stream)).rotation or 0))
            except Exception:  # no decodable first frame: decode will say so
                pass
            return ContainerFacts(
                codec=ctx.name,
                width=int(ctx.width),
                height=int(ctx.height),
                rotation=rotation,
                frames=int(stream.frames) or None,
                fps=float(rate),
                duration_s=duration,
            )
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(UNREADABLE, f"cannot open the file: {first_line(e)}") from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse (``too_large``) frames of more than ``max_pixels`` pixels."""
    if width * height > max_pixels:
        raise MediaError(
            TOO_LARGE, f"{width}x{height} pixels per frame is over decode.max_pixels={max_pixels}"
        )
