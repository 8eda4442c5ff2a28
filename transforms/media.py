"""Reading media: staging remote files, fingerprints and clip sampling.

Plain functions with no Beam in them, called by the extraction DoFn. Remote
objects (any fsspec URL) are streamed to a local temporary file, never read
whole into memory. Decoding itself lives in ``transforms.decoders`` and runs
in the sandboxed child process of ``transforms.sandbox``.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from typing import Iterator, Optional, Sequence

import fsspec
import numpy as np

from transforms.elements import TOO_LARGE, UNREADABLE

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
def staged(uri: str, max_bytes: Optional[int] = None) -> Iterator[str]:
    """A local path holding ``uri``'s bytes: the file itself, or a streamed temporary copy.

    Raises ``MediaError`` (``too_large``) before copying anything when the
    object is bigger than ``max_bytes``, and (``unreadable``) when the path is
    a directory.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if max_bytes is not None:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise MediaError(TOO_LARGE, f"file of {size / 2**20:.0f} MB is over decode.max_file_mb")
    if fs.isdir(path):
        raise MediaError(UNREADABLE, "a directory, not a media file")
    if is_local(uri):
        yield path
        return
    suffix = os.path.splitext(uri)[1][:16]
    fd, tmp = tempfile.mkstemp(prefix="deepfake-scan-", suffix=suffix)
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


# Metadata that changes whenever an object's bytes do, in order of trust: an object
# store's generation or version id, its content hash or ETag, then size and mtime.
_VERSION_KEYS = ("generation", "VersionId", "crc32c", "md5Hash", "ETag", "etag")


def source_version(uri: str) -> Optional[str]:
    """A cheap pre-key of ``uri``'s bytes from its metadata alone (one stat or HEAD, no bytes read).

    Two equal versions of one URI mean the bytes did not change: GCS's
    generation, S3's version id or ETag, else size and modification time.
    ``None`` when the file system says nothing usable; then only hashing the
    content can tell.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    info = fs.info(path)
    size = info.get("size")
    for key in _VERSION_KEYS:
        if info.get(key):
            return f"size={size};{key}={info[key]}"
    for key in ("mtime", "LastModified", "updated", "created"):
        if info.get(key):
            return f"size={size};{key}={info[key]}"
    return None


def fingerprint(path: str) -> tuple[int, str]:
    """Size in bytes and sha256 of a local file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def sample_clips(
    num_frames: int,
    fps: float,
    *,
    policy: str,
    clip_len: int,
    clip_every_s: float,
    max_clips: int,
    keyframes: Optional[Sequence[int]] = None,
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
    if keyframes:
        starts = _snap(starts, keyframes, last_start, clip_len)
    starts = sorted(set(starts))
    return [list(range(s, s + clip_len)) for s in starts]


def _snap(starts: list[int], keyframes: Sequence[int], last_start: int, clip_len: int) -> list[int]:
    keys = np.array(sorted(k for k in set(keyframes) if 0 <= k <= last_start), dtype=np.int64)
    if not len(keys):
        return starts
    # A single clip stays near the middle (within two clip lengths); several move at most
    # half-way to their neighbours, so they stay spread over the video.
    gaps = np.diff(starts) if len(starts) > 1 else np.array([4 * clip_len])
    snapped = []
    for i, start in enumerate(starts):
        reach = min(gaps[max(i - 1, 0)], gaps[min(i, len(gaps) - 1)]) / 2
        nearest = int(keys[np.argmin(np.abs(keys - start))])
        snapped.append(nearest if abs(nearest - start) <= reach else start)
    return snapped


# decord prefixes its messages with a time and its build's source path: "[05:38:27] /github/.../x.cc:61: "
_NATIVE_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ")


def first_line(error: BaseException, limit: int = 300) -> str:
    """A one-line, bounded description of an exception for a verdict's error column."""
    text = _NATIVE_PREFIX.sub("", str(error)).strip().splitlines()
    line = text[0].strip() if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
