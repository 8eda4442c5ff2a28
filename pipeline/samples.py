"""Generate a small, labelled archive of real and manipulated face videos.

The archive is built from the real face photos scikit-image ships (the NASA
astronaut portrait and faces of its LFW subset), so it needs no download. Each
face hangs as a framed portrait in a larger scene; fakes are made by
:func:`models.manipulate.blend_face` on the face texture before filming, so
every frame carries the manipulation; a virtual camera (pan, zoom, hand-held
shake) films the scene into H.264 MP4 files with PyAV. Every random choice
comes from generators seeded by ``(seed, item index)``, so the same seed gives
byte-identical files on the same software stack.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator

import av
import cv2
import numpy as np
import skimage.data

from models.manipulate import FACE_SWAP, SELF_BLEND, blend_face
from models.torchvision_compat import import_facenet_mtcnn

logger = logging.getLogger(__name__)

REAL, FAKE = "real", "fake"
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("uri", "label", "manipulation")

_LFW_SIZE = 150  # canonical upscaled LFW portrait, reliably detected by MTCNN
_ASTRONAUT_CROP = (slice(0, 215), slice(115, 335))  # head; little of the suit's folds
_SKIN_TONES = ((0.86, 0.66, 0.55), (0.74, 0.54, 0.42), (0.56, 0.39, 0.29),
               (0.92, 0.75, 0.63), (0.66, 0.48, 0.35))
_SHADOW = np.array([0.07, 0.05, 0.045])
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
        manipulation: Manipulation name for fakes (see ``manipulation_names()``), ``""`` for reals.
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


_P240, _P360, _P480, _P720, _P1080 = (320, 240), (640, 360), (854, 480), (1280, 720), (1920, 1080)
_UF, _SB, _FS = "ultrafast", SELF_BLEND, FACE_SWAP
_FULL = (
    SampleSpec("real_000", _P360, "lfw31", background="brick", fps=30, seconds=4),
    SampleSpec("real_001", _P720, "lfw26", background="grass", face_height=0.34, fps=24, seconds=3,
               crf=20),
    SampleSpec("real_002", _P480, "lfw2", fps=25, seconds=5, crf=28, preset=_UF),
    SampleSpec("real_003", _P360, "lfw44", background="grass", fps=24, seconds=8, crf=30, preset=_UF),
    SampleSpec("real_two_faces_004", _P720, "lfw46 lfw41", background="brick", face_height=0.3,
               fps=30, seconds=4, preset=_UF),
    SampleSpec("real_no_face_005", _P360, background="rocket", fps=30, seconds=3, crf=25),
    SampleSpec("fake_self_blend_006", _P1080, "astronaut", _SB, face_height=0.22, fps=25, seconds=3,
               crf=24, preset=_UF),
    SampleSpec("fake_self_blend_007", _P360, "lfw99", _SB, background="brick", fps=30, seconds=4,
               crf=26),
    SampleSpec("fake_self_blend_008", _P720, "lfw21", _SB, face_height=0.34, fps=24, seconds=3, crf=18),
    SampleSpec("fake_face_swap_009", _P360, "lfw3", _FS, "lfw29", "grass", fps=24, seconds=5),
    SampleSpec("fake_face_swap_010", _P480, "lfw77", _FS, "lfw22", "brick", fps=30, seconds=4, crf=28,
               preset=_UF),
    SampleSpec("fake_face_swap_011", _P720, "lfw87", _FS, "lfw94", face_height=0.34, fps=25,
               seconds=3, crf=21),
    SampleSpec("still_real", (640, 480), "lfw43", background="grass"),
    SampleSpec("still_fake_face_swap", (640, 480), "lfw79", _FS, "lfw17", "brick"),
)
_SMALL = (
    SampleSpec("real_000", _P240, "lfw31", background="brick", face_height=0.48, fps=24, seconds=1.5),
    SampleSpec("fake_self_blend_001", _P240, "lfw99", _SB, face_height=0.48, fps=24, seconds=1.5),
    SampleSpec("fake_face_swap_002", _P240, "lfw3", _FS, "lfw29", "grass", 0.48, fps=30, seconds=1.5,
               crf=26),
    SampleSpec("real_two_faces_003", (480, 270), "lfw46 lfw41", background="brick", face_height=0.46,
               fps=25, seconds=1.5),
    SampleSpec("real_no_face_004", _P240, background="rocket", fps=24, seconds=1.5),
    SampleSpec("still_real", _P240, "lfw43", background="grass", face_height=0.48),
    SampleSpec("still_fake_face_swap", _P240, "lfw79", _FS, "lfw17", face_height=0.48),
)


@dataclass(frozen=True)
class _Portrait:
    """A face photo with its MTCNN landmarks and face box (x1, y1, x2, y2)."""

    image: np.ndarray
    landmarks: np.ndarray
    box: np.ndarray


class FaceSource:
    """Portraits of the source identities; MTCNN is built on first use."""

    def __init__(self) -> None:
        self._detector = None
        self._canonical: dict[str, _Portrait] = {}
        self._lfw: np.ndarray | None = None

    def _detect(self, rgb: np.ndarray, identity: str) -> tuple[np.ndarray, np.ndarray]:
        if self._detector is None:
            self._detector = import_facenet_mtcnn()(keep_all=True, device="cpu", min_face_size=60)
        boxes, probs, points = self._detector.detect(rgb, landmarks=True)
        if boxes is None:
            raise RuntimeError(f"MTCNN finds no face in source photo {identity!r}")
        best = int(np.argmax(probs))
        box = np.asarray(boxes[best], dtype=np.float64)
        points = np.asarray(points[best], dtype=np.float64)
        # Quarter-pixel rounding keeps float noise of the detector out of the output bytes.
        return np.round(box * 4) / 4, np.round(points * 4) / 4

    def _source(self, identity: str, size: int = _LFW_SIZE) -> np.ndarray:
        """The identity's photo; an LFW face is upscaled to ``size`` and tinted a skin tone."""
        if identity == "astronaut":
            return np.ascontiguousarray(skimage.data.astronaut()[_ASTRONAUT_CROP])
        if not identity.startswith("lfw") or not 0 <= int(identity[3:]) < 100:
            raise ValueError(f"unknown identity {identity!r}")
        if self._lfw is None:
            self._lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces
        index = int(identity[3:])
        gray = self._lfw[index].astype(np.float32)
        low, high = np.percentile(gray, (1, 99))
        gray = np.clip((gray - low) / max(high - low, 1e-3), 0, 1)
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_CUBIC)
        gray = np.clip(cv2.GaussianBlur(gray, (0, 0), 0.25 * size / 25), 0, 1)  # no pixel blocks
        tone = np.asarray(_SKIN_TONES[index % len(_SKIN_TONES)])
        stops = np.stack([_SHADOW, tone, 1.0 - 0.3 * (1.0 - tone)])  # shadow, skin, highlight
        rgb = np.stack([np.interp(gray, (0.0, 0.5, 1.0), stops[:, c]) for c in range(3)], axis=-1)
        return np.round(255 * rgb).astype(np.uint8)

    def _canonical_portrait(self, identity: str) -> _Portrait:
        if identity not in self._canonical:
            image = self._source(identity)
            if identity == "astronaut":
                box, points = self._detect(image, identity)
            else:  # MTCNN needs context around the tight LFW crop
                pad = _LFW_SIZE // 2
                canvas = np.full((2 * _LFW_SIZE, 2 * _LFW_SIZE, 3), 128, np.uint8)
                canvas[pad:pad + _LFW_SIZE, pad:pad + _LFW_SIZE] = image
                box, points = self._detect(canvas, identity)
                box, points = box - pad, points - pad
            self._canonical[identity] = _Portrait(image, points, box)
            logger.debug("landmarks of %s: %s", identity, points.tolist())
        return self._canonical[identity]

    def portrait(self, identity: str, face_px: float) -> _Portrait:
        """The identity's portrait scaled so that its face box is ``face_px`` tall."""
        canonical = self._canonical_portrait(identity)
        scale = face_px / float(canonical.box[3] - canonical.box[1])
        height, width = canonical.image.shape[:2]
        size = (max(int(round(width * scale)), 2), max(int(round(height * scale)), 2))
        if identity == "astronaut":
            flags = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            image = cv2.resize(canonical.image, size, interpolation=flags)
        else:
            image = self._source(identity, size[0])
        factor = np.array(size, dtype=np.float64) / (width, height)
        box = (canonical.box.reshape(2, 2) + 0.5) * factor - 0.5
        return _Portrait(image, (canonical.landmarks + 0.5) * factor - 0.5, box.ravel())


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


def _paste(scene: np.ndarray, portrait: _Portrait, centre: np.ndarray) -> np.ndarray:
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


def _manipulate(portrait: _Portrait, spec: SampleSpec, faces: FaceSource,
                rng: np.random.Generator) -> _Portrait:
    """Apply the spec's manipulation to the face texture."""
    if spec.manipulation == SELF_BLEND:
        result = blend_face(portrait.image, portrait.landmarks, rng)
    elif spec.manipulation == FACE_SWAP:
        donor = faces.portrait(spec.donor, float(portrait.box[3] - portrait.box[1]))
        result = blend_face(portrait.image, portrait.landmarks, rng,
                            source=donor.image, source_landmarks=donor.landmarks)
    else:
        raise ValueError(f"unknown manipulation {spec.manipulation!r}")
    return _Portrait(result.image, portrait.landmarks, portrait.box)


def _compose(spec: SampleSpec, faces: FaceSource, rng: np.random.Generator,
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


def make_sample(spec: SampleSpec, index: int, out_dir: str, seed: int, faces: FaceSource) -> SampleItem:
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


def write_manifest(items: list[SampleItem], path: str) -> None:
    """Write the ``uri,label,manipulation`` CSV listing ``items``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows((item.uri, item.label, item.manipulation) for item in items)


def generate_samples(out_dir: str, *, seed: int = 0, small: bool = False) -> list[SampleItem]:
    """Write a labelled sample archive of real and manipulated face videos to OUT_DIR.

    The full archive holds 12 H.264 MP4 videos (3-8 s, 640x360 to 1920x1080,
    24/25/30 fps, CRF 18-30) filmed by a moving camera: 6 real (one with two
    people, one with no face) and 6 fake (self-blended or face-swapped on every
    frame), plus a real JPEG and a face-swapped PNG still. The faces are
    scikit-image's astronaut photo and LFW faces. ``small`` writes a quick
    variant (five 1.5-s 240p videos and two stills). OUT_DIR/manifest.csv lists
    every file as ``uri,label,manipulation`` (absolute paths); files of the
    same names are overwritten. The same seed gives identical files.

    Args:
        out_dir: Output folder, created if missing; the files go directly in it.
        seed: Seed of every random choice.
        small: Write the quick variant.

    Returns:
        The items, in manifest order.
    """
    start = time.perf_counter()
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    specs = _SMALL if small else _FULL
    faces = FaceSource()
    items = []
    for index, spec in enumerate(specs):
        item_start = time.perf_counter()
        items.append(make_sample(spec, index, out_dir, seed, faces))
        logger.info("[%d/%d] %s (%s%s) in %.1f s", index + 1, len(specs),
                    os.path.basename(items[-1].uri), items[-1].label,
                    f", {spec.manipulation}" if spec.manipulation else "",
                    time.perf_counter() - item_start)
    write_manifest(items, os.path.join(out_dir, MANIFEST_NAME))
    logger.info("wrote %d samples to %s in %.1f s", len(items), out_dir,
                time.perf_counter() - start)
    return items
