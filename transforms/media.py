"""Reading media: staging remote files, fingerprints, probing and decoding.

Plain functions with no Beam in them, called by the extraction DoFn. Videos
are decoded with decord, one ``get_batch`` per clip of consecutive frames;
images with Pillow. Remote objects (any fsspec URL) are streamed to a local
temporary file, never read whole into memory.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import fsspec
import numpy as np

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class MediaError(Exception):
    """An input cannot be decoded; ``status`` says how to report it."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def is_local(uri: str) -> bool:
    protocol = fsspec.core.split_protocol(uri)[0]
    return protocol in (None, "file", "local")


@contextlib.contextmanager
def staged(uri: str) -> Iterator[str]:
    """A local path holding ``uri``'s bytes: the file itself, or a streamed temporary copy."""
    if is_local(uri):
        yield fsspec.core.strip_protocol(uri) if "://" in uri else uri
        return
    suffix = os.path.splitext(uri)[1][:16]
    fd, tmp = tempfile.mkstemp(prefix="deepfake-scan-", suffix=suffix)
    os.close(fd)
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        fs.get_file(path, tmp)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def fingerprint(path: str) -> tuple[int, str]:
    """Size in bytes and sha256 of a local file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


@dataclass(frozen=True)
class VideoProbe:
    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    codec: Optional[str]


def probe_video(path: str) -> VideoProbe:
    """Container facts: frame count and size from decord, codec name from PyAV."""
    import decord

    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except Exception as e:  # decord raises DECORDError and RuntimeError
        raise MediaError("unreadable", f"decord cannot open the video: {first_line(e)}") from None
    num_frames = len(reader)
    if num_frames == 0:
        raise MediaError("unreadable", "the video has no frames")
    fps = float(reader.get_avg_fps() or 0.0)
    first = reader[0].shape  # (H, W, 3)
    del reader
    return VideoProbe(
        num_frames=num_frames,
        fps=fps,
        width=int(first[1]),
        height=int(first[0]),
        duration_s=num_frames / fps if fps > 0 else 0.0,
        codec=_codec_name(path),
    )


def _codec_name(path: str) -> Optional[str]:
    try:
        import av

        with av.open(path) as container:
            return container.streams.video[0].codec_context.name
    except Exception:  # the codec name is informative only
        return None


def sample_clips(
    num_frames: int, fps: float, *, policy: str, clip_len: int, clip_every_s: float, max_clips: int
) -> list[list[int]]:
    """Frame indices to decode, as a list of clips.

    ``clips``: one clip of ``clip_len`` consecutive frames from the middle of a
    short video; for longer ones, one clip per ``clip_every_s`` seconds (at most
    ``max_clips``), evenly spaced. ``uniform``: a single "clip" of ``clip_len``
    frames evenly spaced over the whole video. A video shorter than ``clip_len``
    frames yields all of its frames.
    """
    if num_frames <= 0:
        return []
    if num_frames <= clip_len:
        return [list(range(num_frames))]
    if policy == "uniform":
        return [np.linspace(0, num_frames - 1, clip_len).round().astype(int).tolist()]
    if policy != "clips":
        raise ValueError(f"unknown sampling policy '{policy}' (valid: clips, uniform)")
    duration = num_frames / fps if fps > 0 else 0.0
    count = int(min(max_clips, max(1, np.ceil(duration / clip_every_s))))
    last_start = num_frames - clip_len
    if count == 1:
        starts = [last_start // 2]
    else:
        starts = np.linspace(0, last_start, count).round().astype(int).tolist()
    starts = sorted(set(starts))
    return [list(range(s, s + clip_len)) for s in starts]


def decode_video_clips(path: str, clips: Sequence[Sequence[int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frames N x H x W x 3 uint8 RGB, timestamps N seconds)`` per clip."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    try:
        for indices in clips:
            try:
                frames = reader.get_batch(list(indices)).asnumpy()
                stamps = reader.get_frame_timestamp(list(indices))[:, 0].astype(np.float64)
            except Exception as e:
                raise MediaError("unreadable", f"decord failed to decode frames: {first_line(e)}") from None
            yield frames, stamps
    finally:
        del reader


def load_image(path: str) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB, honouring EXIF orientation."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise MediaError("unreadable", f"cannot decode the image: {first_line(e)}") from None


def first_line(error: BaseException, limit: int = 300) -> str:
    """A one-line, bounded description of an exception for a verdict's error column."""
    text = str(error).strip().splitlines()
    line = text[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
