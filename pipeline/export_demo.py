"""Store a trained checkpoint compactly as the bundled demo model.

Usage: python -m pipeline.export_demo TRAINED.pt models/weights/demo.pt
Weights are stored as fp16 (BatchNorm statistics stay fp32): half the size,
scores equal to a few decimals.
"""
from __future__ import annotations

import logging
import sys

from models.checkpoint import load_checkpoint, save_checkpoint


def export(source: str, target: str) -> str:
    loaded = load_checkpoint(source)
    return save_checkpoint(target, loaded.card, loaded.frame_model, loaded.sequence_model, half=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sha = export(sys.argv[1], sys.argv[2])
    logging.getLogger(__name__).info("demo checkpoint %s (sha256 %s)", sys.argv[2], sha)
