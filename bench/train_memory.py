"""Training memory on a large face table: peak RSS and crops per second of ``deepfake-scan train``.

Builds a synthetic face table of ``--crops`` crops (a few hundred distinct crops,
replicated; written in row groups of ``FACE_ROWS_PER_GROUP`` as ``extract``
writes them), then runs the real training job on it in its own process, as a
user runs it: the demo's training config (augmentation, self-blends, EMA,
BiLSTM) at a small input size, one frame epoch of about ``--steps`` steps, then
calibration and the sequence stage over every crop they need. Memory is sampled
from ``/proc`` for the job and its DataLoader workers while it runs::

    python -m bench.train_memory --crops 200000 --size 48 --steps 300 --out /tmp/train_memory

Prints (and writes to ``OUT/train_memory.json``) the peak RSS of the training
process, the peak RSS and PSS of the process tree (PSS counts pages the workers
share with their parent once), the frame stage's crops per second, and the
wall time. Training holds an index of the table (~16 bytes a crop), never the
table: peak RSS should not move when ``--crops`` does.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.crops import CropSpec
from models.preprocess import encode_crop
from pipeline.crop_record import write_crop_spec
from transforms.face_schema import FACE_ROWS_PER_GROUP, FACE_SCHEMA

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def synthetic_crops(count: int, size: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct PNG crops: smooth random shading with mild noise (PNG sizes like real faces')."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        base = cv2.resize(rng.integers(40, 220, (6, 6, 3), dtype=np.uint8), (size, size),
                          interpolation=cv2.INTER_CUBIC)
        noise = rng.integers(-6, 7, (size, size, 3))
        out.append(encode_crop(np.clip(base.astype(np.int16) + noise, 0, 255).astype(np.uint8)))
    return out


def write_face_table(root: Path, crops: int, size: int, frames: int = 32, val_fraction: float = 0.1,
                     distinct: int = 256, seed: int = 0) -> Path:
    """A face table of ``crops`` crops under ``root`` (one track of ``frames`` crops per video).

    Every ``1 / val_fraction``-th video is validation; half the videos of each split
    are fake. Rows are written a row group at a time, so building the table holds one
    row group, not the table.
    """
    faces = root / "faces"
    recipe = [crops, size, frames, val_fraction]
    if (faces / "_SUCCESS").exists() and json.loads((root / "bench.json").read_text()) == recipe:
        logger.info("reusing the face table in %s", root)
        return root
    shutil.rmtree(root, ignore_errors=True)
    faces.mkdir(parents=True)
    pool = synthetic_crops(distinct, size, seed)
    videos = math.ceil(crops / frames)
    every = max(1, round(1 / val_fraction))
    rows, part, written = [], 0, 0
    seen = {"train": 0, "val": 0}

    def flush():
        nonlocal rows, part
        pq.write_table(pa.Table.from_pylist(rows, schema=FACE_SCHEMA), str(faces / f"part-{part:05d}.parquet"),
                       compression="snappy")
        rows, part = [], part + 1

    for v in range(videos):
        split = "val" if v % every == every - 1 else "train"
        label = "fake" if seen[split] % 2 else "real"
        seen[split] += 1
        for f in range(min(frames, crops - written)):
            rows.append({"video_id": f"video{v:07d}", "uri": f"/bench/video{v:07d}.mp4", "group": f"g{v}",
                         "split": split, "label": label, "manipulation": "face_swap" if label == "fake" else "",
                         "track_id": 0, "clip_index": 0, "frame_index": 3 * f, "timestamp": 3 * f / 25,
                         "box": [100.0, 80.0, 260.0, 240.0], "crop_png": pool[(v * frames + f) % distinct],
                         "crop_size": size})
            written += 1
            if len(rows) == FACE_ROWS_PER_GROUP:
                flush()
    if rows:
        flush()
    (faces / "_SUCCESS").write_text("")
    write_crop_spec(str(root), CropSpec("aligned", size))
    (root / "bench.json").write_text(json.dumps(recipe))
    logger.info("wrote %d crops in %d row groups to %s (%.0f MB)", written, part, faces,
                sum(p.stat().st_size for p in faces.glob("*.parquet")) / 2**20)
    return root


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _memory_mb(pid: int) -> tuple[float, float, float]:
    """(RSS of ``pid``, RSS of its tree, PSS of its tree) in MB."""
    own = rss = pss = 0.0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                fields = {line.split(":")[0]: float(line.split()[1]) / 1024 for line in f if line.endswith("kB\n")}
        except (OSError, ValueError, IndexError):
            continue
        rss += fields.get("Rss", 0.0)
        pss += fields.get("Pss", 0.0)
        if p == pid:
            own = fields.get("Rss", 0.0)
    return own, rss, pss


def run_training(faces: Path, out: Path, size: int, arch: str, steps: int, batch_size: int, workers: int,
                 crops: int, frames: int, val_fraction: float, sequence: bool) -> dict:
    """``deepfake-scan train`` on the table in a child process, sampling its memory; returns the figures."""
    train_tracks = math.ceil(crops / frames) * (1 - val_fraction)
    per_track = max(1, math.ceil(steps * batch_size / train_tracks))
    settings = [f"data.faces={faces}", f"output={out}", f"model.input_size={size}", f"model.arch={arch}",
                "model.pretrained=null", "frame.epochs=1", f"frame.batch_size={batch_size}",
                f"frame.workers={workers}", f"data.frames_per_track={per_track}", "data.val_frames_per_track=4",
                "data.max_tracks_per_video=1", "sequence.epochs=2", f"sequence.enabled={str(sequence).lower()}",
                "device=cpu"]
    command = [sys.executable, "-m", "pipeline.cli", "train", "--config", str(ROOT / "configs" / "train_demo.yaml"),
               *[a for s in settings for a in ("--set", s)]]
    logger.info("running: %s", " ".join(command))
    started = time.time()
    log = open(out.parent / "train.log", "w")
    child = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    peaks = [0.0, 0.0, 0.0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peaks[:] = [max(a, b) for a, b in zip(peaks, _memory_mb(child.pid))]
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    stop.set()
    sampler.join()
    log.close()
    if code != 0:
        raise SystemExit(f"training failed (exit {code}); see {out.parent / 'train.log'}")
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    (frame,) = [l for l in lines if l["stage"] == "frame"]
    return {"crops": crops, "input_size": size, "arch": arch, "batch_size": batch_size, "workers": workers,
            "frames_per_track": per_track, "steps": frame["train_steps"],
            "frame_crops_per_second": frame["train_crops_per_second"], "frame_seconds": frame["train_seconds"],
            "sequence_stage": sequence, "peak_rss_mb_training_process": round(peaks[0]),
            "peak_rss_mb_process_tree": round(peaks[1]), "peak_pss_mb_process_tree": round(peaks[2]),
            "wall_s": round(time.time() - started, 1), "command": " ".join(command)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.train_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=200_000, help="crops in the face table")
    parser.add_argument("--size", type=int, default=48, help="crop and input size in px")
    parser.add_argument("--arch", default="efficientnet-lite0")
    parser.add_argument("--steps", type=int, default=300, help="frame-stage steps, about")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--frames", type=int, default=32, help="crops per track")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="share of videos in validation")
    parser.add_argument("--no-sequence", action="store_true", help="skip the BiLSTM stage (its embedding pass)")
    parser.add_argument("--out", type=Path, default=Path("outputs/train_memory"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    table = write_face_table(args.out / "table", args.crops, args.size, args.frames, args.val_fraction)
    figures = run_training(table, args.out / "train", args.size, args.arch, args.steps, args.batch_size,
                           args.workers, args.crops, args.frames, args.val_fraction, not args.no_sequence)
    (args.out / "train_memory.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
