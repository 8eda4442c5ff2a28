"""The Self-Blended Images authors' video inference, rewritten from their code's rules for parity tests.

Written from github.com/mapooon/SelfBlendedImages (``src/inference/preprocess.py``,
``src/utils/funcs.py``, ``src/inference/inference_video.py``, ``src/inference/model.py``),
independently of ``models/``: it must not share a line of logic with the code it checks.

- crop (``crop_face(frame, None, bbox, False, crop_by_bbox=True, only_img=True, phase='test')``):
  margins of ``w / 4`` and ``h / 4`` each halved in the test phase, edges through
  Python's ``int`` (truncation toward zero), ``+ 1`` on the far edges, clamped to the
  frame; then ``cv2.resize(crop, dsize=(380, 380))`` (bilinear) and HWC -> CHW;
- network (``Detector``): an efficientnet-pytorch B4 with a 2-class head under ``net``;
  input ``torch.tensor(crops).float() / 255`` (RGB, no mean/std), fake = ``softmax(1)[:, 1]``;
- faces per frame: only those whose box area ``(x1 - x0) * (y1 - y0)`` is at least half
  the largest in the frame are scored;
- video: per frame the maximum of its faces' scores, then the mean over frames.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import cv2
import numpy as np
import torch
from efficientnet_pytorch import EfficientNet

IMAGE_SIZE = (380, 380)


class Detector(torch.nn.Module):
    """Their detector's structure (the released weights are its state dict)."""

    def __init__(self):
        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-b4", num_classes=2)

    def forward(self, x):
        return self.net(x)


def crop_face_test_phase(img: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """Their test-phase box crop of an RGB frame, before the resize."""
    height, width = len(img), len(img[0])
    x0, y0, x1, y1 = bbox
    w, h = x1 - x0, y1 - y0
    w0_margin, w1_margin, h0_margin, h1_margin = w / 4, w / 4, h / 4, h / 4
    w0_margin *= 0.5  # phase == 'test' (margin=False)
    w1_margin *= 0.5
    h0_margin *= 0.5
    h1_margin *= 0.5
    y0_new = max(0, int(y0 - h0_margin))
    y1_new = min(height, int(y1 + h1_margin) + 1)
    x0_new = max(0, int(x0 - w0_margin))
    x1_new = min(width, int(x1 + w1_margin) + 1)
    return img[y0_new:y1_new, x0_new:x1_new]


def face_input(frame_rgb: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """One face as they feed it: the test-phase crop resized to 380x380, CHW uint8."""
    return cv2.resize(crop_face_test_phase(frame_rgb, bbox), dsize=IMAGE_SIZE).transpose((2, 0, 1))


def fake_probabilities(detector: Detector, faces_chw: np.ndarray, batch: int = 8) -> np.ndarray:
    """``softmax(model(x / 255))[:, 1]`` over CHW uint8 faces (batched only to bound memory)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(faces_chw), batch):
            img = torch.tensor(np.asarray(faces_chw[start : start + batch])).float() / 255
            out.append(detector(img).softmax(1)[:, 1].numpy())
    return np.concatenate(out) if out else np.empty(0, np.float32)


def kept_faces(boxes: Sequence[Sequence[float]]) -> list[int]:
    """Which of one frame's faces they score: area at least half the frame's largest."""
    sizes = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes]
    largest = max(sizes)
    return [k for k, size in enumerate(sizes) if size >= largest / 2]


def video_score(frames: dict[int, list[tuple[Sequence[float], float]]]) -> float:
    """Their fakeness: per frame the max over kept faces, then the mean over frames.

    ``frames`` maps a frame index to its faces' ``(box, fake probability)``.
    """
    per_frame = []
    for index in sorted(frames):
        faces = frames[index]
        keep = kept_faces([box for box, _ in faces])
        per_frame.append(max(faces[k][1] for k in keep))
    return float(np.mean(per_frame))


def faces_by_frame(tracks: Sequence[dict]) -> dict[int, list[tuple[list[float], int, int]]]:
    """A verdict's faces grouped by frame index: ``(box, track number, position in track)``."""
    frames: dict[int, list] = defaultdict(list)
    for t, track in enumerate(tracks):
        for k, (index, box) in enumerate(zip(track["frame_indices"], track["boxes"])):
            frames[int(index)].append((list(box), t, k))
    return dict(frames)


def decode_frames(path: str, indices: Sequence[int], decoder: str) -> np.ndarray:
    """RGB frames ``indices`` of a video, decoded by the library a verdict names (``decord`` or ``pyav``)."""
    indices = [int(i) for i in indices]
    if decoder == "decord":
        import decord

        return decord.VideoReader(path, ctx=decord.cpu(0)).get_batch(indices).asnumpy()
    if decoder == "pyav":
        import av

        wanted, got = set(indices), {}
        with av.open(path) as container:
            for n, frame in enumerate(container.decode(video=0)):
                if n in wanted:
                    got[n] = frame.to_ndarray(format="rgb24")
                if n >= max(indices):
                    break
        return np.stack([got[i] for i in indices])
    raise ValueError(f"no reference decode for decoder {decoder!r}")
