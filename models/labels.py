"""The two verdicts, spelled once.

Ground-truth tables (manifests, training sets, face tables) and verdict rows
say ``"real"`` or ``"fake"``; the models' logits come in ``CLASSES`` order
(a card's ``class_names`` defaults to it). Everything that compares a label
or turns one into a number goes through here.
"""
from __future__ import annotations

from typing import Optional

REAL = "real"
FAKE = "fake"
CLASSES = (REAL, FAKE)  # logit order of the frame model
REAL_INDEX, FAKE_INDEX = CLASSES.index(REAL), CLASSES.index(FAKE)  # a label as a training target


def class_index(label: str) -> int:
    """0 for ``real``, 1 for ``fake``; a ``ValueError`` naming the label otherwise."""
    try:
        return CLASSES.index(label)
    except ValueError:
        raise ValueError(f"label must be one of {', '.join(CLASSES)}; got {label!r}") from None


def is_fake(label: Optional[str]) -> Optional[int]:
    """1 for ``fake``, 0 for ``real``, ``None`` for no label (not judged, unknown truth)."""
    return None if label is None else int(label == FAKE)


def verdict(score: float, threshold: float) -> str:
    """The label a score gets at an operating point: ``fake`` at or above the threshold."""
    return FAKE if score >= threshold else REAL
