"""A generated, identity-disjoint training set for the demo checkpoint.

Built from the same scenes, camera motion, encoder and manipulations as the
sample archive (``pipeline/samples.py``), with many more identities: every LFW
face of scikit-image's subset (plus the astronaut, in training only) gets one
real and one manipulated video. Identities are split into train, val and test
before any video is made, so validation and test faces are never seen in
training, and a face-swap donor always comes from the fake's own split.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from models.manipulate import FACE_SWAP, SELF_BLEND
from pipeline.samples import FaceSource, make_sample, SampleSpec

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("uri", "label", "manipulation", "group", "split")
_SIZES = ((320, 240), (480, 270), (640, 360))
_BACKGROUNDS = ("plaster", "brick", "grass")


@dataclass(frozen=True)
class TrainingItem:
    uri: str
    label: str
    manipulation: str
    group: str
    split: str


def assign_identity_splits(
    identities: list[str], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, str]:
    """A seeded shuffle of identities cut into test, val and train."""
    order = list(np.random.default_rng(seed).permutation(identities))
    n_test = int(round(len(order) * test_fraction))
    n_val = int(round(len(order) * val_fraction))
    splits = {}
    for i, identity in enumerate(order):
        splits[identity] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return splits


def generate_training_set(
    out_dir: str,
    *,
    seed: int = 0,
    identities: int = 100,
    train_videos: int = 1,
    seconds: float = 2.0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.25,
) -> list[TrainingItem]:
    """Write short H.264 videos, a real and a fake per identity, and ``OUT_DIR/manifest.csv``.

    The manifest has ``uri,label,manipulation,group,split`` columns (group is the
    identity). Fakes alternate between self-blending and a face swap with a donor
    of the same split. Training identities get ``train_videos`` real/fake pairs,
    each in a newly drawn scene with the other manipulation; validation and test
    identities get one (and are drawn first, so they do not change with it).
    """
    if train_videos < 1:
        raise ValueError(f"train_videos must be at least 1, got {train_videos}")
    started = time.perf_counter()
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    names = [f"lfw{i}" for i in range(min(identities, 100))]
    splits = assign_identity_splits(names, seed, val_fraction, test_fraction)
    splits["astronaut"] = "train"  # the only sharp colour face: seen real and fake in training only
    by_split: dict[str, list[str]] = {}
    for name in ["astronaut", *names]:
        by_split.setdefault(splits[name], []).append(name)
    rng = np.random.default_rng([seed, 7])
    faces = FaceSource()
    items: list[TrainingItem] = []
    index = 0
    for split, members in sorted(by_split.items()):
        for k, who in enumerate(members):
            for rep in range(train_videos if split == "train" else 1):
                manipulation = SELF_BLEND if (k + rep) % 2 == 0 else FACE_SWAP
                donor = members[(k + 1 + rep) % len(members)] if manipulation == FACE_SWAP else ""
                common = dict(
                    size=_SIZES[int(rng.integers(len(_SIZES)))],
                    who=who,
                    background=_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))],
                    face_height=float(rng.uniform(0.38, 0.5)),
                    fps=int(rng.choice([24, 25, 30])),
                    seconds=seconds,
                    crf=int(rng.integers(18, 29)),
                    preset="veryfast",
                )
                stem = f"{split}_{who}" + (f"_v{rep}" if rep else "")
                for label, spec in (
                    ("real", SampleSpec(f"{stem}_real", **common)),
                    ("fake", SampleSpec(f"{stem}_{manipulation}", manipulation=manipulation, donor=donor, **common)),
                ):
                    try:
                        sample = make_sample(spec, index, out_dir, seed, faces)
                    except (RuntimeError, ValueError) as e:  # a source face MTCNN cannot find, or framing
                        logger.warning("skipping %s: %s", spec.name, e)
                        continue
                    finally:
                        index += 1
                    items.append(TrainingItem(sample.uri, label, spec.manipulation, who, split))
        logger.info("%s: %d videos", split, sum(i.split == split for i in items))
    with open(os.path.join(out_dir, "manifest.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows((i.uri, i.label, i.manipulation, i.group, i.split) for i in items)
    logger.info("wrote %d training videos to %s in %.1f s", len(items), out_dir, time.perf_counter() - started)
    return items
