"""The RunInference model handler for the frame model."""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from models.device import compute_cpu_clock, set_torch_threads
from transforms.checkpoints import ScanPredictor, acquire_frame_predictor
from transforms.elements import METRICS_NAMESPACE, FaceScore


class FrameModelHandler(ModelHandler[np.ndarray, FaceScore, ScanPredictor]):
    """Scores face crops (``S x S x 3`` uint8, ``S`` the card's input size) with the checkpoint's frame model.

    Wrap it in ``KeyedModelHandler`` to carry crop keys through RunInference. The
    checkpoint is loaded, and the frame model readied, once per process
    (``acquire_frame_predictor``: the same predictor scores the scout frames, and
    the aggregator gets the same checkpoint), or ``model_copies`` times per machine
    across processes when set (one copy per GPU on Dataflow). A crop of another
    size fails its batch, which becomes an error row (crops are never resized to
    fit the model).
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
        # The process's one predictor for these settings, also the scout scorer's (transforms.checkpoints).
        return acquire_frame_predictor(self._checkpoint, device=self._device, precision=self._precision,
                                       optimize=self._optimize)

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
