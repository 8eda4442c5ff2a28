"""Shared fixtures: real H.264 files written with PyAV, and the small sample archive."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def write_h264(path: os.PathLike, frames: Iterable[np.ndarray], fps: int = 25, crf: int = 20) -> Path:
    """Encode RGB uint8 frames as an H.264 .mp4 with PyAV (libx264, yuv420p)."""
    import av

    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def decode_all_pyav(path: os.PathLike) -> np.ndarray:
    """Every frame of a video decoded by PyAV, as N x H x W x 3 RGB."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def astronaut_scene(width: int = 640, height: int = 360, x: int = 60, face_px: int = 300) -> np.ndarray:
    """A frame holding scikit-image's astronaut photo at horizontal offset ``x``."""
    import cv2
    from skimage import data

    frame = np.full((height, width, 3), 90, np.uint8)
    photo = cv2.resize(data.astronaut(), (face_px, face_px), interpolation=cv2.INTER_AREA)
    top = (height - face_px) // 2
    frame[top : top + face_px, x : x + face_px] = photo
    return frame


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids thread contention on a busy CI machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory):
    """The small variant of the sample archive (same code as `deepfake-scan samples`)."""
    from pipeline.synthetic.samples import generate_samples

    out = tmp_path_factory.mktemp("samples")
    items = generate_samples(str(out), seed=0, small=True)
    return out, items


@pytest.fixture(scope="session")
def moving_face_video(tmp_path_factory) -> Path:
    """3 s of the astronaut panning across a 640x360 frame at 25 fps."""
    out = tmp_path_factory.mktemp("videos") / "moving_face.mp4"
    return write_h264(out, (astronaut_scene(x=40 + 2 * i) for i in range(75)), fps=25)
