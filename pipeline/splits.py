"""Train, val and test: the split names, the default seed, and the one way to deal groups out.

A group (an identity, or a source video and its fakes) goes to one split, so
no face is seen in training and judged in test. Where the data names no split,
:func:`assign_splits` deals groups out from a seed, in one of two ways:

- ``HASHED`` (what ``extract``, ``train`` and ``evaluate`` use): a group's split
  comes from a hash of the seed and the group alone, so it never moves when
  videos are added to or removed from a data set; the shares are met on average.
- ``SHUFFLED`` (what the synthetic training set uses): a seeded shuffle of the
  whole list cut at exact counts; the shares are exact, but the list must be
  fixed, as it is for a generator that knows all its identities up front.

Every command defaults to ``DEFAULT_SPLIT_SEED``, so a group dealt into test by
one is in test for the others.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Sequence

import numpy as np

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
DEFAULT_SPLIT_SEED = 0
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
HASHED, SHUFFLED = "hashed", "shuffled"
METHODS = (HASHED, SHUFFLED)
_NAMES = {"train": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST}


def split_name(text: str) -> Optional[str]:
    """The split a data set's own spelling names (``valid`` is ``val``); None for none we know."""
    return _NAMES.get(text.strip().lower())


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``ValueError`` unless both shares are non-negative and leave some for training."""
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError(f"need val_fraction, test_fraction >= 0 and val + test < 1, "
                         f"got {val_fraction} and {test_fraction}")


def assign_splits(groups: Sequence[str], *, seed: int = DEFAULT_SPLIT_SEED,
                  val_fraction: float = DEFAULT_VAL_FRACTION,
                  test_fraction: float = DEFAULT_TEST_FRACTION,
                  method: str = HASHED) -> dict[str, str]:
    """Deal each group into train, val or test.

    Args:
        groups: Group names; with ``SHUFFLED``, their order matters and they must be unique.
        seed: The same seed deals the same groups the same way.
        val_fraction: Share of groups dealt into val.
        test_fraction: Share of groups dealt into test.
        method: ``HASHED`` (stable per group, shares on average) or ``SHUFFLED``
            (exact shares of a fixed list); see the module docstring.

    Returns:
        Group -> split, in the order of ``groups``.
    """
    check_fractions(val_fraction, test_fraction)
    if method == HASHED:
        bounds = ((test_fraction, TEST), (test_fraction + val_fraction, VAL))
        return {group: _hashed(seed, group, bounds) for group in groups}
    if method == SHUFFLED:
        if len(set(groups)) != len(groups):
            raise ValueError("SHUFFLED needs unique group names")
        order = np.random.default_rng(seed).permutation(list(groups))
        n_test = int(round(len(order) * test_fraction))
        n_val = int(round(len(order) * val_fraction))
        dealt = {str(group): TEST if i < n_test else VAL if i < n_test + n_val else TRAIN
                 for i, group in enumerate(order)}
        return {group: dealt[group] for group in groups}
    raise ValueError(f"unknown split method {method!r}; choose from {', '.join(METHODS)}")


def _hashed(seed: int, group: str, bounds: tuple[tuple[float, str], ...]) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    return next((split for bound, split in bounds if u < bound), TRAIN)
