"""deepfake-scan report: a self-contained HTML page, checked in a real headless Chromium."""
import base64
import csv
import json
import re
import shutil
import subprocess

import pytest

from pipeline.cli import main

FAST = ["--set", "sampling.clip_len=10", "--quiet"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(sample_archive, tmp_path_factory):
    samples_dir, items = sample_archive
    root = tmp_path_factory.mktemp("report")
    folder = root / "in"
    folder.mkdir()
    rows = ["uri,label"]
    for item in items:
        name = item.uri.rsplit("/", 1)[-1]
        if item.kind == "video" and item.label == "fake":
            name = '<img src=x onerror=alert(1)> & "quoted" ' + name  # names are data, never markup
        shutil.copy(item.uri, folder / name)
        rows.append(f"\"{name.replace(chr(34), chr(34) * 2)}\",{item.label}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = root / "scan"
    assert main(["scan", str(folder / "manifest.csv"), "--output", str(out), *FAST]) == 0
    html_path, csv_path = root / "report.html", root / "verdicts.csv"
    assert main(["report", str(out / "verdicts"), "--output", str(html_path), "--manifest",
                 str(folder / "manifest.csv"), "--csv", str(csv_path)]) == 0
    return html_path, csv_path, len(items)


def _images(page: str) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    for alt, data in re.findall(r'alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page):
        found.setdefault(alt, []).append(base64.b64decode(data))
    return found


def test_report_has_the_figures_inline(report):
    html_path, _, _ = report
    page = html_path.read_text(encoding="utf-8")
    images = _images(page)
    for title in ("Inputs by status and verdict", "Score distribution", "ROC curve", "Precision-recall curve",
                  "Grad-CAM of the most suspicious face", "whole-video score timeline",
                  "faces of the most suspicious track"):
        assert title in images, title
    assert all(png.startswith(b"\x89PNG") for pngs in images.values() for png in pngs)
    # nothing is loaded from elsewhere: no URLs in src/href, no scripts, a CSP forbidding fetches
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//)', page)
    assert "<script" not in page and "default-src 'none'" in page


def test_file_names_are_escaped(report):
    html_path, _, _ = report
    page = html_path.read_text(encoding="utf-8")
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quoted&quot;" in page


def test_csv_export_is_the_flat_table(report):
    _, csv_path, count = report
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == count
    assert {"uri", "status", "score", "label", "true_label", "warnings"} <= set(rows[0])
    assert {r["true_label"] for r in rows} == {"real", "fake"}


def _chromium(url: str, shot, netlog, width=1200, height=2400) -> None:
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--window-size={width},{height}",
         f"--screenshot={shot}", f"--log-net-log={netlog}", url],
        check=True, capture_output=True, timeout=120,
    )


def _page_requests(netlog) -> list[str]:
    """URLs the page itself asked for (Chromium's own background requests are not the page's)."""
    log = json.loads(netlog.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) == "URL_REQUEST_START_JOB" and params.get("url"):
            if params.get("initiator") != "not an origin":  # browser-initiated: updates, sign-in
                urls.append(params["url"])
    return urls


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_chromium_without_network(report, tmp_path):
    html_path, _, _ = report
    shot, netlog = tmp_path / "report.png", tmp_path / "net.json"
    _chromium(html_path.as_uri(), shot, netlog)
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1200)
    assert float(image.std()) > 20  # text, charts and faces, not a blank page
    dark = (image.mean(axis=2) < 128).mean()
    assert 0.01 < dark < 0.6
    assert [u for u in _page_requests(netlog) if not u.startswith(("file:", "data:"))] == []
    # the check sees a request when a page makes one (so an empty list above means something)
    leak = tmp_path / "leak.html"
    leak.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><p>x</p></body></html>')
    _chromium(leak.as_uri(), tmp_path / "leak.png", tmp_path / "leak.json", 400, 300)
    assert "http://127.0.0.1:9/x.png" in _page_requests(tmp_path / "leak.json")
