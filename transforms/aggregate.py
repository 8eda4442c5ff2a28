"""From face scores to one verdict per input."""
from __future__ import annotations

import logging
import time
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from models.checkpoint import load_checkpoint
from models.inference import SequencePredictor
from models.device import resolve_device
from transforms.elements import ERROR, METRICS_NAMESPACE, OK, ScoredMedia
from transforms.media import first_line
from transforms.verdicts import RunInfo, verdict_row

logger = logging.getLogger(__name__)

# Aggregator names written to the verdicts.
BILSTM = "bilstm"  # the checkpoint's sequence model over each track's embeddings
MEAN = "mean"  # mean of the frame probabilities (checkpoint without a sequence model)
FRAME = "frame"  # a still image: the frame model alone


class _SequenceModel:
    """Holder so ``Shared`` can keep a weak reference (``None`` models can't be)."""

    def __init__(self, predictor: Optional[SequencePredictor]):
        self.predictor = predictor


def combine_tracks(track_probabilities: list[float], track_lengths: list[int], strategy: str) -> float:
    """An input's score from its tracks' probabilities."""
    if strategy == "max":
        return float(max(track_probabilities))
    if strategy == "mean":
        return float(np.mean(track_probabilities))
    if strategy == "longest":
        return float(track_probabilities[int(np.argmax(track_lengths))])
    raise ValueError(f"unknown aggregate strategy '{strategy}' (valid: max, mean, longest)")


class AggregateVerdictsFn(beam.DoFn):
    """Track scores with the BiLSTM (or the mean fallback), then one verdict row per input."""

    def __init__(self, checkpoint: Optional[str], strategy: str, run: RunInfo):
        self._checkpoint = checkpoint
        self._strategy = strategy
        self._run = run
        self._shared = shared.Shared()
        self._model: Optional[_SequenceModel] = None

    def setup(self) -> None:
        def load() -> _SequenceModel:
            checkpoint = load_checkpoint(self._checkpoint, map_location="cpu")
            if checkpoint.sequence_model is None or checkpoint.card.aggregator != BILSTM:
                return _SequenceModel(None)
            # The BiLSTM is tiny: CPU avoids a device round trip per input.
            return _SequenceModel(SequencePredictor(checkpoint, resolve_device("cpu")))

        self._model = self._shared.acquire(load, tag=f"sequence:{self._checkpoint}")

    def process(self, scored: ScoredMedia) -> Iterable[dict]:
        start = time.perf_counter()
        try:
            row = self._judge(scored)
        except Exception as e:  # never let one input take the job down
            logger.exception("aggregation failed for %r", scored.media.info.uri)
            row = verdict_row(scored.media, self._run, status=ERROR, error=f"{type(e).__name__}: {first_line(e)}")
        Metrics.distribution(METRICS_NAMESPACE, "aggregate_ms").update(int((time.perf_counter() - start) * 1000))
        Metrics.counter(METRICS_NAMESPACE, f"verdict_{row['status']}").inc()
        if row["label"]:
            Metrics.counter(METRICS_NAMESPACE, f"label_{row['label']}").inc()
        yield row

    def _judge(self, scored: ScoredMedia) -> dict:
        item = scored.media
        if item.status != OK:
            return verdict_row(item, self._run)
        if scored.failures:
            return verdict_row(item, self._run, status=ERROR, error="; ".join(scored.failures))
        for track, scores in zip(item.tracks, scored.scores):
            if len(scores) != len(track):
                raise RuntimeError(f"track {track.track_id} has {len(track)} faces but {len(scores)} scores")
        frame_probs = [[s.fake_probability for s in scores] for scores in scored.scores]
        predictor = self._model.predictor
        if item.info.media_type == "image":
            aggregator, track_probs = FRAME, [float(np.mean(p)) for p in frame_probs]
        elif predictor is not None:
            embeddings = [np.stack([s.embedding for s in scores]) for scores in scored.scores]
            aggregator, track_probs = BILSTM, [float(p) for p in predictor(embeddings)]
        else:
            aggregator, track_probs = MEAN, [float(np.mean(p)) for p in frame_probs]
        score = combine_tracks(track_probs, [len(t) for t in item.tracks], self._strategy)
        return verdict_row(
            item,
            self._run,
            track_scores=frame_probs,
            track_probabilities=track_probs,
            score=score,
            aggregator=aggregator,
            device=scored.scores[0][0].device,
        )


class AggregateVerdicts(beam.PTransform):
    """``PCollection[ScoredMedia]`` -> ``PCollection[dict]`` rows of ``VERDICT_SCHEMA``."""

    def __init__(self, checkpoint: Optional[str], strategy: str, run: RunInfo):
        super().__init__()
        self._fn = AggregateVerdictsFn(checkpoint, strategy, run)

    def expand(self, scored):
        return scored | "JudgeInputs" >> beam.ParDo(self._fn)
