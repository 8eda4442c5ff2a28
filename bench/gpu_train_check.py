"""A short GPU check of training: AMP, pinned memory and DataLoader workers on a synthetic face table.

Builds a synthetic face table (``bench.train_memory.write_face_table``: 224 px
crops by default, in row groups as ``extract`` writes them), trains the frame
model for about ``--steps`` steps on the GPU for each precision asked, then runs
calibration and a short sequence stage, and prints the frame stage's crops per
second and the peak GPU memory. Takes about two minutes on one recent GPU::

    python -m bench.gpu_train_check                       # bf16 and fp16 (GradScaler), 4 workers
    python -m bench.gpu_train_check --precision fp16 --workers 8 --steps 400

Exits non-zero if the GPU is missing or a run fails. Several GPUs on one machine
train data-parallel with ``torchrun --nproc_per_node N -m pipeline.cli train ...``
(see README, "Training").
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from bench.train_memory import write_face_table
from pipeline.config import load_config
from pipeline.train import run_train
from pipeline.train_config import TrainConfig

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def check(table: Path, out: Path, precision: str, args) -> dict:
    """One training run at ``precision``; returns its figures."""
    train_tracks = math.ceil(args.crops / 32) * 0.9
    per_track = max(1, math.ceil(args.steps * args.batch_size / train_tracks))
    settings = [f"data.faces={table}", f"output={out}", f"model.input_size={args.size}", f"model.arch={args.arch}",
                "model.pretrained=null", "frame.epochs=1", f"frame.batch_size={args.batch_size}",
                f"frame.workers={args.workers}", f"frame.precision={precision}", f"data.frames_per_track={per_track}",
                "data.val_frames_per_track=4", "data.max_tracks_per_video=1", "sequence.epochs=3",
                f"device={args.device}"]
    config = load_config(TrainConfig, str(ROOT / "configs" / "train_demo.yaml"), settings)
    gpu = args.device == "cuda"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    run_train(config)
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    (frame,) = [l for l in lines if l["stage"] == "frame"]
    return {"precision": precision, "steps": frame["train_steps"], "batch_size": args.batch_size,
            "workers": args.workers, "input_size": args.size, "arch": args.arch,
            "frame_crops_per_second": frame["train_crops_per_second"], "frame_seconds": frame["train_seconds"],
            # after the first step: without the workers' start-up and the first row groups' read
            "steady_crops_per_second": round((frame["train_steps"] - 1) * args.batch_size
                                             / max(frame["train_seconds"] - frame["train_first_batch_seconds"], 1e-9)),
            "train_loss": round(frame["train_loss"], 4),
            "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else 0.0,
            "job_seconds": round(time.time() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_train_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", action="append", choices=("bf16", "fp16", "fp32"),
                        help="repeatable (default: bf16 and fp16)")
    parser.add_argument("--crops", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="efficientnet-lite0")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_train_check"))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a smoke test of this script on a machine without a GPU (use --precision fp32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA GPU visible: this check needs one")
            return 2
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    table = write_face_table(args.out / "table", args.crops, args.size)
    results = [check(table, args.out / f"train_{p}", p, args) for p in (args.precision or ["bf16", "fp16"])]
    for r in results:
        print(f"{r['precision']}: {r['steps']} steps of {r['batch_size']} at {r['input_size']} px, "
              f"{r['workers']} workers: {r['frame_crops_per_second']:.0f} crops/s "
              f"({r['steady_crops_per_second']:.0f} after the first step), "
              f"peak GPU memory {r['peak_gpu_memory_gb']:.2f} GB, train loss {r['train_loss']}, "
              f"whole job {r['job_seconds']:.0f} s")
    (args.out / "gpu_train_check.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
