"""Frame-level validation AUC of checkpoints, per manipulation, validation-only families included.

The frame stage logs these figures for the epoch it is training; this scores any
checkpoint on the same items, so candidates trained with other recipes (or
before ``data.val_families`` existed) are compared on equal terms::

    python -m bench.validation_auc --faces outputs/demo_faces models/weights/demo.pt outputs/train_demo/model.pt

The items are those of ``pipeline.frame_validation.validation_set`` under the
training config (by default the demo's: its ``data.val_frames_per_track`` crops of
every validation track, and each real crop's copy by every ``data.val_families``
family, seeded as in training), scored in fp32 on the CPU. Prints one JSON line
per checkpoint: the AUC over all items (``val_auc``) and that of each fake
manipulation against all reals. Never run it on the test split: validation is
what recipes are chosen on.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import torch

from models.checkpoint import load_checkpoint
from models.inference import fake_probabilities
from models.metrics import binary_report
from models.preprocess import FacePreprocess
from models.training import MixedPrecision
from pipeline.config import load_config
from pipeline.distributed import Ranks
from pipeline.frame_stage import validation_logits
from pipeline.frame_validation import auc_by_manipulation, validation_set
from pipeline.train_config import TrainConfig
from pipeline.train_data import build_index, face_table_crop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint paths (or specs load_checkpoint accepts)")
    parser.add_argument("--faces", required=True, help="face table written by extract (its val split is used)")
    parser.add_argument("--config", default="configs/train_demo.yaml",
                        help="training config naming data.val_families (default: the demo's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(TrainConfig, args.config, [f"data.faces={args.faces}", "frame.workers=0"])
    index = build_index(args.faces, config.data.max_tracks_per_video)
    items = validation_set(config, index, face_table_crop(config))
    device = torch.device("cpu")
    for spec in args.checkpoints:
        loaded = load_checkpoint(spec)
        model = loaded.frame_model.float().eval()
        logits = validation_logits(model, index, items, FacePreprocess.from_card(loaded.card),
                                   MixedPrecision(device, "fp32"), Ranks(0, 1, device), config.frame)
        probabilities = fake_probabilities(logits, loaded.card.fake_index)
        figures = {"val_auc": binary_report(items.labels, probabilities, 0.5)["auc"],
                   **auc_by_manipulation(items, probabilities)}
        print(json.dumps({"checkpoint": spec, "items": len(items),
                          **{k: round(float(v), 4) for k, v in figures.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
