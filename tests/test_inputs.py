"""Listing inputs: files, directories, globs, manifests and fsspec URLs.

The driver checks each spec (``check_spec``); the workers list them
(``ListInputs``). ``list_inputs`` below runs both, as a scan does, in a real
pipeline, and returns what the listing produced.
"""
import json
import threading

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.config import InputsConfig
from transforms.listing import ListInputs, check_spec
from transforms.manifests import InputError

_LISTED: list = []
_LOCK = threading.Lock()


def _keep(item) -> None:
    with _LOCK:
        _LISTED.append(item)


def list_inputs(specs, config: InputsConfig):
    """The scan's listing of ``specs``: checked on the driver, expanded in a pipeline; sorted by URI."""
    checked = [check_spec(spec) for spec in dict.fromkeys(specs)]
    _LISTED.clear()
    with TestPipeline() as p:
        p | ListInputs(checked, config) | beam.Map(_keep)
    return sorted(_LISTED, key=lambda item: item.uri)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    for name in ["a/one.mp4", "a/deep/two.MOV", "a/three.jpg", "a/notes.txt", "four.webm", "five.png"]:
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def uris(items):
    return [i.uri for i in items]


def test_directory_is_searched_recursively_for_media(tree):
    items = list_inputs([str(tree / "a")], InputsConfig())
    assert uris(items) == [str(tree / "a/deep/two.MOV"), str(tree / "a/one.mp4"), str(tree / "a/three.jpg")]
    assert [i.media_type for i in items] == ["video", "video", "image"]


def test_glob(tree):
    assert uris(list_inputs([str(tree / "*.webm")], InputsConfig())) == [str(tree / "four.webm")]
    assert len(list_inputs([str(tree / "**/*.mp4")], InputsConfig())) == 1


def test_explicit_file_of_unsupported_type_is_kept_as_unsupported(tree):
    (item,) = list_inputs([str(tree / "a/notes.txt")], InputsConfig())
    assert item.media_type is None


def test_duplicates_are_judged_once(tree):
    items = list_inputs([str(tree / "four.webm"), str(tree / "*.webm")], InputsConfig())
    assert uris(items) == [str(tree / "four.webm")]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifests(tree, fmt):
    rows = [{"uri": "four.webm", "label": "real"}, {"uri": str(tree / "five.png"), "label": "fake"}]
    path = tree / f"manifest.{fmt}"
    if fmt == "csv":
        path.write_text("uri,label\n" + "".join(f"{r['uri']},{r['label']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    items = list_inputs([str(path)], InputsConfig())
    # relative URIs are resolved against the manifest's folder (the listing comes back sorted by URI)
    assert uris(items) == [str(tree / "five.png"), str(tree / "four.webm")]
    assert [i.media_type for i in items] == ["image", "video"]  # labels are the data set's, not the scan's


def test_manifest_without_uri_column(tree):
    (tree / "m.csv").write_text("path,label\nx.mp4,real\n")
    with pytest.raises(InputError, match="no 'uri' column"):
        list_inputs([str(tree / "m.csv")], InputsConfig())


def test_memory_urls():
    for name in ["clips/a.mp4", "clips/b.jpg", "clips/sub/c.mkv", "clips/readme.md"]:
        with fsspec.open(f"memory://listing/{name}", "wb") as f:
            f.write(b"x")
    # URIs come back in fsspec's canonical form for the protocol, which opens the same object
    listed = uris(list_inputs(["memory://listing/clips"], InputsConfig()))
    assert [u.replace("memory:///", "memory://") for u in listed] == [
        "memory://listing/clips/a.mp4",
        "memory://listing/clips/b.jpg",
        "memory://listing/clips/sub/c.mkv",
    ]
    assert all(fsspec.open(u, "rb").open().read() == b"x" for u in listed)
    globbed = uris(list_inputs(["memory://listing/clips/*.jpg"], InputsConfig()))
    assert [u.replace("memory:///", "memory://") for u in globbed] == ["memory://listing/clips/b.jpg"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{tree}/*.avi", "pattern matched nothing"),
        ("{tree}/missing.mp4", "no such file or directory"),
        ("{tree}/nope.csv", "no such file or directory"),
        ("{tree}/four.webm/*.mp4", "pattern matched nothing"),
    ],
)
def test_clear_errors(tree, spec, message):
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match=message):
        list_inputs([spec.format(tree=tree)], InputsConfig())


def test_a_folder_without_media_lists_nothing(tree):
    (tree / "empty").mkdir()
    (tree / "empty" / "notes.txt").write_text("x")
    assert list_inputs([str(tree / "empty")], InputsConfig()) == []


def test_a_directory_named_like_a_media_file_is_skipped_and_a_broken_symlink_listed(tree):
    (tree / "a" / "folder.mp4").mkdir()
    (tree / "a" / "folder.mp4" / "inner.jpg").write_bytes(b"x")
    (tree / "a" / "gone.mp4").symlink_to(tree / "nowhere.mp4")
    listed = uris(list_inputs([str(tree / "a")], InputsConfig()))
    assert str(tree / "a" / "folder.mp4") not in listed
    assert str(tree / "a" / "folder.mp4" / "inner.jpg") in listed  # what is inside is still media
    assert str(tree / "a" / "gone.mp4") in listed  # its row will say unreadable


def test_a_large_manifest_is_read_in_splits_on_the_workers(tree, monkeypatch):
    import transforms.manifests as manifests

    monkeypatch.setattr(manifests, "SPLIT_BYTES", 64)  # a few rows per split
    path = tree / "big.csv"
    path.write_text("uri,label\n" + "".join(f"clips/v{i:03d}.mp4,real\n" for i in range(200)) + "four.webm,\n")
    assert len(manifests.manifest_splits(str(path))) > 40
    listed = uris(list_inputs([str(path)], InputsConfig()))
    assert listed == sorted([str(tree / "clips" / f"v{i:03d}.mp4") for i in range(200)] + [str(tree / "four.webm")])

