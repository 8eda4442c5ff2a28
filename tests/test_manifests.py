"""The one manifest reader (transforms/manifests.py): every command reads a row the same way."""
from __future__ import annotations

import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import InputsConfig
from pipeline.datasets import load_dataset
from tests.test_inputs import list_inputs
from transforms.manifests import InputError, manifest_rows, read_manifest


def test_scan_data_set_and_report_resolve_uris_alike(tmp_path):
    (tmp_path / "lists").mkdir()
    absolute = str(tmp_path / "elsewhere" / "c.mp4")
    manifest = tmp_path / "lists" / "m.csv"
    manifest.write_text(f"uri,label\nclips/a.mp4,real\n./b.mp4,FAKE\n../up/x.mp4, fake \n{absolute},real\n")
    expected = [str(tmp_path / "lists" / "clips" / "a.mp4"), str(tmp_path / "lists" / "b.mp4"),
                str(tmp_path / "up" / "x.mp4"), absolute]

    scanned = [item.uri for item in list_inputs([str(manifest)], InputsConfig())]
    labelled = {video.uri: video.label for video in load_dataset(str(manifest))}
    truth = {row.uri: row.label for row in read_manifest(str(manifest)) if row.label}  # report's reading
    assert scanned == sorted(expected)  # workers list in no particular order
    assert labelled == truth == dict(zip(expected, ["real", "fake", "fake", "real"]))


def test_relative_uris_in_memory_take_the_canonical_form_of_a_listed_folder():
    root = f"/manifests-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        fs.pipe({f"{root}/clips/a.mp4": b"x", f"{root}/m.csv": b"uri\nclips/a.mp4\n"})
        [listed] = list_inputs([f"memory://{root}/clips"], InputsConfig())
        [row] = read_manifest(f"memory://{root}/m.csv")
        assert row.uri == listed.uri and row.written_uri == "clips/a.mp4"
    finally:
        fs.rm(root, recursive=True)


def test_a_label_is_checked_only_when_asked_for(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,label\na.mp4,maybe\nb.mp4,\n")
    assert len(list_inputs([str(manifest)], InputsConfig())) == 2  # the scan never reads labels
    bad, unlabelled = read_manifest(str(manifest))
    assert unlabelled.label is None
    with pytest.raises(InputError, match=r"row 1 \(a.mp4\) has label 'maybe'"):
        bad.label


def test_parquet_is_read_one_row_group_at_a_time(tmp_path):
    path = tmp_path / "m.parquet"
    table = pa.Table.from_pylist([{"uri": f"v{i}.mp4", "label": "real", "split": None} for i in range(10)])
    pq.write_table(table, path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4
    rows = manifest_rows(str(path))
    first = next(rows)  # a generator: nothing past the first row group need be read yet
    assert (first.number, first.written_uri, first.cell("split")) == (1, "v0.mp4", "")
    assert [row.written_uri for row in rows] == [f"v{i}.mp4" for i in range(1, 10)]


@pytest.mark.parametrize("name, text, message", [
    ("m.csv", "path\na.mp4\n", "no 'uri' column"),
    ("m.csv", "uri\na.mp4\n \n", "row 2 has an empty uri"),
    ("m.csv", "uri\n", "lists no media"),
    ("m.jsonl", '{"uri": "a.mp4"}\n[1, 2]\n', "row 2 is a JSON list"),
    ("m.jsonl", '{"uri": "a.mp4"\n', "cannot read manifest"),
])
def test_errors_name_the_manifest_and_row(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        read_manifest(str(tmp_path / name))
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(str(tmp_path / "missing.csv"))
