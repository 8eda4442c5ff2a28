"""A cross-manipulation evaluation set: held-out identities, held-out manipulation families.

The demo detector trains on real faces and self-blends of the training set's
train identities (:mod:`pipeline.synthetic.trainset`). This set asks how it does on what
it never saw: only the identities that the training set's own split puts in
``test``, each filmed once real and once per family of :mod:`models.families`
(graphics swap, neural render, reenactment, attribute inpainting), with donors
drawn from the same test identities. The clips are made by the sample archive's
machinery (:mod:`pipeline.synthetic.filming`: portrait in a textured scene, moving
camera, H.264 with PyAV); the family is applied to the still portrait before it
is filmed, so every frame carries it. Every random choice is seeded by
``(seed, item index)``; an identity's items do not depend on how many others
are written.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Optional, Sequence

import cv2
import numpy as np

from models.families.mesh import face_mask
from models.families.registry import apply_family, family_names, get_family
from models.labels import FAKE, REAL
from transforms.manifests import MANIFEST_NAME, ManifestItem, write_manifest
from pipeline.splits import DEFAULT_SPLIT_SEED, TEST
from pipeline.synthetic.filming import SampleSpec, make_sample
from pipeline.synthetic.portraits import FaceSource
from pipeline.synthetic.trainset import (
    CLIP_BACKGROUNDS,
    CLIP_FPS,
    CLIP_SIZES,
    DEFAULT_IDENTITIES,
    identity_splits,
)

logger = logging.getLogger(__name__)

_SPEC_STREAM = 13  # rng stream of the per-identity clip settings, apart from make_sample's 0-2
_MATCH_FACE_PX = 100.0  # face height at which donors are matched by colour


def held_out_identities(split_seed: Optional[int] = None, identities: Optional[int] = None) -> list[str]:
    """The identities the training set puts in its test split, in LFW order.

    The split is :func:`pipeline.synthetic.trainset.identity_splits` with the
    training set's defaults; ``split_seed`` and ``identities`` replace the seed and
    count for a training set made with others (they must be the training set's, or
    the set is not held out).
    """
    splits = identity_splits(DEFAULT_SPLIT_SEED if split_seed is None else split_seed,
                             DEFAULT_IDENTITIES if identities is None else identities)
    return [name for name, split in splits.items() if split == TEST]


def generate_cross_set(
    out_dir: str,
    *,
    seed: int = 0,
    max_identities: Optional[int] = None,
    seconds: float = 2.0,
    families: Optional[Sequence[str]] = None,
    split_seed: Optional[int] = None,
    lfw_identities: Optional[int] = None,
) -> list[ManifestItem]:
    """Write a real clip and one clip per held-out family for each test identity.

    Args:
        out_dir: Output folder, created if missing; ``manifest.csv`` goes in it.
        seed: Seed of every random choice (scenes, camera, family parameters).
        max_identities: Only the first this many test identities (all by default);
            donors still come from all of them, so a smaller set is a prefix of the full one.
        seconds: Clip length.
        families: Family names (default: all of :func:`models.families.registry.family_names`).
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
    items: list[ManifestItem] = []
    for rank, who in enumerate(chosen):
        common = _clip_settings(seed, rank, seconds)
        for k, family in enumerate(("", *families)):
            index = rank * per_identity + k
            name = f"{TEST}_{who}_{family or 'real'}"
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
                                   "has filming stopped reading FaceSource.portrait?")
            items.append(ManifestItem(sample.uri, FAKE if family else REAL, family, who, TEST))
            logger.info("[%d/%d] %s (donor %s) in %.1f s", len(items), len(chosen) * per_identity,
                        os.path.basename(sample.uri),
                        donors[who] if family and get_family(family).needs_donor else "-",
                        time.perf_counter() - clip_start)
    write_manifest(os.path.join(out_dir, MANIFEST_NAME), items)
    logger.info("wrote %d cross-manipulation clips of %d held-out identities to %s in %.1f s",
                len(items), len(chosen), out_dir, time.perf_counter() - started)
    return items


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
    # The training set's clip ranges, so only identity and manipulation differ from its test clips.
    return dict(size=CLIP_SIZES[int(rng.integers(len(CLIP_SIZES)))],
                background=CLIP_BACKGROUNDS[int(rng.integers(len(CLIP_BACKGROUNDS)))],
                face_height=float(rng.uniform(0.38, 0.5)), fps=int(rng.choice(CLIP_FPS)),
                seconds=seconds, crf=int(rng.integers(18, 29)), preset="veryfast")
