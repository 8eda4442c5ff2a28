"""The benchmark archive: 10-second face videos at 720p and 1080p, and one long video.

Deterministic (fixed seeds), cached under ``WORK/archive/`` with each file
named by a hash of its recipe: generating the 10-minute video takes ten
minutes on two cores, and is done once.
Keyframes every 2 s, as phone cameras and upload platforms write them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace

from models.manipulate import FACE_SWAP, SELF_BLEND
from pipeline.synthetic.filming import SampleSpec, make_sample
from pipeline.synthetic.portraits import LFW_FACES, FaceSource, lfw_identities

logger = logging.getLogger(__name__)

_SIZES = ((1280, 720), (1920, 1080))
_BACKGROUNDS = ("brick", "grass", "plaster")
_FORMAT = 1  # bump when the recipe changes, so old caches are not reused


@dataclass(frozen=True)
class BenchVideo:
    uri: str
    name: str
    width: int
    height: int
    seconds: float
    fps: int
    faces: int
    label: str
    long: bool = False


_LONG_INDEX = 1000  # seeds the long video: the same file whatever --videos is


def usable_identities(faces: FaceSource) -> list[str]:
    """The LFW identities whose photo MTCNN accepts as a face; the others are skipped with a log line.

    A few of scikit-image's 25x25 LFW faces are too small or too dark for MTCNN
    once upscaled, and a video cannot be filmed of a face that is not found.
    """
    usable = []
    for identity in lfw_identities(LFW_FACES):
        try:
            faces.portrait(identity, 120.0)
        except RuntimeError as e:
            logger.info("benchmark archive: skipping %s (%s)", identity, e)
            continue
        usable.append(identity)
    return usable


def _specs(videos: int, short_s: float, long_s: float, gop_s: float,
           people: list[str]) -> list[tuple[int, SampleSpec, bool]]:
    specs = []
    for i in range(videos):
        size = _SIZES[i % 2]
        two = i % 3 == 2  # every third video has two people
        manipulation = ("", SELF_BLEND, "", FACE_SWAP)[i % 4]
        first, second, donor = (people[(offset + i) % len(people)] for offset in (10, 40, 70))
        who = f"{first} {second}" if two else first
        specs.append((i, SampleSpec(
            f"short_{i:02d}_{size[1]}p", size, who, manipulation, donor=donor if manipulation == FACE_SWAP else "",
            background=_BACKGROUNDS[i % 3], face_height=0.3 if two else 0.34, fps=25, seconds=short_s,
            crf=23, preset="veryfast", keyframe_every_s=gop_s), False))
    if long_s > 0:
        specs.append((_LONG_INDEX, SampleSpec(
            f"long_{int(long_s)}s_720p", _SIZES[0], "lfw5", background="brick", face_height=0.34, fps=25,
            seconds=long_s, crf=23, preset="veryfast", keyframe_every_s=gop_s), True))
    return specs


def build_archive(work: str, videos: int, *, short_s: float = 10.0, long_s: float = 600.0,
                  gop_s: float = 2.0, seed: int = 0) -> list[BenchVideo]:
    """Generate (or reuse) the archive under ``WORK/archive``; returns its videos, the long one last.

    Each file is named by a hash of its recipe, so a larger ``--videos`` reuses
    the files already made (the long video takes minutes to generate).
    """
    folder = os.path.abspath(os.path.join(work, "archive"))
    os.makedirs(folder, exist_ok=True)
    faces = FaceSource()
    out = []
    for index, spec, long in _specs(videos, short_s, long_s, gop_s, usable_identities(faces)):
        key = hashlib.sha256(json.dumps([_FORMAT, seed, index, asdict(spec)]).encode()).hexdigest()[:10]
        named = replace(spec, name=f"{spec.name}-{key}")
        path = os.path.join(folder, named.name + ".mp4")
        if not os.path.exists(path):
            logger.info("generating %s (%dx%d, %.0f s)", spec.name, *spec.size, spec.seconds)
            partial = replace(named, name=named.name + ".partial")
            make_sample(partial, index, folder, seed, faces)
            os.replace(os.path.join(folder, partial.name + ".mp4"), path)  # complete files only
        out.append(BenchVideo(path, spec.name, spec.size[0], spec.size[1], spec.seconds, spec.fps,
                              len(spec.identities), "fake" if spec.manipulation else "real", long))
    return out
