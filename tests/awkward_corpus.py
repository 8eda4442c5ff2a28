"""A corpus of awkward inputs an archive scan meets, generated into a folder.

Used by tests/test_hostile_inputs.py; run it by hand to try the scanner on it:

    python -m tests.awkward_corpus /tmp/awkward
    deepfake-scan scan /tmp/awkward --output /tmp/awkward_scan

Each entry says what a correct scanner reports for it:
  ok       a valid file with a face: status ok
  no_face  a valid file without a (findable) face: status no_face
  broken   status neither ok nor no_face, with an error text
  damaged  broken, or ok with warnings saying what was wrong (partly decodable)
  any      one row with a known status (a PNG named .mp4 may decode)
  unlisted a directory or a broken link: one row, or skipped by the listing
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

FPS = 25
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration at info level


@dataclass(frozen=True)
class Awkward:
    name: str
    expect: str
    why: str


def face_frames(count: int = 30, width: int = 640, height: int = 360, face_px: int = 300) -> list[np.ndarray]:
    """The astronaut's face moving 3 px to the right per frame over a plain background."""
    import cv2
    from skimage import data

    photo = cv2.resize(data.astronaut(), (face_px, face_px), interpolation=cv2.INTER_AREA)
    frames = []
    top = (height - face_px) // 2
    for i in range(count):
        frame = np.full((height, width, 3), 80 + (i % 3), np.uint8)
        x = min(width - face_px, 10 + 3 * i)
        frame[top : top + face_px, x : x + face_px] = photo
        frames.append(frame)
    return frames


@contextlib.contextmanager
def _keep_scheduling():
    """SVT-AV1's encoder switches the calling thread to SCHED_FIFO when run as root;
    every thread and process started from it afterwards would be real-time too."""
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    param = os.sched_getparam(0) if policy is not None else None
    try:
        yield
    finally:
        if policy is not None and os.sched_getscheduler(0) != policy:
            os.sched_setscheduler(0, policy, param)


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: Optional[dict] = None,
    container_options: Optional[dict] = None,
    rotation: int = 0,
    pts: Optional[Sequence[int]] = None,
    metadata: Optional[dict] = None,
) -> Path:
    """Encode RGB frames with PyAV; ``pts`` (in 1/1000 s) makes a variable frame rate; ``metadata``: container tags."""
    import av

    height, width = frames[0].shape[:2]
    with _keep_scheduling(), av.open(str(path), "w", options=container_options or {}) as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10.0) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _header_only(path: Path) -> None:
    """A container with a video stream declared and not one frame in it."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()


def _flip_bits(data: bytes, count: int, seed: int, skip: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = bytearray(data)
    for pos in rng.integers(skip, len(buf), count):
        buf[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def make_corpus(folder: os.PathLike) -> list[Awkward]:
    """Write the awkward inputs into ``folder``; returns what each one should yield."""
    from PIL import Image

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[Awkward] = []

    def add(name: str, expect: str, why: str) -> Path:
        entries.append(Awkward(name, expect, why))
        return out / name

    frames = face_frames()
    index_front = write_video(add("good_index_front.mp4", "ok", "moov atom first (faststart)"), frames,
                              container_options={"movflags": "faststart"})
    index_end = write_video(add("good_index_end.mp4", "ok", "moov atom last (the default)"), frames)
    front, end = index_front.read_bytes(), index_end.read_bytes()

    add("zero_bytes.mp4", "broken", "empty file").write_bytes(b"")
    add("random_bytes.mp4", "broken", "noise").write_bytes(np.random.default_rng(1).bytes(50_000))
    add("text.mp4", "broken", "a text file named .mp4").write_text("this is not a video\n" * 100)
    for fraction in (0.05, 0.5, 0.9):
        add(f"truncated_front_{int(fraction * 100)}.mp4", "damaged", "index at the front, data cut off") \
            .write_bytes(front[: int(len(front) * fraction)])
        add(f"truncated_end_{int(fraction * 100)}.mp4", "broken", "index at the end, which is cut off") \
            .write_bytes(end[: int(len(end) * fraction)])
    _audio_only(add("audio_only.mp4", "broken", "an AAC track and no video"))
    _header_only(add("header_only.mp4", "broken", "a video stream with no frames"))
    for seed in (1, 2):
        add(f"bit_flips_{seed}.mp4", "any", "bits flipped through the file").write_bytes(
            _flip_bits(end, 40, seed)
        )
    write_video(add("one_frame.mp4", "ok", "a single frame"), frames[:1])
    big = face_frames(count=8, width=3840, height=2160, face_px=1200)
    write_video(add("uhd_4k.mp4", "ok", "3840x2160: downscaled inside the decoder"), big,
                options={"preset": "ultrafast"})
    write_video(add("tiny_16x16.mp4", "no_face", "16x16 pixels"),
                [np.full((16, 16, 3), 100 + i, np.uint8) for i in range(30)])
    turned = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in frames]  # stored sideways ...
    write_video(add("rotated_90.mp4", "ok", "stored sideways with a display rotation"), turned, rotation=90)
    stamps = np.cumsum([0] + [40 if i % 3 else 80 for i in range(1, len(frames))]).tolist()
    write_video(add("variable_frame_rate.mp4", "ok", "frame durations of 40 and 80 ms"), frames, pts=stamps)
    write_video(add("hevc.mp4", "ok", "H.265"), frames, codec="libx265", options={"preset": "ultrafast", "x265-params": "log-level=error"})
    write_video(add("hevc_10bit.mp4", "ok", "H.265 Main 10"), frames, codec="libx265", pix_fmt="yuv420p10le",
                options={"preset": "ultrafast", "x265-params": "log-level=error"})
    write_video(add("vp9.webm", "ok", "VP9 in WebM"), frames, codec="libvpx-vp9",
                options={"deadline": "realtime", "cpu-used": "8"})
    write_video(add("av1.mp4", "ok", "AV1 (decord's FFmpeg cannot decode it)"), frames, codec="libsvtav1",
                options={"preset": "12"})
    write_video(add("mpeg4_part2.avi", "ok", "MPEG-4 Part 2 in AVI"), frames, codec="mpeg4")
    Image.fromarray(frames[0]).save(add("png_named.mp4", "any", "a PNG image named .mp4"), format="PNG")
    Image.fromarray(frames[0]).save(add("good_still.jpg", "ok", "a JPEG still"), quality=90)
    jpeg = (out / "good_still.jpg").read_bytes()
    add("truncated.jpg", "broken", "a JPEG cut in half").write_bytes(jpeg[: len(jpeg) // 2])
    add("name with spaces.mp4", "ok", "spaces in the name").write_bytes(end)
    add("nön-ascii 名前.mp4", "ok", "non-ASCII name").write_bytes(end)
    add("control\tchars\nin name.mp4", "ok", "a tab and a newline in the name").write_bytes(end)
    add("spliced.mp4", "any", "the first half of one file and the second of another").write_bytes(
        end[: len(end) // 2] + front[len(front) // 2 :]
    )
    (out / "a_directory.mp4").mkdir(exist_ok=True)
    entries.append(Awkward("a_directory.mp4", "unlisted", "a directory named .mp4"))
    _symlink("does_not_exist.mp4", out / "dangling_link.mp4")
    entries.append(Awkward("dangling_link.mp4", "unlisted", "a link to nothing"))
    _symlink("loop_b.mp4", out / "loop_a.mp4")
    _symlink("loop_a.mp4", out / "loop_b.mp4")
    entries += [Awkward("loop_a.mp4", "unlisted", "a symlink loop"), Awkward("loop_b.mp4", "unlisted", "a symlink loop")]
    return entries


def _symlink(target: str, link: Path) -> None:
    if link.is_symlink():
        link.unlink()
    os.symlink(target, link)


def mutate(data: bytes, how: str, rng: np.random.Generator, other: bytes = b"") -> bytes:
    """One fuzz mutation of a valid file: ``truncate``, ``flip`` bits or ``splice`` with ``other``."""
    if how == "truncate":
        return data[: int(rng.integers(1, len(data)))]
    if how == "flip":
        return _flip_bits(data, int(rng.integers(1, 200)), int(rng.integers(0, 2**31)), skip=0)
    if how == "splice":
        return data[: int(rng.integers(0, len(data)))] + other[int(rng.integers(0, len(other))) :]
    raise ValueError(f"unknown mutation {how!r}")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for entry in make_corpus(sys.argv[1] if len(sys.argv) > 1 else "awkward_corpus"):
        logging.info("%-32r %-8s %s", entry.name, entry.expect, entry.why)
