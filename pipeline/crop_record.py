"""``FACES_DIR/crop.json``: how a face table's crops were cut (no Beam here).

``extract`` writes it beside the face table; ``train`` reads it to write the
same crop policy into the checkpoint's card, so a model is always scanned with
the crops it was trained on.
"""
from __future__ import annotations

import json
import logging

import fsspec

from models.crops import ALIGNED, CropSpec
from pipeline.config import ConfigError, ScanConfig, load_config

logger = logging.getLogger(__name__)

CROP_FILE = "crop.json"


def write_crop_spec(faces_dir: str, crop: CropSpec) -> None:
    """Record how a face table's crops were cut, as ``FACES_DIR/crop.json``."""
    record = {"policy": crop.policy, "size": crop.size, "margin": crop.margin, "box_margins": list(crop.box_margins)}
    with fsspec.open(f"{faces_dir.rstrip('/')}/{CROP_FILE}", "w") as f:
        json.dump(record, f, indent=2)


def read_crop_spec(faces_dir: str) -> CropSpec:
    """How the crops under ``faces_dir`` (written by ``deepfake-scan extract``) were cut.

    A face table extracted before ``crop.json`` existed was aligned at its
    config's ``faces.crop_size``/``faces.margin`` (224 and 0.25 by default).

    Raises:
        ConfigError: If ``crop.json`` cannot be read or describes no valid crop.
    """
    out = faces_dir.rstrip("/")
    path = f"{out}/{CROP_FILE}"
    fs, local = fsspec.core.url_to_fs(path)
    if not fs.exists(local):
        return _legacy_crop_spec(out)
    try:
        with fsspec.open(path, "r") as f:
            record = json.load(f)
        return CropSpec(
            policy=record["policy"],
            size=record["size"],
            margin=float(record["margin"]),
            box_margins=tuple(record["box_margins"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} does not say how the crops were cut ({type(e).__name__}: {e}); "
                          "run 'deepfake-scan extract' again") from None


def _legacy_crop_spec(faces_dir: str) -> CropSpec:
    path = f"{faces_dir}/config.yaml"
    fs, local = fsspec.core.url_to_fs(path)
    faces = load_config(ScanConfig, path).faces if fs.exists(local) else ScanConfig().faces
    size = 224 if faces.crop_size is None else faces.crop_size
    margin = 0.25 if faces.margin is None else faces.margin
    logger.warning("%s has no %s (extracted by an older version): taking aligned %d px crops, margin %g",
                   faces_dir, CROP_FILE, size, margin)
    return CropSpec(ALIGNED, size, margin)
