"""Regression guard on the product's first screen: the bundled model on the sample archive.

``./run_local.sh`` generates the sample archive and scans it with the default
configuration and the bundled checkpoint (``models/weights/demo.pt``). Every
input with a face must be judged (status ``ok``), and every judged input must get
its manifest label. A failure names each input that was not judged or was
labelled wrongly, with its score and the threshold.
"""
from __future__ import annotations

import os

import pytest

from pipeline.cli import main
from transforms.tables import read_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_archive(tmp_path_factory):
    """The full sample archive, as ``deepfake-scan samples`` writes it (what run_local.sh scans)."""
    from pipeline.synthetic.samples import generate_samples

    out = tmp_path_factory.mktemp("demo_samples")
    return out, generate_samples(str(out), seed=0)


@pytest.fixture(scope="module")
def demo_verdicts(full_archive, tmp_path_factory):
    """The archive scanned through the real CLI with the default config and checkpoint."""
    samples_dir, _ = full_archive
    out = tmp_path_factory.mktemp("demo_scan")
    assert main(["scan", str(samples_dir / "manifest.csv"), "--output", str(out), "--quiet"]) == 0
    return {os.path.basename(r["uri"]): r for r in read_table(str(out / "verdicts")).to_pylist()}


def test_the_demo_labels_every_sample_correctly(full_archive, demo_verdicts):
    _, items = full_archive
    assert sorted(demo_verdicts) == sorted(os.path.basename(i.uri) for i in items)  # one verdict per input
    not_judged, wrong, judged = [], [], 0
    for item in items:
        name = os.path.basename(item.uri)
        row = demo_verdicts[name]
        expected_status = "no_face" if item.faces == 0 else "ok"
        if row["status"] != expected_status:
            not_judged.append(f"{name}: status {row['status']}, expected {expected_status} ({row['error']})")
            continue
        if row["status"] != "ok":
            continue
        judged += 1
        if row["label"] != item.label:
            wrong.append(f"{name} ({item.label}{', ' + item.manipulation if item.manipulation else ''}): "
                         f"labelled {row['label']}, score {row['score']:.3f} vs threshold {row['threshold']:.3f} "
                         f"({row['aggregator']})")
    problems = []
    if not_judged:
        problems.append(f"{len(not_judged)} inputs not judged as expected: " + "; ".join(not_judged))
    if wrong:
        problems.append(f"{len(wrong)} of {judged} judged inputs labelled wrongly: " + "; ".join(wrong))
    assert not problems, "the bundled checkpoint fails the sample archive: " + " | ".join(problems)
