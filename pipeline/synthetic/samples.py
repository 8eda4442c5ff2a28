"""The sample archive: a small, labelled set of real and manipulated face videos and stills.

Fourteen fixed recipes (seven for the quick ``small`` variant) of the faces of
:mod:`pipeline.synthetic.portraits`, filmed by :mod:`pipeline.synthetic.filming`:
real clips (one with two people, one with no face), self-blends and face swaps
at 240p to 1080p, 24 to 30 fps and CRF 18 to 30, and two stills. The same seed
gives byte-identical files on the same software stack.
"""
from __future__ import annotations

import logging
import os
import time

from models.manipulate import FACE_SWAP, SELF_BLEND
from transforms.manifests import MANIFEST_COLUMNS, MANIFEST_NAME, write_manifest
from pipeline.synthetic.filming import SampleItem, SampleSpec, make_sample
from pipeline.synthetic.portraits import FaceSource

logger = logging.getLogger(__name__)

_COLUMNS = MANIFEST_COLUMNS[:3]  # uri, label, manipulation: the archive has no groups or splits


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
    write_manifest(os.path.join(out_dir, MANIFEST_NAME), items, _COLUMNS)
    logger.info("wrote %d samples to %s in %.1f s", len(items), out_dir,
                time.perf_counter() - start)
    return items


# The recipes: frame size, identities, manipulation and donor, scene, face height, fps, length, CRF.
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
