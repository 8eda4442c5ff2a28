"""One loaded copy of a checkpoint, and one frame predictor, per worker process, shared by every stage.

The frame-model handler, the scout scorer and the aggregator all need the
checkpoint. Each worker process loads it once through Beam's ``Shared``, and
every stage gets that same ``LoadedCheckpoint``: the aggregator never builds an
EfficientNet just to reach the BiLSTM. The frame model is readied for inference
(moved to the device, traced and frozen when ``optimize``) once per process too:
``acquire_frame_predictor`` hands the RunInference handler and the scout scorer
the same ``ScanPredictor``. The driver never loads models; it reads only the
card (``models.checkpoint.read_card``).
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import numpy as np
from apache_beam.utils import shared

from models.checkpoint import LoadedCheckpoint, load_checkpoint
from models.device import native_bf16, resolve_device
from models.inference import FramePredictor

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
# Per process: built on import, never pickled.
_HANDLES: dict[Optional[str], shared.Shared] = {}  # checkpoint spec -> its handle
_PREDICTORS: dict[tuple, shared.Shared] = {}  # (spec, device, precision, optimize) -> its handle


def acquire_checkpoint(spec: Optional[str]) -> LoadedCheckpoint:
    """The process's copy of checkpoint ``spec``, loaded on first use (on the CPU).

    The object is shared while anyone holds it: keep a reference for as long as
    the models are used, so that a later caller gets the same copy.
    """
    with _LOCK:
        handle = _HANDLES.setdefault(spec, shared.Shared())

    def load() -> LoadedCheckpoint:
        logger.info("loading checkpoint %s in this worker process", spec)
        return load_checkpoint(spec, map_location="cpu")

    return handle.acquire(load, tag=f"checkpoint:{spec}")


class ScanPredictor:
    """A ``FramePredictor`` together with the shared checkpoint it was made from.

    Holding the checkpoint keeps the process's one copy alive for as long as the
    predictor is, so neither is ever loaded or built twice in one process.

    Thread safety: RunInference's worker threads and every extraction DoFn's scout
    scorer call this one object at once. That is safe: once built, a
    ``FramePredictor`` holds no per-call state (preprocessing makes new tensors,
    the model is in eval mode and runs under ``torch.inference_mode``, and a frozen
    TorchScript module may run on several threads at once). What is not safe is
    building a second predictor from the same checkpoint while this one runs
    (``FramePredictor`` moves and re-configures ``checkpoint.frame_model`` in
    place), which is why it is built only here, once, under ``Shared``'s lock.
    """

    def __init__(self, predictor: FramePredictor, checkpoint: LoadedCheckpoint):
        self.predictor = predictor
        self.checkpoint = checkpoint
        self.device_name = predictor.device_name

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predictor(crops)


def acquire_frame_predictor(spec: Optional[str], *, device: str = "auto", precision: str = "auto",
                            optimize: bool = True) -> ScanPredictor:
    """The process's one frame predictor for checkpoint ``spec`` on ``device``, built on first use.

    ``precision=auto`` defers to a card that names the precision its weights score
    in, else bf16 where the device computes it natively (as the scan does), so the
    handler (given the driver's resolved precision) and the scout scorer (given
    ``model.precision`` as written) get the same predictor. ``optimize`` counts on
    the CPU only. Keep a reference while scoring, so a later caller gets the same one.
    """
    checkpoint = acquire_checkpoint(spec)  # held until the predictor holds it
    where = resolve_device(device)
    if precision == "auto":
        precision = checkpoint.card.precision or ("bf16" if native_bf16(where) else "fp32")
    optimize = bool(optimize) and where.type == "cpu"
    key = (spec, str(where), precision, optimize)
    with _LOCK:
        handle = _PREDICTORS.setdefault(key, shared.Shared())

    def build() -> ScanPredictor:
        predictor = FramePredictor(checkpoint, where, optimize=optimize, precision=precision)
        logger.info("frame model %s ready on %s in this worker process", checkpoint.card.name,
                    predictor.device_name)
        return ScanPredictor(predictor, checkpoint)

    return handle.acquire(build, tag=f"frame-predictor:{key}")


__all__ = ["ScanPredictor", "acquire_checkpoint", "acquire_frame_predictor"]
