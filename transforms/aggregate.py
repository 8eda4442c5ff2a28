"""From face scores to one verdict per input."""
from __future__ import annotations

import logging
import time
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from models.aggregation import BILSTM, FRAME, TrackFaces, aggregate, clip_scores
from models.device import resolve_device
from models.inference import SequencePredictor
from models.segments import find_segments, video_score
from transforms.checkpoints import acquire_checkpoint
from transforms.elements import ERROR, METRICS_NAMESPACE, OK, ScoredMedia
from transforms.media import first_line
from transforms.verdicts import RunInfo, verdict_row

logger = logging.getLogger(__name__)


class AggregateVerdictsFn(beam.DoFn):
    """One verdict row per input, from its faces' scores by the checkpoint card's aggregator.

    A video's dense clips are also scored one by one, and with its scout frames
    they make the segments judged manipulated, which raise its score
    (``models.segments``): scout frames alone never make a video fake.

    The checkpoint is the worker process's shared copy (``acquire_checkpoint``),
    the one the frame-model handler uses: nothing is loaded or built here. Videos
    are aggregated as the card says (``bilstm``, ``mean`` or ``sbi``, see
    ``models.aggregation``), still images by their frame scores (``frame``).
    """

    def __init__(self, checkpoint: Optional[str], strategy: str, run: RunInfo, aggregator: Optional[str] = None):
        self._spec = checkpoint
        self._strategy = strategy
        self._run = run
        self._checkpoint = None  # held while the DoFn lives, so the shared copy stays loaded
        self._sequence: Optional[SequencePredictor] = None
        self._aggregator = aggregator or ""  # the card's, when the driver read it

    def setup(self) -> None:
        # Only the BiLSTM needs the checkpoint here. With model_copies set, the frame model
        # lives in another process (Beam's multi-process sharing), so acquiring here would
        # load a whole copy just to read a name the driver already passed on.
        if self._aggregator and self._aggregator != BILSTM:
            return
        self._checkpoint = acquire_checkpoint(self._spec)
        self._aggregator = self._checkpoint.card.aggregator
        if self._aggregator == BILSTM:
            # The BiLSTM is tiny: CPU avoids a device round trip per input.
            self._sequence = SequencePredictor(self._checkpoint, resolve_device("cpu"))

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
        tracks = [
            TrackFaces(np.asarray(p, np.float64), track.boxes, track.frame_indices)
            for p, track in zip(frame_probs, item.tracks)
        ]
        aggregator = FRAME if item.info.media_type == "image" else self._aggregator
        sequence_scores = None
        if aggregator == BILSTM:
            embeddings = [np.stack([s.embedding for s in scores]) for scores in scored.scores]
            sequence_scores = self._sequence(embeddings)
        result = aggregate(aggregator, tracks, self._strategy, sequence_scores)
        score, by_clip, segments = result.score, None, []
        if item.info.media_type == "video":
            by_clip = clip_scores(aggregator, tracks, [t.clip_index for t in item.tracks], self._strategy,
                                  sequence_scores)
            segments = find_segments(
                [f.timestamp for f in item.scouts], [f.score for f in item.scouts],
                [(c.start_s, c.end_s, by_clip.get(k)) for k, c in enumerate(item.clips)],
                self._run.threshold_for("video"), item.info.duration_s or 0.0,
            )
            score = video_score(result.score, segments)
        return verdict_row(
            item,
            self._run,
            track_scores=frame_probs,
            track_probabilities=result.track_scores,
            score=score,
            aggregator=result.aggregator,
            device=scored.scores[0][0].device,
            clip_scores=by_clip,
            segments=segments,
        )


class AggregateVerdicts(beam.PTransform):
    """``PCollection[ScoredMedia]`` -> ``PCollection[dict]`` rows of ``VERDICT_SCHEMA``."""

    def __init__(self, checkpoint: Optional[str], strategy: str, run: RunInfo, aggregator: Optional[str] = None):
        super().__init__()
        self._fn = AggregateVerdictsFn(checkpoint, strategy, run, aggregator)

    def expand(self, scored):
        return scored | "JudgeInputs" >> beam.ParDo(self._fn)
