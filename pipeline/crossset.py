"""A cross-manipulation evaluation set: held-out identities, held-out manipulation families.

The demo detector trains on real faces and self-blends of the training set's
train identities (``pipeline/trainset.py``). This set asks how it does on what
it never saw: only the identities that the training set's own split puts in
``test``, each filmed once real and once per family of :mod:`models.families`
(graphics swap, neural render, reenactment, attribute inpainting), with donors
drawn from the same test identities. The clips are made by the sample archive's
machinery (``pipeline/samples.py``: portrait in a textured scene, moving
camera, H.264 with PyAV); the family is applied to the still portrait before it
is filmed, so every frame carries it. Every random choice is seeded by
``(seed, item index)``; an identity's items do not depend on how many others
are written.
"""
from __future__ import annotations

import csv
import dataclasses
import inspect
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from models.families import apply_family, face_mask, family_names, get_family
from pipeline.samples import FaceSource, SampleSpec, make_sample
from pipeline.trainset import assign_identity_splits, generate_training_set

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("uri", "label", "manipulation", "group", "split")
TEST_SPLIT = "test"
# The training set's clip ranges, so only identity and manipulation differ from it.
_SIZES = ((320, 240), (480, 270), (640, 360))
_BACKGROUNDS = ("plaster", "brick", "grass")
_FPS = (24, 25, 30)
_SPEC_STREAM = 13  # rng stream of the per-identity clip settings, apart from make_sample's 0-2
_MATCH_FACE_PX = 100.0  # face height at which donors are matched by colour


@dataclass(frozen=True)
class CrossItem:
    """One clip of the set, as written to the manifest."""

    uri: str
    label: str
    manipulation: str
    group: str
    split: str


def held_out_identities(split_seed: Optional[int] = None, identities: Optional[int] = None) -> list[str]:
    """The identities ``pipeline/trainset.py`` puts in its test split, in LFW order.

    The split comes from trainset's own :func:`assign_identity_splits` with the
    identity count, seed and fractions :func:`generate_training_set` defaults to;
    ``split_seed`` and ``identities`` replace the seed and count for a training set
    made with others (they must be the training set's, or the set is not held out).
    """
    defaults = {name: p.default for name, p in
                inspect.signature(generate_training_set).parameters.items()}
    count = int(defaults["identities"] if identities is None else identities)
    names = [f"lfw{i}" for i in range(min(count, 100))]
    seed = int(defaults["seed"] if split_seed is None else split_seed)
    splits = assign_identity_splits(names, seed, defaults["val_fraction"], defaults["test_fraction"])
    return [name for name in names if splits[name] == TEST_SPLIT]


class _FamilyFaces(FaceSource):
    """A :class:`FaceSource` that hands out one identity's portrait manipulated by a family.

    ``make_sample`` films whatever ``portrait`` returns, so this is the hook that
    puts a held-out family on the still portrait without touching the archive code.
    """

    def __init__(self) -> None:
        super().__init__()
        self._edit: Optional[tuple[str, str, str, np.random.Generator]] = None
        self.applied = 0

    def set_edit(self, identity: str, family: str, donor: str, rng: np.random.Generator) -> None:
        """Manipulate ``identity`` with ``family`` (and ``donor``) until :meth:`clear_edit`."""
        self._edit, self.applied = (identity, family, donor, rng), 0

    def clear_edit(self) -> None:
        self._edit = None

    def portrait(self, identity: str, face_px: float):
        """The base class's portrait, its image manipulated when ``identity`` is being edited."""
        portrait = super().portrait(identity, face_px)
        if self._edit is None or identity != self._edit[0]:
            return portrait
        _, family, donor_name, rng = self._edit
        donor = super().portrait(donor_name, face_px) if get_family(family).needs_donor else None
        result = apply_family(family, portrait.image, portrait.landmarks, rng,
                              None if donor is None else donor.image,
                              None if donor is None else donor.landmarks)
        self.applied += 1
        return dataclasses.replace(portrait, image=result.image)


def _face_colour(faces: FaceSource, identity: str) -> np.ndarray:
    """Mean Lab colour and lightness spread of the inner face a swap replaces."""
    portrait = faces.portrait(identity, _MATCH_FACE_PX)
    inside = face_mask(portrait.image.shape[:2], portrait.landmarks)
    lab = cv2.cvtColor(portrait.image, cv2.COLOR_RGB2LAB)[inside].astype(np.float64)
    return np.r_[lab.mean(axis=0), lab[:, 0].std()]


def choose_donors(faces: FaceSource, identities: Sequence[str]) -> dict[str, str]:
    """For each identity, the other one whose face colour and contrast are closest.

    Swap makers pick look-alike donors; a random pairing leaves Poisson and
    colour-transfer failures that would make the swap families trivially visible.
    """
    colours = {who: _face_colour(faces, who) for who in identities}
    return {who: min((other for other in identities if other != who),
                     key=lambda other: (float(np.linalg.norm(colours[other] - colours[who])), other))
            for who in identities}


def _clip_settings(seed: int, rank: int, seconds: float) -> dict:
    """Size, scene and encoder settings shared by one identity's clips."""
    rng = np.random.default_rng([seed, _SPEC_STREAM, rank])
    return dict(size=_SIZES[int(rng.integers(len(_SIZES)))],
                background=_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))],
                face_height=float(rng.uniform(0.38, 0.5)), fps=int(rng.choice(_FPS)),
                seconds=seconds, crf=int(rng.integers(18, 29)), preset="veryfast")


def write_manifest(items: Sequence[CrossItem], path: str) -> None:
    """Write the ``uri,label,manipulation,group,split`` CSV listing ``items``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows((i.uri, i.label, i.manipulation, i.group, i.split) for i in items)


def generate_cross_set(
    out_dir: str,
    *,
    seed: int = 0,
    max_identities: Optional[int] = None,
    seconds: float = 2.0,
    families: Optional[Sequence[str]] = None,
    split_seed: Optional[int] = None,
    lfw_identities: Optional[int] = None,
) -> list[CrossItem]:
    """Write a real clip and one clip per held-out family for each test identity.

    Args:
        out_dir: Output folder, created if missing; ``manifest.csv`` goes in it.
        seed: Seed of every random choice (scenes, camera, family parameters).
        max_identities: Only the first this many test identities (all by default);
            donors still come from all of them, so a smaller set is a prefix of the full one.
        seconds: Clip length.
        families: Family names (default: all of :func:`models.families.family_names`).
        split_seed: Seed of the training set's identity split (default: trainset's).
        lfw_identities: LFW identities the training set was made from (default: trainset's).

    Returns:
        The items, in manifest order (``split`` is always ``test``, ``group`` the identity).
    """
    started = time.perf_counter()
    families = tuple(families or family_names())
    for name in families:
        get_family(name)  # raises on an unknown name, listing the valid ones
    if max_identities is not None and max_identities < 1:
        raise ValueError(f"max_identities must be at least 1, got {max_identities}")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    faces = _FamilyFaces()
    identities = []
    for who in held_out_identities(split_seed, lfw_identities):
        try:
            faces.portrait(who, _MATCH_FACE_PX)
            identities.append(who)
        except RuntimeError as e:  # MTCNN finds no face in the source photo
            logger.warning("skipping identity %s: %s", who, e)
    if len(identities) < 2:
        raise RuntimeError(f"need two usable test identities for donors, got {identities}")
    donors = choose_donors(faces, identities)
    chosen = identities[:max_identities]
    per_identity = 1 + len(families)
    items: list[CrossItem] = []
    for rank, who in enumerate(chosen):
        common = _clip_settings(seed, rank, seconds)
        for k, family in enumerate(("", *families)):
            index = rank * per_identity + k
            name = f"{TEST_SPLIT}_{who}_{family or 'real'}"
            if family:
                faces.set_edit(who, family, donors[who], np.random.default_rng([seed, index, 1]))
            clip_start = time.perf_counter()
            try:
                sample = make_sample(SampleSpec(name, who=who, **common), index, out_dir, seed, faces)
            except RuntimeError as e:  # framing: the portrait or a face leaves the scene
                logger.warning("skipping %s: %s", name, e)
                continue
            finally:
                faces.clear_edit()
            if family and faces.applied != 1:
                raise RuntimeError(f"{name}: the family was applied {faces.applied} times, not once; "
                                   "has pipeline.samples stopped filming FaceSource.portrait?")
            items.append(CrossItem(sample.uri, "fake" if family else "real", family, who, TEST_SPLIT))
            logger.info("[%d/%d] %s (donor %s) in %.1f s", len(items), len(chosen) * per_identity,
                        os.path.basename(sample.uri),
                        donors[who] if family and get_family(family).needs_donor else "-",
                        time.perf_counter() - clip_start)
    write_manifest(items, os.path.join(out_dir, MANIFEST_NAME))
    logger.info("wrote %d cross-manipulation clips of %d held-out identities to %s in %.1f s",
                len(items), len(chosen), out_dir, time.perf_counter() - started)
    return items
