"""A generated, identity-disjoint training set for the demo checkpoint.

Built from the same scenes, camera motion, encoder and manipulations as the
sample archive (:mod:`pipeline.synthetic.filming`), with many more identities: the LFW
faces of scikit-image's subset, plus the astronaut and the camera man (training
only). Identities are split into train, val and test before any video is made
(:func:`identity_splits`: a seeded shuffle cut at exact shares), so validation
and test faces are never seen in training.

The training split holds real videos only: the detector learns from them and
from self-blended pseudo-fakes made on the fly (``models.augment.TrainAugment``),
never from one generator's fakes. Each training identity is filmed several times,
each time in a new scene, light, pose, resolution and compression. Validation and
test identities get one real video and one fake made by our own blend code
(self-blend or face swap with a donor of the same split), so validation can stop
training early and calibrate the threshold; the test videos are those of earlier
releases, byte for byte.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np
import skimage.data

from models.labels import FAKE, REAL
from models.manipulate import FACE_SWAP, SELF_BLEND
from transforms.manifests import MANIFEST_NAME, ManifestItem, write_manifest
from pipeline.splits import DEFAULT_SPLIT_SEED, SHUFFLED, TEST, TRAIN, VAL, assign_splits
from pipeline.synthetic.filming import SampleSpec, make_sample
from pipeline.synthetic.portraits import (
    ASTRONAUT,
    FaceSource,
    Faces,
    Portrait,
    lfw_identities,
    scale_portrait,
)

logger = logging.getLogger(__name__)

DEFAULT_IDENTITIES = 100
VAL_FRACTION = 0.2
TEST_FRACTION = 0.25
CAMERA = "camera"
TRAIN_ONLY_IDENTITIES = (ASTRONAUT, CAMERA)  # the only non-LFW faces: seen in training only

# Frame sizes, scenes and frame rates of the val and test clips (and of the cross set's).
CLIP_SIZES = ((320, 240), (480, 270), (640, 360))
CLIP_BACKGROUNDS = ("plaster", "brick", "grass")
CLIP_FPS = (24, 25, 30)
_TRAIN_SIZES = CLIP_SIZES + ((854, 480),)
_TRAIN_BACKGROUNDS = CLIP_BACKGROUNDS + ("rocket",)
_CAMERA_CROP = (slice(78, 238), slice(145, 305))  # the camera man's head (MTCNN finds it)


def identity_splits(seed: int = DEFAULT_SPLIT_SEED, identities: int = DEFAULT_IDENTITIES,
                    val_fraction: float = VAL_FRACTION,
                    test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """The split of each LFW identity of a training set made with these settings, in LFW order.

    A seeded shuffle cut at exact shares (``SHUFFLED``): the identities are all
    known up front, and the demo checkpoint was trained on this split.
    """
    return assign_splits(lfw_identities(identities), seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, method=SHUFFLED)


def generate_training_set(
    out_dir: str,
    *,
    seed: int = DEFAULT_SPLIT_SEED,
    identities: int = DEFAULT_IDENTITIES,
    train_videos: int = 4,
    seconds: float = 2.0,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> list[ManifestItem]:
    """Write short H.264 videos of every identity and ``OUT_DIR/manifest.csv``.

    The manifest has ``uri,label,manipulation,group,split`` columns (group is the
    identity). Test identities come first and are made exactly as in earlier
    releases; validation identities next; both get a real video and a fake
    (self-blends and face swaps alternate, donors from the same split).
    Training identities (the astronaut and the camera man among them) get
    ``train_videos`` real videos each and no fakes.
    """
    if train_videos < 1:
        raise ValueError(f"train_videos must be at least 1, got {train_videos}")
    started = time.perf_counter()
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    splits = identity_splits(seed, identities, val_fraction, test_fraction)
    splits.update(dict.fromkeys(TRAIN_ONLY_IDENTITIES, TRAIN))
    by_split: dict[str, list[str]] = {TEST: [], VAL: [], TRAIN: []}
    for name in [ASTRONAUT, *lfw_identities(identities), CAMERA]:
        by_split[splits[name]].append(name)
    faces = TrainingFaces()
    # Each split draws from its own stream, so one split's settings never move another's
    # videos; the test split's stream and file indices are those of earlier releases.
    test, index = _real_and_fake(TEST, by_split[TEST], np.random.default_rng([seed, 7]), 0,
                                 out_dir, seed, seconds, faces)
    val, index = _real_and_fake(VAL, by_split[VAL], np.random.default_rng([seed, 7, 1]), index,
                                out_dir, seed, seconds, faces)
    train, index = _reals(by_split[TRAIN], train_videos, np.random.default_rng([seed, 7, 2]),
                          index, out_dir, seed, seconds, faces)
    items = test + val + train
    for split, made in ((TEST, test), (VAL, val), (TRAIN, train)):
        labels = {label: sum(i.label == label for i in made) for label in (REAL, FAKE)}
        logger.info("%s: %d videos (%d real, %d fake)", split, len(made), labels[REAL], labels[FAKE])
    write_manifest(os.path.join(out_dir, MANIFEST_NAME), items)
    elapsed = time.perf_counter() - started
    logger.info("wrote %d training videos to %s in %.1f s (%.2f s per video)", len(items),
                out_dir, elapsed, elapsed / max(index, 1))
    return items


@dataclass(frozen=True)
class Look:
    """How one training video restyles its portrait before filming.

    Attributes:
        brightness: Overall light level (1 keeps it).
        warmth: Colour temperature: positive raises red and lowers blue, negative the reverse.
        gradient: Strength of a linear light fall-off across the portrait (0: even light).
        gradient_angle: Direction of that fall-off, radians.
        roll_deg: In-plane rotation of the portrait's content, degrees.
        zoom: Scale of the content about the face centre.
        tilt: Perspective: offsets of the four corners (x, y pairs), fractions of the side.
    """

    brightness: float = 1.0
    warmth: float = 0.0
    gradient: float = 0.0
    gradient_angle: float = 0.0
    roll_deg: float = 0.0
    zoom: float = 1.0
    tilt: tuple[float, ...] = (0.0,) * 8


def draw_look(rng: np.random.Generator) -> Look:
    """A random lighting and pose, mild enough that MTCNN still finds the face."""
    return Look(
        brightness=float(rng.uniform(0.7, 1.2)),
        warmth=float(rng.uniform(-0.12, 0.12)),
        gradient=float(rng.uniform(0.0, 0.4)),
        gradient_angle=float(rng.uniform(0.0, 2.0 * np.pi)),
        roll_deg=float(rng.uniform(-10.0, 10.0)),
        zoom=float(rng.uniform(0.92, 1.08)),
        tilt=tuple(float(v) for v in rng.uniform(-0.04, 0.04, 8)),
    )


def restyle_portrait(image: np.ndarray, landmarks: np.ndarray, box: np.ndarray,
                     look: Look) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relight and re-pose a portrait; returns its new image, landmarks and face box."""
    height, width = image.shape[:2]
    centre = box.reshape(2, 2).mean(axis=0)
    similarity = np.eye(3)
    similarity[:2] = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), look.roll_deg,
                                             look.zoom)
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    tilted = corners + np.float32(look.tilt).reshape(4, 2) * np.float32([width, height])
    matrix = cv2.getPerspectiveTransform(corners, tilted) @ similarity
    warped = cv2.warpPerspective(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)

    def move(points: np.ndarray) -> np.ndarray:
        moved = cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), matrix)
        return moved.reshape(-1, 2)

    x0, y0, x1, y1 = box
    moved = move(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
    new_box = np.concatenate([moved.min(axis=0), moved.max(axis=0)])
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    direction = np.float32([np.cos(look.gradient_angle), np.sin(look.gradient_angle)])
    ramp = ((xs / width - 0.5) * direction[0] + (ys / height - 0.5) * direction[1])
    light = look.brightness * (1.0 + look.gradient * ramp)[..., None]
    tint = np.float32([1.0 + look.warmth, 1.0, 1.0 - look.warmth])
    lit = np.clip(np.rint(warped.astype(np.float32) * light * tint), 0, 255).astype(np.uint8)
    return lit, move(landmarks), new_box


class TrainingFaces(FaceSource):
    """The sample archive's faces plus scikit-image's camera man, a gray face."""

    def __init__(self) -> None:
        super().__init__()
        self._camera = None

    def portrait(self, identity: str, face_px: float) -> Portrait:
        """The identity's portrait scaled so that its face box is ``face_px`` tall."""
        if identity != CAMERA:
            return super().portrait(identity, face_px)
        if self._camera is None:
            gray = skimage.data.camera()[_CAMERA_CROP]
            image = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
            box, points = self._detect(image, CAMERA)  # RuntimeError when MTCNN finds no face
            self._camera = Portrait(image, points, box)
        return scale_portrait(self._camera, face_px)


class _RestyledFaces:
    """A face source whose portraits all get one :class:`Look` (one training video)."""

    def __init__(self, faces: Faces, look: Look) -> None:
        self._faces, self._look = faces, look

    def portrait(self, identity: str, face_px: float) -> Portrait:
        portrait = self._faces.portrait(identity, face_px)
        image, landmarks, box = restyle_portrait(portrait.image, portrait.landmarks,
                                                 portrait.box, self._look)
        return dataclasses.replace(portrait, image=image, landmarks=landmarks, box=box)


def _film(spec: SampleSpec, index: int, out_dir: str, seed: int, faces: Faces) -> str | None:
    """Write one video; ``None`` (and a warning) when its face cannot be framed or found."""
    try:
        return make_sample(spec, index, out_dir, seed, faces).uri
    except (RuntimeError, ValueError) as e:  # a source face MTCNN cannot find, or framing
        logger.warning("skipping %s: %s", spec.name, e)
        return None


def _real_and_fake(split: str, members: list[str], rng: np.random.Generator, index: int,
                   out_dir: str, seed: int, seconds: float,
                   faces: FaceSource) -> tuple[list[ManifestItem], int]:
    """A real and a fake video of every member (val and test); returns them and the next index."""
    items = []
    for k, who in enumerate(members):
        manipulation = SELF_BLEND if k % 2 == 0 else FACE_SWAP
        donor = members[(k + 1) % len(members)] if manipulation == FACE_SWAP else ""
        common = dict(
            size=CLIP_SIZES[int(rng.integers(len(CLIP_SIZES)))],
            who=who,
            background=CLIP_BACKGROUNDS[int(rng.integers(len(CLIP_BACKGROUNDS)))],
            face_height=float(rng.uniform(0.38, 0.5)),
            fps=int(rng.choice(CLIP_FPS)),
            seconds=seconds,
            crf=int(rng.integers(18, 29)),
            preset="veryfast",
        )
        stem = f"{split}_{who}"
        for label, spec in (
            (REAL, SampleSpec(f"{stem}_real", **common)),
            (FAKE, SampleSpec(f"{stem}_{manipulation}", manipulation=manipulation, donor=donor,
                                **common)),
        ):
            uri = _film(spec, index, out_dir, seed, faces)
            index += 1
            if uri:
                items.append(ManifestItem(uri, label, spec.manipulation, who, split))
    return items, index


def _reals(members: list[str], videos: int, rng: np.random.Generator, index: int, out_dir: str,
           seed: int, seconds: float, faces: FaceSource) -> tuple[list[ManifestItem], int]:
    """``videos`` real videos of every training member, each in a new scene, light, pose,
    resolution and compression; returns them and the next index."""
    items = []
    for who in members:
        for rep in range(videos):
            spec = SampleSpec(
                f"train_{who}_v{rep}_real",
                size=_TRAIN_SIZES[int(rng.integers(len(_TRAIN_SIZES)))],
                who=who,
                background=_TRAIN_BACKGROUNDS[int(rng.integers(len(_TRAIN_BACKGROUNDS)))],
                face_height=float(rng.uniform(0.3, 0.52)),
                fps=int(rng.choice(CLIP_FPS)),
                seconds=seconds,
                crf=int(rng.integers(16, 33)),
                preset="ultrafast" if rng.random() < 0.3 else "veryfast",
            )
            uri = _film(spec, index, out_dir, seed, _RestyledFaces(faces, draw_look(rng)))
            index += 1
            if uri:
                items.append(ManifestItem(uri, REAL, "", who, TRAIN))
    return items, index
