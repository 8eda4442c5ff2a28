"""``deepfake-scan report``: one self-contained HTML page a reviewer opens in a browser.

Reads a verdict table (local or any fsspec URL), draws counts, the score
distribution and, when ground truth is known, ROC and precision-recall curves;
then, for the most suspicious inputs, re-decodes the source to show the faces
the model judged, the whole video's scores over time (scout frames, dense clips
and the segments judged manipulated), and a Grad-CAM heat map of the frame
model over the most suspicious face. Every image is inlined as a data
URI and the page loads nothing from anywhere; file names are escaped.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
import logging
from dataclasses import dataclass, field
from typing import Optional

import fsspec
import numpy as np

from models.labels import is_fake
from models.segments import describe_segments
from pipeline import report_figures as figures
from pipeline.config import ConfigError, ScanConfig, load_config
from transforms.manifests import read_manifest
from transforms.tables import read_table

logger = logging.getLogger(__name__)

FLAT_COLUMNS = ["uri", "status", "label", "score", "threshold", "error", "media_type", "duration_s", "width",
                "height", "codec", "decoder", "frames_sampled", "faces_found", "num_tracks", "sampling_policy",
                "model_name", "checkpoint_sha256", "aggregator", "device", "scan_id", "scanned_at", "content_sha256",
                "file_size"]


class ReportError(ValueError):
    """The report cannot be made from what it was given."""


@dataclass
class Evidence:
    """What the report shows for one suspicious input."""

    row: dict
    truth: Optional[str]
    timeline_png: Optional[bytes] = None
    thumbnails_png: Optional[bytes] = None
    gradcam_png: Optional[bytes] = None
    notes: list[str] = field(default_factory=list)


def run_report(
    verdicts: str,
    output: str,
    *,
    manifest: Optional[str] = None,
    csv_path: Optional[str] = None,
    checkpoint: Optional[str] = None,
    top: int = 5,
) -> dict:
    """Write the HTML report (and optionally the flat CSV); returns a summary of what it holds."""
    try:
        rows = read_table(verdicts).to_pylist()
    except FileNotFoundError as e:
        raise ReportError(f"no verdict table at '{verdicts}': {e}") from None
    if not rows:
        raise ReportError(f"the verdict table at '{verdicts}' is empty")
    truth = _ground_truth(manifest) if manifest else {}
    scan_dir = verdicts.rstrip("/").rsplit("/", 1)[0]
    config = _scan_config(scan_dir)
    judged = [r for r in rows if r["score"] is not None]
    # The histogram marks the videos' threshold (stills are labelled with their own, in their rows).
    videos = [r for r in judged if r["media_type"] == "video"] or judged
    threshold = float(videos[0]["threshold"]) if videos else 0.5

    figs: list[tuple[str, bytes]] = [
        ("Inputs by status and verdict", figures.counts_figure([r["status"] for r in rows], [r["label"] for r in rows]))
    ]
    if judged:
        y = [_binary(truth.get(r["uri"])) for r in judged]
        figs.append(("Score distribution", figures.histogram_figure([r["score"] for r in judged], y, threshold)))
        known = [(t, r["score"]) for t, r in zip(y, judged) if t is not None]
        if len({t for t, _ in known}) == 2:
            labels, scores = zip(*known)
            figs.append(("ROC curve", figures.roc_figure(labels, scores)))
            figs.append(("Precision-recall curve", figures.pr_figure(labels, scores)))
        elif truth:
            logger.warning("ground truth covers only one class among judged inputs: no ROC or PR curve")

    suspicious = sorted(judged, key=lambda r: -r["score"])[:top]
    evidence = [Evidence(r, truth.get(r["uri"])) for r in suspicious]
    _gather_evidence(evidence, config, checkpoint or _run_checkpoint(scan_dir))

    page = _html(rows, figs, evidence, verdicts, truth)
    with fsspec.open(output, "w", encoding="utf-8") as f:
        f.write(page)
    if csv_path:
        write_csv(rows, csv_path, truth)
    gradcams = sum(e.gradcam_png is not None for e in evidence)
    summary = {"inputs": len(rows), "figures": len(figs) + sum(
        (e.timeline_png is not None) + (e.gradcam_png is not None) for e in evidence), "gradcams": gradcams}
    logger.info("report written to %s: %s", output, summary)
    return summary


def write_csv(rows: list[dict], path: str, truth: dict[str, str]) -> None:
    """The verdicts as a flat table (tracks and timeline left out; segments as text), with the ground truth."""
    with fsspec.open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FLAT_COLUMNS + ["segments", "warnings", "true_label"])
        for r in rows:
            writer.writerow([r.get(c) for c in FLAT_COLUMNS] + [describe_segments(r.get("segments") or []),
                                                                "; ".join(r.get("warnings") or []),
                                                                truth.get(r["uri"], "")])


# ---------------------------------------------------------------- inputs


def _ground_truth(manifest: str) -> dict[str, str]:
    """uri -> label of every labelled row, keyed as the scan listed the same manifest."""
    return {row.uri: row.label for row in read_manifest(manifest) if row.label}


def _binary(label: Optional[str]) -> Optional[int]:
    return is_fake(label)


def _scan_config(scan_dir: str) -> ScanConfig:
    path = f"{scan_dir}/config.yaml"
    try:
        return load_config(ScanConfig, path)
    except ConfigError as e:
        logger.warning("using the default scan configuration to find the faces again: %s", e)
        return ScanConfig()


def _run_checkpoint(scan_dir: str) -> Optional[str]:
    try:
        with fsspec.open(f"{scan_dir}/run.json", "r") as f:
            return json.load(f).get("checkpoint")
    except (FileNotFoundError, ValueError):
        return None


# ---------------------------------------------------------------- evidence


def _gather_evidence(evidence: list[Evidence], config: ScanConfig, checkpoint: Optional[str]):
    """Timelines from the table; face crops and Grad-CAM from the re-decoded sources."""
    if not evidence:
        return
    for item in evidence:
        row = item.row
        if row["media_type"] == "video" and (any(t["scores"] for t in row["tracks"]) or row.get("timeline")):
            item.timeline_png = figures.video_timeline_figure(
                row["duration_s"] or 0.0, row.get("timeline") or [], row["tracks"], row.get("clips") or [],
                row.get("segments") or [], float(row["threshold"]))
    extractor, model = _face_tools(config, checkpoint)
    try:
        for item in evidence:
            _faces_and_gradcam(item, extractor, model)
    finally:
        extractor.sandbox.shutdown()


def _face_tools(config: ScanConfig, checkpoint: Optional[str]):
    """The face extractor, cutting crops as the checkpoint's card says, and the checkpoint (or None)."""
    from models.checkpoint import load_checkpoint
    from models.crops import ALIGNED, CropSpec
    from models.faces import FaceDetector
    from transforms.face_extractor import FaceExtractor

    model = None
    if checkpoint:
        try:
            model = load_checkpoint(checkpoint)
        except Exception as e:  # the report still has everything else
            logger.warning("no Grad-CAM: cannot load checkpoint %s: %s", checkpoint, e)
    else:
        logger.warning("no Grad-CAM: the scan's run.json names no checkpoint; pass --checkpoint")
    crop = model.card.crop if model is not None else CropSpec(ALIGNED, 224)
    if model is None:
        logger.warning("face thumbnails cut as %s (no checkpoint card to take the crops from)", crop.describe())
    detector = FaceDetector(detect_size=config.faces.detect_size, min_face_size=config.faces.min_face_size,
                            min_confidence=config.faces.min_confidence, thresholds=config.faces.mtcnn_thresholds)
    extractor = FaceExtractor(config.sampling, config.faces, detector, crop, config.decode)
    return extractor, model


def _faces_and_gradcam(item: Evidence, extractor, loaded) -> None:
    from transforms.media import MediaError

    row = item.row
    track = max((t for t in row["tracks"] if t["scores"]), key=lambda t: max(t["scores"]), default=None)
    if track is None:
        return
    best = int(np.argmax(track["scores"]))
    shown = sorted({*np.linspace(0, len(track["frame_indices"]) - 1, 6).round().astype(int).tolist(), best})
    indices = [track["frame_indices"][i] for i in shown]
    boxes = np.asarray([track["boxes"][i] for i in shown], np.float32)
    try:
        crops = extractor.crops_at(row["uri"], row["media_type"], row["decoder"], indices, boxes)
    except (MediaError, OSError) as e:
        item.notes.append(f"faces not shown: the source could not be re-read ({e})")
        return
    if crops:
        item.thumbnails_png = figures.thumbnails_png([crops[i] for i in indices if i in crops])
    target = track["frame_indices"][best]
    if loaded is None or target not in crops:
        item.notes.append("no Grad-CAM: " + ("no checkpoint" if loaded is None else "face not found again"))
        return
    if loaded.sha256 and row["checkpoint_sha256"] and loaded.sha256 != row["checkpoint_sha256"]:
        item.notes.append("Grad-CAM from a different checkpoint than the one that scored this input")
    item.gradcam_png = _gradcam(loaded, crops[target])


def _gradcam(loaded, crop: np.ndarray) -> bytes:
    import torch

    from models.gradcam import grad_cam
    from models.preprocess import FacePreprocess

    preprocess = FacePreprocess.from_card(loaded.card)  # the crop was cut by the same card
    x = preprocess(torch.from_numpy(crop[None]))
    heat, probability = grad_cam(loaded.frame_model.float(), x, loaded.card.fake_index)
    return figures.gradcam_figure(crop, heat, probability)


# ---------------------------------------------------------------- html


def _img(png: bytes, alt: str, css: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(rows, figs, evidence, verdicts, truth) -> str:
    e = html.escape
    model = rows[0]["model_name"]
    scanned = max((r["scanned_at"] for r in rows if r["scanned_at"]), default=None)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        # Nothing may be fetched: no scripts, no external styles, images only from data: URIs.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        f"<title>deepfake-scan report: {e(verdicts)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}"
        "h1{font-size:22px}h2{font-size:18px;margin-top:28px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top}th{background:#f4f6f8}"
        ".figs img{margin:6px;border:1px solid #eee}.fake{color:#c0392b;font-weight:600}"
        ".real{color:#27ae60}.uri{font-family:monospace;word-break:break-all}.note{color:#777;font-size:12px}"
        ".warn{background:#fff4e5;padding:8px;border:1px solid #f0c36d}"
        ".evidence{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}</style></head><body>",
        "<h1>deepfake-scan report</h1>",
        f"<p>Verdicts: <span class='uri'>{e(verdicts)}</span><br>Model: <b>{e(str(model))}</b>"
        f" &middot; {len(rows)} inputs &middot; scanned {e(str(scanned))}"
        f" &middot; report made {e(dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}</p>",
    ]
    if str(model).startswith("demo") or model == "untrained":
        parts.append("<p class='warn'>This model is a demo trained on synthetic material (or untrained): "
                     "its scores say nothing about real-world deepfakes.</p>")
    parts.append("<h2>Overview</h2><div class='figs'>")
    parts += [_img(png, title) for title, png in figs]
    parts.append("</div>")
    parts.append(f"<h2>Most suspicious inputs ({len(evidence)})</h2>")
    for rank, item in enumerate(evidence, 1):
        r = item.row
        label = r["label"] or "-"
        truth_text = f" &middot; ground truth: {e(item.truth)}" if item.truth else ""
        parts.append(
            f"<h3>{rank}. <span class='uri'>{e(r['uri'])}</span></h3>"
            f"<p>score <b class='{e(label)}'>{r['score']:.3f} ({e(label)})</b>{truth_text} &middot; "
            f"{r['num_tracks']} track(s), {r['faces_found']} faces in {r['frames_sampled']} sampled frames"
            f" &middot; {e(str(r['codec']))} {r['width']}x{r['height']}, decoder {e(str(r['decoder']))}</p>"
        )
        if r.get("segments"):
            parts.append(f"<p class='fake'>{e(describe_segments(r['segments']))}</p>")
        if item.thumbnails_png:
            parts.append("<div>" + _img(item.thumbnails_png, "faces of the most suspicious track") + "</div>")
        parts.append("<div class='evidence'>")
        if item.timeline_png:
            parts.append(_img(item.timeline_png, "whole-video score timeline"))
        if item.gradcam_png:
            parts.append(_img(item.gradcam_png, "Grad-CAM of the most suspicious face"))
        parts.append("</div>")
        for note in item.notes + list(r.get("warnings") or []):
            parts.append(f"<p class='note'>{e(note)}</p>")
    parts.append("<h2>All inputs</h2><table><tr><th>uri</th><th>status</th><th>label</th><th>score</th>"
                 "<th>truth</th><th>tracks</th><th>error</th></tr>")
    for r in sorted(rows, key=lambda r: (r["score"] is None, -(r["score"] or 0), r["uri"])):
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        parts.append(
            f"<tr><td class='uri'>{e(r['uri'])}</td><td>{e(r['status'])}</td>"
            f"<td class='{e(r['label'] or '')}'>{e(r['label'] or '')}</td><td>{score}</td>"
            f"<td>{e(truth.get(r['uri'], ''))}</td><td>{r['num_tracks']}</td><td>{e(r['error'] or '')}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "\n".join(parts)


__all__ = ["ReportError", "run_report", "write_csv"]
