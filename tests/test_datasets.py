"""Dataset adapters on tiny trees of placeholder files: labels, groups, splits, manifests."""
from __future__ import annotations

import csv
import json
import logging
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.datasets import FAKE, REAL, SPLITS, TEST, TRAIN, VAL, LabelledVideo, load_dataset, split_summary
from transforms.manifests import InputError

METHODS = ("Deepfakes", "Face2Face")


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a video")  # the adapters must never open one


def _split_of_groups(videos: list[LabelledVideo]) -> dict[str, str]:
    """Group -> split; fails when a group spans two splits."""
    result: dict[str, str] = {}
    for video in videos:
        assert result.setdefault(video.group, video.split) == video.split, f"{video.group} in two splits"
    return result


def _ffpp_tree(root: Path, n_ids: int = 80, levels: tuple[str, ...] = ("c23",)) -> list[tuple[str, str]]:
    """FF++ layout: ids 000.., each paired with its neighbour both ways, like the real pairs."""
    ids = [f"{i:03d}" for i in range(n_ids)]
    pairs = [(ids[i], ids[i + 1]) for i in range(0, n_ids, 2)]
    for level in levels:
        _touch(root, *(f"original_sequences/youtube/{level}/videos/{i}.mp4" for i in ids))
        for method in METHODS:
            _touch(root, *(f"manipulated_sequences/{method}/{level}/videos/{a}_{b}.mp4"
                           for x, y in pairs for a, b in ((x, y), (y, x))))
    return pairs


def _official_splits(pairs: list[tuple[str, str]]) -> dict[str, list[list[str]]]:
    return {TRAIN: [list(p) for p in pairs[:14]], VAL: [list(p) for p in pairs[14:17]],
            TEST: [list(p) for p in pairs[17:]]}


def test_ffpp_official_splits_labels_groups_and_summary(tmp_path):
    pairs = _ffpp_tree(tmp_path, n_ids=40, levels=("c23", "c40"))
    _touch(tmp_path, "manipulated_sequences/Deepfakes/masks/videos/000_001.mp4",
           "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walk__ABC.mp4",
           "original_sequences/youtube/c23/images/000/0000.png")
    official = _official_splits(pairs)
    (tmp_path / "splits").mkdir()
    for split, listed in official.items():
        (tmp_path / "splits" / f"{split}.json").write_text(json.dumps(listed))
    split_of_id = {i: s for s, listed in official.items() for pair in listed for i in pair}

    videos = load_dataset(str(tmp_path))
    assert len(videos) == 2 * (40 + 2 * 40)  # masks, DeepFakeDetection and frames are skipped
    for video in videos:
        name = video.video_id.rsplit("/", 1)[1]
        assert video.uri == str(tmp_path / video.video_id) + ".mp4"
        assert video.split == split_of_id[name.split("_")[0]] == split_of_id[name.split("_")[-1]]
        if video.video_id.startswith("original_sequences/"):
            assert (video.label, video.manipulation, video.group) == (REAL, "", name)
        else:
            assert video.label == FAKE and video.manipulation in METHODS and video.group == name[:3]
    _split_of_groups(videos)

    c23 = load_dataset(str(tmp_path), compression="c23")
    assert len(c23) == 120 and all("/c23/" in v.video_id for v in c23)
    summary = split_summary(c23)
    assert summary["videos"] == 120 and summary["groups_in_several_splits"] == 0
    assert summary["splits"][TRAIN] == {"videos": 84, REAL: 28, FAKE: 56, "groups": 28,
                                        "manipulations": {"Deepfakes": 28, "Face2Face": 28}}
    assert summary["splits"][TEST]["videos"] == summary["splits"][VAL]["videos"] == 18
    json.dumps(summary)
    with pytest.raises(InputError, match="found: c23, c40"):
        load_dataset(str(tmp_path), compression="c99")


def test_ffpp_without_splits_keeps_pairs_together_and_is_deterministic(tmp_path, caplog):
    pairs = _ffpp_tree(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pipeline.datasets"):
        videos = load_dataset(str(tmp_path), seed=0)
    assert caplog.text == ""
    split_of = _split_of_groups(videos)
    assert all(split_of[a] == split_of[b] for a, b in pairs)
    assert set(split_of.values()) == set(SPLITS)
    assert load_dataset(str(tmp_path), seed=0) == videos
    other = load_dataset(str(tmp_path), seed=1)
    assert [v.video_id for v in other] == [v.video_id for v in videos]
    assert [v.split for v in other] != [v.split for v in videos]
    _split_of_groups(other)


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"/datasets-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def test_ffpp_in_memory_with_root_split_files(memory_root):
    fs, root = memory_root
    pairs = [("000", "001"), ("002", "003")]
    for a, b in pairs:
        for i in (a, b):
            fs.pipe(f"{root}/original_sequences/youtube/raw/videos/{i}.mp4", b"x")
        fs.pipe(f"{root}/manipulated_sequences/FaceShifter/raw/videos/{a}_{b}.mp4", b"x")
        fs.pipe(f"{root}/manipulated_sequences/FaceShifter/raw/videos/{b}_{a}.mp4", b"x")
    fs.pipe(f"{root}/train.json", json.dumps([["000", "001"]]).encode())
    fs.pipe(f"{root}/test.json", json.dumps([["002", "003"]]).encode())

    videos = load_dataset(f"memory://{root}/")
    assert len(videos) == 8
    assert {v.group: v.split for v in videos} == {"000": TRAIN, "001": TRAIN, "002": TEST, "003": TEST}
    fake = next(v for v in videos if v.video_id.endswith("002_003"))
    assert fake.uri == f"memory://{root}/manipulated_sequences/FaceShifter/raw/videos/002_003.mp4"
    assert (fake.label, fake.manipulation, fake.group) == (FAKE, "FaceShifter", "002")


def _celeb_tree(root: Path, n_ids: int, links: list[tuple[int, int]], n_youtube: int = 20) -> None:
    _touch(root, *(f"Celeb-real/id{i}_{n:04d}.mp4" for i in range(n_ids) for n in range(2)))
    _touch(root, *(f"YouTube-real/{n:05d}.mp4" for n in range(n_youtube)))
    _touch(root, *(f"Celeb-synthesis/id{t}_id{s}_0000.mp4" for t, s in links))


def test_celeb_df_testing_list_defines_test_and_pairs_share_splits(tmp_path):
    links = [(t, s) for i in range(0, 80, 2) for t, s in ((i, i + 1), (i + 1, i))]
    _celeb_tree(tmp_path, 80, links)
    listed = ["1 Celeb-real/id2_0000.mp4", "1 Celeb-real/id2_0001.mp4", "1 Celeb-real/id3_0000.mp4",
              "1 Celeb-real/id3_0001.mp4", "0 Celeb-synthesis/id2_id3_0000.mp4",
              "0 Celeb-synthesis/id3_id2_0000.mp4", "1 YouTube-real/00005.mp4", "1 YouTube-real/99999.mp4"]
    (tmp_path / "List_of_testing_videos.txt").write_text("\n".join(listed) + "\n")

    videos = load_dataset(str(tmp_path))
    assert len(videos) == 160 + 20 + 80
    assert sorted(v.video_id for v in videos if v.split == TEST) == sorted(
        line.split()[1][:-4] for line in listed[:-1])
    split_of = _split_of_groups(videos)
    assert {split_of[f"id{i}"] for i in range(80) if i not in (2, 3)} == {TRAIN, VAL}
    by_id = {v.video_id: v for v in videos}
    assert by_id["Celeb-real/id7_0001"].group == "id7" and by_id["Celeb-real/id7_0001"].label == REAL
    assert by_id["YouTube-real/00005"].group == "yt_00005"
    fake = by_id["Celeb-synthesis/id8_id9_0000"]
    assert (fake.label, fake.manipulation, fake.group) == (FAKE, "celeb_df_synthesis", "id8")
    assert all(split_of[f"id{t}"] == split_of[f"id{s}"] for t, s in links)


def test_celeb_df_chained_identities_do_not_collapse_into_one_split(tmp_path, caplog):
    _celeb_tree(tmp_path, 60, [(i, i + 1) for i in range(59)], n_youtube=0)
    with caplog.at_level(logging.WARNING, logger="pipeline.datasets"):
        videos = load_dataset(str(tmp_path))
    assert {v.split for v in videos} == set(SPLITS)
    _split_of_groups(videos)  # a fake always stays with its target identity
    assert "refused" in caplog.text and "source face" in caplog.text


def _dfdc_part(folder: Path, entries: dict, files: list[str]) -> None:
    _touch(folder, *files)
    (folder / "metadata.json").write_text(json.dumps(entries))


def test_dfdc_parts_group_fakes_with_their_original(tmp_path, caplog):
    reals = [f"real{k:02d}.mp4" for k in range(15)]
    part0 = {name: {"label": "REAL", "split": "train", "original": None} for name in reals}
    part0.update({f"fakea{k:02d}.mp4": {"label": "FAKE", "split": "train", "original": reals[k]}
                  for k in range(15)})
    part1 = {f"fakeb{k:02d}.mp4": {"label": "FAKE", "split": "train", "original": reals[k]}
             for k in range(15)}
    part1["gone.mp4"] = {"label": "FAKE", "split": "train", "original": reals[0]}
    _dfdc_part(tmp_path / "dfdc_train_part_0", part0, list(part0))
    _dfdc_part(tmp_path / "dfdc_train_part_1", part1, [n for n in part1 if n != "gone.mp4"] + ["extra.mp4"])

    with caplog.at_level(logging.WARNING, logger="pipeline.datasets"):
        videos = load_dataset(str(tmp_path))
    assert "1 entries with no file, 1 files with no entry" in caplog.text
    assert len(videos) == 45
    split_of = _split_of_groups(videos)
    assert set(split_of) == {f"real{k:02d}" for k in range(15)}
    assert len(set(split_of.values())) > 1  # one "train" for all is not a split
    fake = next(v for v in videos if v.video_id == "dfdc_train_part_1/fakeb03")
    assert (fake.label, fake.manipulation, fake.group) == (FAKE, "dfdc", "real03")
    real = next(v for v in videos if v.video_id == "dfdc_train_part_0/real03")
    assert (real.label, real.manipulation) == (REAL, "")
    assert real.uri == str(tmp_path / "dfdc_train_part_0" / "real03.mp4")


def test_dfdc_single_folder_honours_mixed_metadata_splits(tmp_path):
    entries = {"a.mp4": {"label": "REAL", "split": "train", "original": None},
               "b.mp4": {"label": "FAKE", "split": "train", "original": "a.mp4"},
               "c.mp4": {"label": "REAL", "split": "test", "original": None},
               "d.mp4": {"label": "FAKE", "split": "test", "original": "c.mp4"}}
    _dfdc_part(tmp_path, entries, list(entries))
    videos = load_dataset(str(tmp_path))
    assert [(v.video_id, v.group, v.split) for v in videos] == [
        ("a", "a", TRAIN), ("b", "a", TRAIN), ("c", "c", TEST), ("d", "c", TEST)]


MANIFEST_ROWS = [
    {"uri": "videos/a.mp4", "label": "real", "group": "p1"},
    {"uri": "videos/b.mp4", "label": "fake", "manipulation": "faceswap", "group": "p1"},
    {"uri": "ABSOLUTE", "label": "REAL", "split": "test"},
    {"uri": "./d.mp4", "label": "fake", "split": "val"},
    {"uri": "e.mp4", "label": "real", "group": "p2", "split": "test"},
    {"uri": "f.mp4", "label": "fake", "manipulation": "reenact", "group": "p2"},
]
COLUMNS = ("uri", "label", "manipulation", "group", "split")


def _write_manifest(path: Path, rows: list[dict], columns=COLUMNS) -> str:
    if path.suffix == ".csv":
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pq.write_table(pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows]), path)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_manifest_rows_resolve_group_and_split(tmp_path, suffix):
    absolute = str(tmp_path / "elsewhere" / "c.mp4")
    rows = [dict(row, uri=absolute) if row["uri"] == "ABSOLUTE" else row for row in MANIFEST_ROWS]
    (tmp_path / "sub").mkdir()
    spec = _write_manifest(tmp_path / "sub" / f"list{suffix}", rows)

    videos = {v.video_id: v for v in load_dataset(spec)}
    assert set(videos) == {"videos/a", "videos/b", absolute[:-4], "d", "e", "f"}
    a, b, c, d = videos["videos/a"], videos["videos/b"], videos[absolute[:-4]], videos["d"]
    assert a.uri == str(tmp_path / "sub" / "videos" / "a.mp4") and d.uri == str(tmp_path / "sub" / "d.mp4")
    assert c.uri == absolute
    assert (a.label, a.manipulation, a.group) == (REAL, "", "p1")
    assert (b.label, b.manipulation, b.group, b.split) == (FAKE, "faceswap", "p1", a.split)
    assert (c.label, c.group, c.split) == (REAL, absolute[:-4], TEST)
    assert (d.label, d.manipulation, d.group, d.split) == (FAKE, "unknown", "d", VAL)
    assert (videos["f"].group, videos["f"].split) == ("p2", TEST)  # follows its group's given split


def test_manifest_in_memory_resolves_relative_uris(memory_root):
    fs, root = memory_root
    fs.pipe(f"{root}/list.csv", b"uri,label\nclips/x.mp4,fake\n")
    [video] = load_dataset(f"memory://{root}/list.csv")
    assert video.uri == f"memory://{root}/clips/x.mp4" and video.video_id == "clips/x"


@pytest.mark.parametrize("rows, columns, message", [
    ([{"uri": "a.mp4", "label": "real"}, {"uri": "b.mp4", "label": "maybe"}], ("uri", "label"),
     r"row 2 \(b.mp4\) has label 'maybe'"),
    ([{"uri": "a.mp4", "label": "1"}], ("uri", "label"), "row 1 .* has label '1'"),
    ([{"path": "a.mp4", "label": "real"}], ("path", "label"), "no 'uri' column"),
    ([{"uri": "a.mp4"}], ("uri",), "no 'label' column"),
    ([{"uri": "a.mp4", "label": "real", "split": "holdout"}], ("uri", "label", "split"), "split 'holdout'"),
    ([{"uri": "a.mp4", "label": "real"}, {"uri": "./a.mp4", "label": "fake"}], ("uri", "label"),
     r"row 2 repeats ./a.mp4 \(row 1\)"),
])
def test_manifest_errors_name_the_row(tmp_path, rows, columns, message):
    spec = _write_manifest(tmp_path / "list.csv", rows, columns)
    with pytest.raises(InputError, match=message):
        load_dataset(spec)


def test_unrecognised_folder_missing_path_and_bad_fractions(tmp_path):
    _touch(tmp_path / "plain", "a.mp4", "b.mp4")
    with pytest.raises(InputError, match="looked for .*manifest.*FaceForensics.*Celeb-DF.*DFDC"):
        load_dataset(str(tmp_path / "plain"))
    with pytest.raises(InputError, match="no such file or directory"):
        load_dataset(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="not a manifest or a dataset folder"):
        load_dataset(str(tmp_path / "plain" / "a.mp4"))
    with pytest.raises(InputError, match="val \\+ test < 1"):
        load_dataset(str(tmp_path / "plain"), val_fraction=0.5, test_fraction=0.5)


# --- which videos `evaluate` scores ------------------------------------------------------


def _unsplit_manifest(tmp_path: Path, n: int = 40) -> str:
    rows = [{"uri": f"v{i:02d}.mp4", "label": "fake" if i % 2 else "real"} for i in range(n)]
    return _write_manifest(tmp_path / "unsplit.csv", rows, ("uri", "label"))


def test_data_without_splits_is_scored_whole(tmp_path):
    from pipeline.evaluate import select_split

    videos = load_dataset(_unsplit_manifest(tmp_path))
    assert not any(v.split_given for v in videos)
    selection = select_split(videos)
    assert selection.videos == videos and (selection.split, selection.source) == ("all", "none")
    assert selection.describe() == "all 40 videos (the data has no split column)"
    assert select_split(videos, "all").describe() == "all 40 videos"


def test_a_split_of_unsplit_data_is_the_one_extract_assigns(tmp_path):
    from pipeline.cli import build_parser
    from pipeline.splits import DEFAULT_SPLIT_SEED
    from pipeline.evaluate import select_split

    spec = _unsplit_manifest(tmp_path)
    _, parsers = build_parser()
    extract_seed = parsers["extract"].parse_args(["--data", spec, "--output", "faces"]).seed
    evaluate_seed = parsers["evaluate"].parse_args(["--data", spec, "--output", "m.json"]).seed
    assert extract_seed == evaluate_seed == DEFAULT_SPLIT_SEED  # one default for both commands
    extracted = load_dataset(spec, seed=extract_seed)  # what `extract` writes to the face table
    selection = select_split(load_dataset(spec, seed=evaluate_seed), "test", evaluate_seed)
    assert selection.videos == [v for v in extracted if v.split == TEST] and selection.videos
    assert selection.source == "seeded" and selection.seed == DEFAULT_SPLIT_SEED
    assert selection.describe().startswith(f"split test: {len(selection.videos)} of 40 videos")
    assert "seed 0" in selection.describe()


def test_data_with_splits_is_scored_on_test_by_default(tmp_path):
    from pipeline.evaluate import select_split

    videos = load_dataset(_write_manifest(tmp_path / "list.csv", MANIFEST_ROWS))
    assert {v.video_id: v.split_given for v in videos} == {
        "videos/a": False, "videos/b": False, "ABSOLUTE": True, "d": True, "e": True, "f": False}
    selection = select_split(videos)
    assert (selection.split, selection.source) == (TEST, "data")
    assert {v.video_id for v in selection.videos} == {v.video_id for v in videos if v.split == TEST}
    assert selection.describe() == f"split test: {len(selection.videos)} of 6 videos (splits from the data)"
    with pytest.raises(InputError, match="unknown split 'holdout'"):
        select_split(videos, "holdout")
