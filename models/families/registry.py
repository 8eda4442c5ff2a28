"""The held-out families by name: what each stands for, whether it needs a donor, and how to apply it.

Names are those a cross-manipulation manifest writes in its ``manipulation``
column; an unknown name raises with the list of valid ones.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from models.families.compositing import FamilyResult
from models.families.edits import ATTRIBUTE_INPAINT, EXPRESSION_REENACT, attribute_inpaint, expression_reenact
from models.families.swaps import GRAPHICS_SWAP, NEURAL_RENDER, graphics_swap, neural_render

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """One held-out manipulation family and the real technique it stands for."""

    name: str
    technique: str
    needs_donor: bool
    apply: Callable[..., FamilyResult]


_FAMILIES: dict[str, Family] = {
    family.name: family for family in (
        Family(GRAPHICS_SWAP, "graphics face swap (FaceSwap)", True, graphics_swap),
        Family(NEURAL_RENDER, "autoencoder/GAN face swap (DeepFakes, FaceShifter)", True,
               neural_render),
        Family(EXPRESSION_REENACT, "expression reenactment (Face2Face, NeuralTextures)", False,
               expression_reenact),
        Family(ATTRIBUTE_INPAINT, "local attribute editing / inpainting", False, attribute_inpaint),
    )
}


def family_names() -> tuple[str, ...]:
    """Names of the held-out families, as written in manifest ``manipulation`` columns."""
    return tuple(_FAMILIES)


def get_family(name: str) -> Family:
    """The family called ``name``; raises ``ValueError`` listing the valid names."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown manipulation family {name!r}; choose from {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def apply_family(name: str, target: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 donor: Optional[np.ndarray] = None,
                 donor_landmarks: Optional[np.ndarray] = None) -> FamilyResult:
    """Apply family ``name`` to ``target``; swap families need ``donor`` and its landmarks."""
    family = get_family(name)
    if not family.needs_donor:
        result = family.apply(target, landmarks, rng)
    elif donor is None or donor_landmarks is None:
        raise ValueError(f"{name} needs a donor image and donor landmarks")
    else:
        result = family.apply(target, landmarks, rng, donor, donor_landmarks)
    logger.debug("%s: %s", name, result.params)
    return result
