"""Listing inputs: files, directories, globs, manifests and fsspec URLs."""
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import InputsConfig
from pipeline.inputs import list_inputs
from pipeline.manifests import InputError


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
    # relative URIs are resolved against the manifest's folder
    assert uris(items) == [str(tree / "four.webm"), str(tree / "five.png")]
    assert [i.media_type for i in items] == ["video", "image"]  # labels are the data set's, not the scan's


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
        ("{tree}/*.avi", "pattern matched no media files"),
        ("{tree}/missing.mp4", "no such file or directory"),
        ("{tree}/empty", "no media files under"),
        ("{tree}/nope.csv", "no such file or directory"),
    ],
)
def test_clear_errors(tree, spec, message):
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match=message):
        list_inputs([spec.format(tree=tree)], InputsConfig())
