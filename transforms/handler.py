"""The RunInference model handler for the frame model."""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.checkpoint import LoadedCheckpoint
from models.device import compute_cpu_clock, resolve_device, set_torch_threads
from models.inference import FramePredictor
from transforms.checkpoints import acquire_checkpoint
from transforms.elements import METRICS_NAMESPACE, FaceScore

logger = logging.getLogger(__name__)


class ScanPredictor:
    """A ``FramePredictor`` together with the shared checkpoint it was made from.

    The checkpoint is the process's one copy (``transforms.checkpoints``), which
    the aggregator uses too; holding it here keeps that copy alive for as long as
    the predictor is, so it is never loaded twice in one process.
    """

    def __init__(self, predictor: FramePredictor, checkpoint: LoadedCheckpoint):
        self.predictor = predictor
        self.checkpoint = checkpoint
        self.device_name = predictor.device_name

    def __call__(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predictor(crops)


class FrameModelHandler(ModelHandler[np.ndarray, FaceScore, ScanPredictor]):
    """Scores face crops (``S x S x 3`` uint8, ``S`` the card's input size) with the checkpoint's frame model.

    Wrap it in ``KeyedModelHandler`` to carry crop keys through RunInference. The
    checkpoint is loaded once per process (``acquire_checkpoint``, shared with the
    aggregator), or ``model_copies`` times per machine across processes when set
    (one copy per GPU on Dataflow). A crop of another size fails its batch, which
    becomes an error row (crops are never resized to fit the model).
    """

    def __init__(
        self,
        checkpoint: Optional[str],
        *,
        device: str = "auto",
        batch_size: int = 8,
        model_copies: Optional[int] = None,
        optimize: bool = True,
        torch_threads: int = 0,
        precision: str = "auto",
    ):
        super().__init__(min_batch_size=1, max_batch_size=batch_size, model_copies=model_copies)
        self._checkpoint = checkpoint
        self._device = device
        self._optimize = optimize
        self._torch_threads = torch_threads
        self._precision = precision

    def load_model(self) -> ScanPredictor:
        set_torch_threads(self._torch_threads)
        device = resolve_device(self._device)
        checkpoint = acquire_checkpoint(self._checkpoint)
        predictor = FramePredictor(checkpoint, device, optimize=self._optimize, precision=self._precision)
        logger.info("frame model %s loaded on %s", checkpoint.card.name, predictor.device_name)
        return ScanPredictor(predictor, checkpoint)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: ScanPredictor,
        inference_args: Optional[dict[str, Any]] = None,
    ) -> Iterable[PredictionResult]:
        set_torch_threads(self._torch_threads)  # the calling worker thread's share of the cores
        start, cpu_start = time.perf_counter(), compute_cpu_clock()
        probs, embeddings = model(np.stack(batch))
        Metrics.distribution(METRICS_NAMESPACE, "score_ms").update(int((time.perf_counter() - start) * 1000))
        Metrics.distribution(METRICS_NAMESPACE, "score_cpu_ms").update(int((compute_cpu_clock() - cpu_start) * 1000))
        # The crop is not echoed back as the example: nothing downstream needs pixels.
        return [
            PredictionResult(None, FaceScore(float(p), e, model.device_name))
            for p, e in zip(probs, embeddings)
        ]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(int(crop.nbytes) for crop in batch)

    def get_metrics_namespace(self) -> str:
        return "deepfake_scan_frame_model"
