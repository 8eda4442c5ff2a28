"""Tests of the generated training set (pipeline/synthetic/trainset.py) on a tiny set of identities."""
from __future__ import annotations

import csv
import hashlib
import os

import cv2
import numpy as np
import pytest

from pipeline.splits import DEFAULT_SPLIT_SEED
from pipeline.synthetic.trainset import (
    TRAIN_ONLY_IDENTITIES,
    Look,
    TrainingFaces,
    draw_look,
    generate_training_set,
    identity_splits,
    restyle_portrait,
)

# sha256 (first 16 hex digits) of the test split's videos for identities=8, seconds=0.5,
# seed=0, made by the generator of earlier releases: the test split must not move, so that
# checkpoints old and new are compared on the same videos. (x264 and OpenCV builds change
# these bytes, as they change the sample archive's.)
EARLIER_TEST_VIDEOS = {
    "test_lfw2_real.mp4": "aa490b534e55ce66",
    "test_lfw2_self_blend.mp4": "33d0c3a6a0ae3fd4",
    "test_lfw4_real.mp4": "3cac3c145045754c",
    "test_lfw4_face_swap.mp4": "a20efbd57e9096a9",
}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainset")
    items = generate_training_set(str(out), identities=8, seconds=0.5, seed=0, train_videos=2)
    return out, items


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def test_training_split_is_real_only_and_val_test_have_both_labels(tiny_set) -> None:
    _, items = tiny_set
    by_split: dict[str, list] = {}
    for item in items:
        by_split.setdefault(item.split, []).append(item)
    assert {i.label for i in by_split["train"]} == {"real"}
    assert {i.manipulation for i in by_split["train"]} == {""}
    for split in ("val", "test"):
        assert {i.label for i in by_split[split]} == {"real", "fake"}
        assert {i.manipulation for i in by_split[split] if i.label == "fake"} == {
            "self_blend", "face_swap"}
    # Every training identity, the camera man and the astronaut among them, has two videos.
    train_groups = [i.group for i in by_split["train"]]
    assert set(TRAIN_ONLY_IDENTITIES) <= set(train_groups)
    assert all(train_groups.count(g) == 2 for g in set(train_groups))
    assert len(set(train_groups)) == 4 + len(TRAIN_ONLY_IDENTITIES)


def test_identities_stay_in_one_split_and_manifest_lists_every_video(tiny_set) -> None:
    out, items = tiny_set
    splits: dict[str, str] = {}
    for item in items:
        assert splits.setdefault(item.group, item.split) == item.split
        assert os.path.getsize(item.uri) > 0
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["uri"], r["label"], r["manipulation"], r["group"], r["split"]) for r in rows] == [
        (i.uri, i.label, i.manipulation, i.group, i.split) for i in items]
    assert len({i.uri for i in items}) == len(items)


def test_test_split_is_that_of_earlier_releases(tiny_set) -> None:
    _, items = tiny_set
    test = {os.path.basename(i.uri): _sha(i.uri) for i in items if i.split == "test"}
    assert test == EARLIER_TEST_VIDEOS


def test_training_videos_vary(tiny_set) -> None:
    """Training videos of one identity differ in resolution, scene or compression."""
    import av

    _, items = tiny_set
    settings: dict[str, set] = {}
    for item in items:
        if item.split != "train":
            continue
        with av.open(item.uri) as container:
            stream = container.streams.video[0]
            settings.setdefault(item.group, set()).add((stream.width, stream.height,
                                                        os.path.getsize(item.uri)))
    assert all(len(s) == 2 for s in settings.values())
    sizes = {(w, h) for s in settings.values() for w, h, _ in s}
    assert len(sizes) >= 2


def test_videos_are_in_their_identitys_split(tiny_set) -> None:
    _, items = tiny_set
    expected = identity_splits(DEFAULT_SPLIT_SEED, identities=8)
    expected.update(dict.fromkeys(TRAIN_ONLY_IDENTITIES, "train"))
    assert {(i.group, i.split) for i in items} == set(expected.items())


def test_splits_follow_the_seed_and_fractions() -> None:
    splits = identity_splits(DEFAULT_SPLIT_SEED)
    assert list(splits) == [f"lfw{i}" for i in range(100)] and splits == identity_splits(DEFAULT_SPLIT_SEED)
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 55, "val": 20, "test": 25}
    assert splits != identity_splits(DEFAULT_SPLIT_SEED + 1)


def test_restyled_portrait_moves_landmarks_with_the_face() -> None:
    image = np.full((120, 100, 3), 128, np.uint8)
    landmarks = np.array([[35.0, 45.0], [65.0, 45.0], [50.0, 62.0], [38.0, 80.0], [62.0, 80.0]])
    for x, y in landmarks:
        cv2.circle(image, (int(x), int(y)), 3, (255, 255, 255), -1)
    box = np.array([20.0, 25.0, 80.0, 100.0])
    same, same_points, same_box = restyle_portrait(image, landmarks, box, Look())
    np.testing.assert_array_equal(same, image)
    np.testing.assert_allclose(same_points, landmarks, atol=1e-6)
    np.testing.assert_allclose(same_box, box, atol=1e-6)
    look = Look(brightness=0.9, warmth=0.1, gradient=0.3, roll_deg=8.0, zoom=1.05,
                tilt=(0.02, -0.01, 0.0, 0.03, -0.02, 0.0, 0.01, 0.02))
    out, points, new_box = restyle_portrait(image, landmarks, box, look)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(points - landmarks).max() > 2.0  # the face moved ...
    for x, y in points:  # ... and each landmark still sits on its bright dot
        assert out[int(round(y)), int(round(x))].max() > 180
    assert np.all(points >= new_box[:2] - 1) and np.all(points <= new_box[2:] + 1)
    assert out[..., 0].mean() > out[..., 2].mean()  # warmer light
    assert draw_look(np.random.default_rng(3)) == draw_look(np.random.default_rng(3))


def test_camera_man_is_a_gray_face_mtcnn_finds() -> None:
    portrait = TrainingFaces().portrait("camera", 120.0)
    image, box = portrait.image, portrait.box
    assert abs((box[3] - box[1]) - 120.0) < 1.0
    assert (image == image[..., :1]).all()  # three equal channels
    assert np.all(portrait.landmarks >= box[:2] - 2) and np.all(portrait.landmarks <= box[2:] + 2)
