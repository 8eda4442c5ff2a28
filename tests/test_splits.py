"""The one split function (pipeline/splits.py), as the data sets and the training-set generator use it."""
from __future__ import annotations

import csv

import pytest

from pipeline.datasets import load_dataset
from pipeline.splits import (
    DEFAULT_SPLIT_SEED,
    HASHED,
    SHUFFLED,
    SPLITS,
    TEST,
    TRAIN,
    VAL,
    assign_splits,
    split_name,
)
from pipeline.synthetic.trainset import TEST_FRACTION, VAL_FRACTION

LFW = [f"lfw{i}" for i in range(100)]
# The split the bundled demo checkpoint (models/weights/demo.pt) was trained and judged on:
# the generator's defaults (100 LFW identities, seed 0, val 0.2, test 0.25). If this moves,
# the README's held-out figures describe identities the model may have trained on.
DEMO_TEST = [5, 8, 9, 10, 11, 13, 16, 19, 20, 22, 23, 27, 36, 37, 50, 52, 72, 75, 81, 82, 83, 90, 93, 94, 97]
DEMO_VAL = [2, 4, 15, 25, 30, 34, 35, 39, 42, 43, 44, 57, 64, 65, 66, 70, 71, 85, 86, 98]


def test_shuffled_split_is_the_one_the_demo_checkpoint_was_trained_on():
    splits = assign_splits(LFW, seed=DEFAULT_SPLIT_SEED, val_fraction=VAL_FRACTION,
                           test_fraction=TEST_FRACTION, method=SHUFFLED)
    assert [n for n in LFW if splits[n] == TEST] == [f"lfw{i}" for i in DEMO_TEST]
    assert [n for n in LFW if splits[n] == VAL] == [f"lfw{i}" for i in DEMO_VAL]
    assert sum(split == TRAIN for split in splits.values()) == 55


def test_shuffled_shares_are_exact_and_follow_the_seed():
    first = assign_splits(LFW, seed=1, val_fraction=0.2, test_fraction=0.25, method=SHUFFLED)
    assert first == assign_splits(LFW, seed=1, val_fraction=0.2, test_fraction=0.25, method=SHUFFLED)
    assert {s: list(first.values()).count(s) for s in SPLITS} == {TRAIN: 55, VAL: 20, TEST: 25}
    assert first != assign_splits(LFW, seed=2, val_fraction=0.2, test_fraction=0.25, method=SHUFFLED)
    with pytest.raises(ValueError, match="unique"):
        assign_splits(["a", "a"], method=SHUFFLED)


def test_hashed_split_of_a_group_does_not_depend_on_the_others():
    groups = [f"g{i}" for i in range(2000)]
    whole = assign_splits(groups, seed=3)
    assert assign_splits(groups[::7], seed=3) == {g: whole[g] for g in groups[::7]}
    shares = {s: list(whole.values()).count(s) / len(groups) for s in SPLITS}
    assert abs(shares[VAL] - 0.15) < 0.03 and abs(shares[TEST] - 0.15) < 0.03
    assert whole != assign_splits(groups, seed=4)


def test_data_sets_deal_their_groups_through_the_same_function(tmp_path):
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "label", "group"])
        writer.writerows((f"v{i}.mp4", "real", f"person{i % 30}") for i in range(90))
    dealt = assign_splits([f"person{i}" for i in range(30)], seed=5, val_fraction=0.2, test_fraction=0.3)
    videos = load_dataset(str(path), seed=5, val_fraction=0.2, test_fraction=0.3)
    assert {(v.group, v.split) for v in videos} == set(dealt.items())


def test_bad_choices_raise_naming_the_valid_ones():
    with pytest.raises(ValueError, match=f"{HASHED}, {SHUFFLED}"):
        assign_splits(LFW, method="random")
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        assign_splits(LFW, val_fraction=0.5, test_fraction=0.5)
    assert (split_name(" Validation "), split_name("valid"), split_name("holdout")) == (VAL, VAL, None)
