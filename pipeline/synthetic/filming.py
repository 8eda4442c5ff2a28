"""Filming one synthetic item: a portrait hung in a scene, a moving camera, H.264 or a still.

Each face hangs as a framed portrait in a larger scene (a tinted brick or
grass wall, plaster, or the rocket photo); a fake is made by
:func:`models.manipulate.blend_face` on the face texture before filming, so
every frame carries the manipulation. A virtual camera (slow pan and zoom,
hand-held shake) films the scene, which is checked so that no face leaves the
frame and the camera never sees past the scene, and PyAV writes H.264 MP4
(a still is written as JPEG, or PNG for a fake). Every random choice comes
from generators seeded by ``(seed, item index)``, so the same seed gives
byte-identical files on the same software stack.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import av
import cv2
import numpy as np
import skimage.data

from models.labels import FAKE, REAL
from models.manipulate import FACE_SWAP, SELF_BLEND, blend_face
from pipeline.synthetic.portraits import Faces, Portrait

_SCENE_SCALE = 1.5  # scene side / frame side, so the camera never sees past the scene
# skimage texture -> RGB tint range. Gravel and blurred photos (coffee, Hubble) were
# dropped: once compressed, MTCNN finds false faces in them.
_TEXTURE_TINTS = {
    "brick": ((0.55, 0.30, 0.22), (0.80, 0.45, 0.35)),
    "grass": ((0.30, 0.50, 0.20), (0.45, 0.70, 0.30)),
}


@dataclass(frozen=True)
class SampleItem:
    """One file of the archive.

    Attributes:
        uri: Absolute path of the file.
        label: ``"real"`` or ``"fake"``.
        manipulation: Manipulation name for fakes (see ``models.manipulate.manipulation_names``),
            ``""`` for reals.
        kind: ``"video"`` or ``"image"``.
        faces: Number of faces visible in every frame (0, 1 or 2).
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frame rate (videos only).
        frames: Number of frames (videos only).
        crf: x264 constant rate factor (videos only).
    """

    uri: str
    label: str
    manipulation: str
    kind: str
    faces: int
    width: int
    height: int
    fps: int | None = None
    frames: int | None = None
    crf: int | None = None

    @property
    def duration_s(self) -> float | None:
        """Video duration in seconds."""
        return None if self.fps is None else self.frames / self.fps


@dataclass(frozen=True)
class SampleSpec:
    """Recipe of one item. ``who``: space-separated ``astronaut`` / ``lfw<index>`` identities."""

    name: str
    size: tuple[int, int]
    who: str = ""
    manipulation: str = ""
    donor: str = ""
    background: str = "plaster"
    face_height: float = 0.4  # face box height / frame height
    fps: int = 0  # 0 for a still image
    seconds: float = 0.0
    crf: int = 23
    preset: str = "veryfast"
    keyframe_every_s: float = 0.0  # 0: x264's default (at most 250 frames between keyframes)

    @property
    def identities(self) -> tuple[str, ...]:
        return tuple(self.who.split())


def make_sample(spec: SampleSpec, index: int, out_dir: str, seed: int, faces: Faces) -> SampleItem:
    """Compose, film and write one item."""
    if spec.size[0] % 2 or spec.size[1] % 2:
        raise ValueError(f"{spec.name}: H.264 4:2:0 needs even dimensions")
    scene_rng, fake_rng, camera_rng = (np.random.default_rng([seed, index, k]) for k in range(3))
    scene, boxes = _compose(spec, faces, scene_rng, fake_rng)
    count = max(int(round(spec.fps * spec.seconds)), 1)
    scene_size = (scene.shape[1], scene.shape[0])
    matrices = _camera(spec, scene_size, count, camera_rng)
    _check_framing(spec, matrices, boxes, scene_size)
    frames = _frames(scene, matrices, spec.size)
    common = dict(label=FAKE if spec.manipulation else REAL, manipulation=spec.manipulation,
                  faces=len(spec.identities), width=spec.size[0], height=spec.size[1])
    if spec.fps:
        path = os.path.join(out_dir, spec.name + ".mp4")
        _write_video(path, frames, spec)
        return SampleItem(path, kind="video", fps=spec.fps, frames=count, crf=spec.crf, **common)
    path = os.path.join(out_dir, spec.name + (".png" if spec.manipulation else ".jpg"))
    params = ([cv2.IMWRITE_PNG_COMPRESSION, 6] if spec.manipulation
              else [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not cv2.imwrite(path, cv2.cvtColor(next(frames), cv2.COLOR_RGB2BGR), params):
        raise OSError(f"could not write {path}")
    return SampleItem(path, kind="image", **common)


def _compose(spec: SampleSpec, faces: Faces, rng: np.random.Generator,
             fake_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The scene (in frame pixels, larger than the frame) and its ``(k, 4)`` face boxes."""
    (width, height), identities = spec.size, spec.identities
    scene = _background(spec.background, int(width * _SCENE_SCALE), int(height * _SCENE_SCALE),
                        rng)
    centre = np.array([scene.shape[1], scene.shape[0]]) / 2
    offsets = [0.0] if len(identities) < 2 else [-0.24 * width, 0.24 * width]
    boxes = []
    for identity, offset in zip(identities, offsets):
        portrait = faces.portrait(identity, spec.face_height * height)
        if spec.manipulation:
            portrait = _manipulate(portrait, spec, faces, fake_rng)
        jitter = rng.uniform(-0.03, 0.03, 2) * (width, height)
        boxes.append(_paste(scene, portrait, centre + (offset, 0.0) + jitter))
    return scene, np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _background(name: str, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A face-free scene: a tinted brick or grass wall, plaster, or the rocket photo."""
    if name == "rocket":  # resize to cover, then centre-crop
        photo = skimage.data.rocket()
        scale = max(width / photo.shape[1], height / photo.shape[0])
        size = (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)
        top, left = (size[1] - height) // 2, (size[0] - width) // 2
        return np.ascontiguousarray(photo[top:top + height, left:left + width])
    if name in _TEXTURE_TINTS:
        tile = getattr(skimage.data, name)().astype(np.float32) / 255.0
        reps = (int(np.ceil(height / tile.shape[0])), int(np.ceil(width / tile.shape[1])))
        texture = np.tile(tile, reps)[:height, :width]
        tint = rng.uniform(*_TEXTURE_TINTS[name]).astype(np.float32)
    elif name == "plaster":
        coarse = rng.random((6, 10)).astype(np.float32)
        texture = 0.55 + 0.25 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        texture += rng.normal(0.0, 0.03, (height, width)).astype(np.float32)
        tint = rng.uniform((0.75, 0.72, 0.62), (0.95, 0.92, 0.85)).astype(np.float32)
    else:
        raise ValueError(f"unknown background {name!r}")
    light = np.linspace(1.05, 0.8, height, dtype=np.float32)[:, None, None]  # light from above
    return np.clip(255 * texture[..., None] * tint * light, 0, 255).astype(np.uint8)


def _paste(scene: np.ndarray, portrait: Portrait, centre: np.ndarray) -> np.ndarray:
    """Hang the portrait, in a dark frame, with its face centred on ``centre``; returns face box."""
    height, width = portrait.image.shape[:2]
    x0, y0 = np.round(centre - portrait.box.reshape(2, 2).mean(axis=0)).astype(int)
    border = max(int(0.05 * max(height, width)), 2)
    if min(x0, y0) < border or x0 + width + border > scene.shape[1] or (
            y0 + height + border > scene.shape[0]):
        raise RuntimeError("portrait does not fit in the scene")
    cv2.rectangle(scene, (x0 - border, y0 - border), (x0 + width + border - 1,
                  y0 + height + border - 1), (52, 36, 24), thickness=-1)
    scene[y0:y0 + height, x0:x0 + width] = portrait.image
    return portrait.box + (x0, y0, x0, y0)


def _manipulate(portrait: Portrait, spec: SampleSpec, faces: Faces,
                rng: np.random.Generator) -> Portrait:
    """Apply the spec's manipulation to the face texture."""
    if spec.manipulation == SELF_BLEND:
        result = blend_face(portrait.image, portrait.landmarks, rng)
    elif spec.manipulation == FACE_SWAP:
        donor = faces.portrait(spec.donor, float(portrait.box[3] - portrait.box[1]))
        result = blend_face(portrait.image, portrait.landmarks, rng,
                            source=donor.image, source_landmarks=donor.landmarks)
    else:
        raise ValueError(f"unknown manipulation {spec.manipulation!r}")
    return Portrait(result.image, portrait.landmarks, portrait.box)


def _camera(spec: SampleSpec, scene_size: tuple[int, int], count: int,
            rng: np.random.Generator) -> np.ndarray:
    """``(count, 2, 3)`` scene-to-frame matrices: slow pan and zoom plus hand-held shake."""
    width, height = spec.size
    t = np.linspace(0.0, 1.0, count) if count > 1 else np.zeros(1)
    ease = t * t * (3 - 2 * t)
    direction = rng.normal(size=2)
    pan = 0.06 * width * direction / np.linalg.norm(direction)
    zoom_start, zoom_end = rng.uniform(1.0, 1.12, 2)
    shake = np.zeros((count, 3))  # dx, dy in frame pixels, roll in degrees
    for axis, amplitude in enumerate((0.004 * width, 0.004 * width, 0.4)):
        for _ in range(3):
            freq, phase = rng.uniform(0.3, 2.5), rng.uniform(0, 2 * np.pi)
            shake[:, axis] += amplitude / 3 * np.sin(2 * np.pi * freq * t * spec.seconds + phase)
    if count == 1:  # a still photo is a single steady shot
        shake[:] = 0.0
    look_at = np.array(scene_size, dtype=np.float64) / 2 + (ease[:, None] - 0.5) * pan
    zoom = zoom_start + (zoom_end - zoom_start) * ease
    roll = np.deg2rad(shake[:, 2])
    matrices = np.empty((count, 2, 3))
    matrices[:, 0, 0], matrices[:, 0, 1] = zoom * np.cos(roll), -zoom * np.sin(roll)
    matrices[:, 1, 0], matrices[:, 1, 1] = zoom * np.sin(roll), zoom * np.cos(roll)
    matrices[:, :, 2] = (np.array([width, height]) / 2 + shake[:, :2]
                         - np.einsum("nij,nj->ni", matrices[:, :, :2], look_at))
    return matrices


def _check_framing(spec: SampleSpec, matrices: np.ndarray, boxes: np.ndarray,
                   scene_size: tuple[int, int]) -> None:
    """Raise if a face leaves the frame, or the frame sees past the scene, in any frame."""
    width, height = spec.size
    frame = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=np.float64)
    corners = boxes[:, [0, 1, 2, 1, 0, 3, 2, 3]].reshape(-1, 2)
    for matrix in matrices:
        inverse = cv2.invertAffineTransform(matrix)
        seen = frame @ inverse[:, :2].T + inverse[:, 2]
        if seen.min() < 0 or np.any(seen.max(axis=0) > scene_size):
            raise RuntimeError(f"{spec.name}: the camera sees past the scene")
        mapped = corners @ matrix[:, :2].T + matrix[:, 2]
        if len(mapped) and (mapped.min() < 2 or np.any(mapped.max(axis=0) > (width - 2,
                                                                              height - 2))):
            raise RuntimeError(f"{spec.name}: a face leaves the frame")


def _frames(scene: np.ndarray, matrices: np.ndarray, size: tuple[int, int]) -> Iterator[np.ndarray]:
    for matrix in matrices:
        yield cv2.warpAffine(scene, matrix, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)


def _write_video(path: str, frames: Iterator[np.ndarray], spec: SampleSpec) -> None:
    """Encode RGB frames as H.264 (libx264, yuv420p) in MP4."""
    with av.open(path, mode="w", format="mp4") as container:
        # Byte-identical output needs a fixed thread count (x264's output depends on it) and
        # no macroblock-tree rate control: with it, the libx264 bundled with PyAV gives
        # different bytes from run to run for identical frames.
        options = {"crf": str(spec.crf), "preset": spec.preset, "threads": "2",
                   "x264-params": "mbtree=0"}
        if spec.keyframe_every_s > 0:
            options["g"] = str(max(1, int(round(spec.keyframe_every_s * spec.fps))))
        stream = container.add_stream("libx264", rate=spec.fps, options=options)
        stream.width, stream.height = spec.size
        stream.pix_fmt = "yuv420p"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
