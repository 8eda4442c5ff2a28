"""Tests of the sample archive generator (pipeline/synthetic/samples.py) on real files."""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import av
import cv2
import decord
import numpy as np
import pytest

from models.manipulate import manipulation_names
from models.torchvision_compat import import_facenet_mtcnn
from transforms.manifests import MANIFEST_NAME
from pipeline.synthetic.filming import SampleItem
from pipeline.synthetic.samples import generate_samples


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SampleItem]]:
    out_dir = tmp_path_factory.mktemp("samples_small")
    return out_dir, generate_samples(str(out_dir), seed=0, small=True)


@pytest.fixture(scope="module")
def detector():
    # Faces in the archive are at least ~80 px tall; 40 keeps MTCNN fast and ignores specks.
    return import_facenet_mtcnn()(keep_all=True, device="cpu", min_face_size=40)


def _read_manifest(out_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(out_dir / MANIFEST_NAME, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _videos(items: list[SampleItem]) -> list[SampleItem]:
    return [item for item in items if item.kind == "video"]


def _one(items: list[SampleItem], predicate) -> SampleItem:
    matches = [item for item in items if predicate(item)]
    assert matches, "no item matches"
    return matches[0]


def _check_archive(out_dir: Path, items: list[SampleItem]) -> None:
    """Manifest, files and item metadata agree."""
    header, rows = _read_manifest(out_dir)
    assert header == ["uri", "label", "manipulation"]
    assert (out_dir / MANIFEST_NAME).read_text().splitlines()[0] == "uri,label,manipulation"
    assert [(r["uri"], r["label"], r["manipulation"]) for r in rows] == [
        (i.uri, i.label, i.manipulation) for i in items]
    names = [MANIFEST_NAME] + [Path(i.uri).name for i in items]
    assert sorted(os.listdir(out_dir)) == sorted(names)
    for item in items:
        assert os.path.isabs(item.uri) and Path(item.uri).parent == out_dir
        assert item.label in ("real", "fake") and item.kind in ("video", "image")
        if item.label == "real":
            assert item.manipulation == ""
        else:
            assert item.manipulation in manipulation_names()
        assert item.width % 2 == 0 and item.height % 2 == 0
    videos = _videos(items)
    assert {i.faces for i in videos} == {0, 1, 2}
    assert all(i.label == "real" for i in videos if i.faces != 1)
    assert {i.manipulation for i in videos if i.label == "fake"} == set(manipulation_names())
    stills = [i for i in items if i.kind == "image"]
    assert {(Path(i.uri).suffix, i.label) for i in stills} == {(".jpg", "real"), (".png", "fake")}


def _check_video(item: SampleItem) -> None:
    with av.open(item.uri) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == (item.width, item.height)
        assert stream.average_rate == item.fps
        duration = float(stream.duration * stream.time_base)
        assert abs(duration - item.duration_s) < 1.0 / item.fps
        frames = sum(1 for _ in container.decode(stream))
    assert frames == item.frames


def test_small_archive_manifest(small) -> None:
    out_dir, items = small
    _check_archive(out_dir, items)
    assert 4 <= len(_videos(items)) <= 5


def test_small_archive_videos_are_h264(small) -> None:
    for item in _videos(small[1]):
        assert item.duration_s == pytest.approx(1.5, abs=0.05)
        _check_video(item)


def test_small_archive_decodes_with_decord(small) -> None:
    for item in _videos(small[1]):
        reader = decord.VideoReader(item.uri, ctx=decord.cpu(0))
        assert len(reader) == item.frames
        assert reader.get_avg_fps() == pytest.approx(item.fps, rel=1e-3)
        frame = reader[len(reader) // 2].asnumpy()
        assert frame.shape == (item.height, item.width, 3) and frame.std() > 5


def test_small_archive_stills(small) -> None:
    for item in small[1]:
        if item.kind == "image":
            image = cv2.imread(item.uri)
            assert image is not None and image.shape == (item.height, item.width, 3)


def _middle_frame(item: SampleItem) -> np.ndarray:
    if item.kind == "image":
        return cv2.cvtColor(cv2.imread(item.uri), cv2.COLOR_BGR2RGB)
    with av.open(item.uri) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == item.frames // 2:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{item.uri} has fewer than {item.frames} frames")


def _face_count(detector, frame: np.ndarray) -> int:
    boxes, probs = detector.detect(frame)
    return 0 if boxes is None else int(np.sum(np.asarray(probs, dtype=float) >= 0.9))


def test_mtcnn_finds_the_expected_faces(small, detector) -> None:
    items = small[1]
    picks = [
        _one(items, lambda i: i.kind == "video" and i.label == "real" and i.faces == 1),
        _one(items, lambda i: i.manipulation == "self_blend" and i.kind == "video"),
        _one(items, lambda i: i.manipulation == "face_swap" and i.kind == "video"),
        _one(items, lambda i: i.faces == 2),
        _one(items, lambda i: i.faces == 0),
        _one(items, lambda i: i.kind == "image" and i.label == "fake"),
    ]
    for item in picks:
        frame = _middle_frame(item)
        assert _face_count(detector, frame) == item.faces, Path(item.uri).name
        if item.faces == 2:
            boxes, _ = detector.detect(frame)
            heights = sorted(float(b[3] - b[1]) for b in np.asarray(boxes, dtype=float))
            assert heights[0] >= 110  # each face clearly visible
            centres = sorted(float(b[0] + b[2]) / 2 for b in np.asarray(boxes, dtype=float))
            assert centres[1] - centres[0] > heights[0]  # clearly separated


def _digests(out_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(out_dir)) if name != MANIFEST_NAME}


def test_same_seed_gives_identical_files(small, tmp_path: Path) -> None:
    out_dir, items = small
    again = generate_samples(str(tmp_path), seed=0, small=True)
    assert _digests(tmp_path) == _digests(out_dir)
    assert [(Path(i.uri).name, i.label, i.manipulation) for i in again] == [
        (Path(i.uri).name, i.label, i.manipulation) for i in items]


@pytest.mark.slow
def test_full_archive(tmp_path: Path, detector) -> None:
    items = generate_samples(str(tmp_path), seed=0)
    _check_archive(tmp_path, items)
    videos = _videos(items)
    assert len(videos) >= 12
    assert sum(i.label == "fake" for i in videos) * 2 == len(videos)
    heights = {i.height for i in videos}
    assert len(heights) >= 2 and all(360 <= h <= 1080 for h in heights)
    assert len({i.fps for i in videos}) >= 2
    assert len({i.crf for i in videos}) >= 3
    for item in videos:
        assert 3.0 <= item.duration_s <= 10.0
        _check_video(item)
    two_faces = _one(videos, lambda i: i.faces == 2)
    assert _face_count(detector, _middle_frame(two_faces)) == 2
