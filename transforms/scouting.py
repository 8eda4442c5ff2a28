"""The scouting pass: single frames across a whole video, detected, cut and scored (no Beam here).

``models.scouting`` says which frames; this module looks at them. The frames
are held in the decoder process in batches of at most a clip's length (a
batch is decoded forward from its first frame's keyframe, one batch ahead of
detection), so memory does not grow with the video's length and full frames
never leave the decoder. Each batch's faces are found on downscaled copies,
cut as the checkpoint's card says, and scored at once by the frame model
(``ScoutScorer``: the worker process's shared copy of the checkpoint, the one
the RunInference handler uses).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, ContextManager, Optional, Sequence

import numpy as np

from models.faces import FaceDetector
from models.scouting import ScoutFrame
from models.segments import clock

logger = logging.getLogger(__name__)

# crops (N, S, S, 3) uint8 -> fake probabilities (N,)
Scorer = Callable[[np.ndarray], np.ndarray]


_LOCK = threading.Lock()
_SCORERS: dict[tuple, object] = {}  # per process: one Beam ``Shared`` handle per scorer setting


def acquire_scout_scorer(checkpoint: str, *, device: str = "auto", precision: str = "auto", optimize: bool = True,
                         batch_size: int = 8) -> "ScoutScorer":
    """The worker process's one ``ScoutScorer`` for these settings, built on first use.

    Every extraction DoFn instance of the process (one per worker thread) shares it,
    as the RunInference handler's threads share its model: the model is traced once.
    Keep a reference while scoring, so that a later caller gets the same one.
    """
    from apache_beam.utils import shared

    key = (checkpoint, device, precision, optimize, batch_size)
    with _LOCK:
        handle = _SCORERS.setdefault(key, shared.Shared())

    def build() -> ScoutScorer:
        return ScoutScorer(checkpoint, device=device, precision=precision, optimize=optimize,
                           batch_size=batch_size)

    return handle.acquire(build, tag=f"scout-scorer:{key}")


class ScoutScorer:
    """Fake probabilities of face crops from the worker process's shared checkpoint copy.

    Built through ``acquire_scout_scorer`` in a DoFn's ``setup``: ``acquire_checkpoint``
    hands out the copy the frame model handler and the aggregator use (the file is
    staged and opened once per process), and ``FramePredictor`` is the handler's own
    predictor code. Crops are scored ``batch_size`` at a time; the scorer may be
    called from several threads at once.
    """

    def __init__(self, checkpoint: str, *, device: str = "auto", precision: str = "auto", optimize: bool = True,
                 batch_size: int = 8):
        from models.device import resolve_device
        from models.inference import FramePredictor
        from transforms.checkpoints import acquire_checkpoint

        self.checkpoint = acquire_checkpoint(checkpoint)  # held: keeps the shared copy alive
        card = self.checkpoint.card
        # model.precision=auto defers to a card that names the precision its weights score in (as the scan does).
        if precision == "auto" and card.precision:
            precision = card.precision
        self.predictor = FramePredictor(self.checkpoint, resolve_device(device), optimize=optimize,
                                        precision=precision)
        self.crop = card.crop
        self.batch_size = max(int(batch_size), 1)
        logger.info("scout frames scored by %s on %s", card.name, self.predictor.device_name)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = [self.predictor(crops[i : i + self.batch_size])[0] for i in range(0, len(crops), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)


class ScoutPass:
    """Looks at scout frames in held batches: detection, crops and frame-model scores per frame.

    Args:
        sandbox: The input's ``DecoderSandbox`` (opened).
        detector: MTCNN.
        cut: ``(positions, [(FrameFaces, face number)]) -> crops`` of the held batch, as the card says.
        score: ``crops -> fake probabilities``.
        min_judge_size: Faces whose longer box side (source pixels) is smaller are reported, not scored.
        timed: ``stage -> context manager`` adding the time spent to that stage's timer.
    """

    def __init__(self, sandbox, detector: FaceDetector, cut: Callable[[list, list], np.ndarray], score: Scorer,
                 min_judge_size: float, timed: Callable[[str], ContextManager]):
        self.sandbox = sandbox
        self.detector = detector
        self.cut = cut
        self.score = score
        self.min_judge_size = min_judge_size
        self.timed = timed

    def run(self, batches: Sequence[Sequence[int]], scale: float,
            stop_at: Optional[float] = None) -> tuple[list[ScoutFrame], list[str]]:
        """The scout frames of ``batches`` (frame indices, each batch in increasing order), and decoder notes.

        ``scale``: source pixels per decoded pixel. ``stop_at`` (``time.monotonic``):
        no batch is started after it, and a note says how far scouting went (the
        decoder's time budget would not last for the whole video).
        """
        frames: list[ScoutFrame] = []
        notes: list[str] = []
        self.sandbox.plan(batches)  # the next batch decodes while this one's faces are found and scored
        for number, batch in enumerate(batches):
            if stop_at is not None and number and time.monotonic() > stop_at:
                notes.append(f"scouting stopped after {clock(frames[-1].timestamp)} ({len(frames)} of "
                             f"{sum(map(len, batches))} scout frames): decode.timeout_s would have run out; "
                             "raise it to scout long videos whole")
                break
            with self.timed("decode"):
                held = self.sandbox.hold(batch)
            notes += held["notes"]
            frames += self._look(held, scale)
        return frames, notes

    def _look(self, held: dict, scale: float) -> list[ScoutFrame]:
        indices, stamps = held["indices"], held["timestamps"]
        height, width = held["shape"][1:3]
        with self.timed("detect"):
            small = self.sandbox.downscaled(range(len(indices)), *self.detector.detection_size(height, width))
            found = self.detector.detect_downscaled(small, (height, width), 1.0 / scale)
        judged = [(pos, d) for pos, faces in enumerate(found) for d in range(len(faces))
                  if _side(faces.boxes[d]) * scale >= self.min_judge_size]
        probabilities = [np.full(len(faces), np.nan, np.float32) for faces in found]
        if judged:
            with self.timed("align"):
                crops = self.cut([pos for pos, _ in judged], [(found[pos], d) for pos, d in judged])
            with self.timed("scout_score"):
                scores = self.score(crops)
            for (pos, d), p in zip(judged, scores):
                probabilities[pos][d] = p
        return [
            ScoutFrame(int(index), float(stamp), (faces.boxes * scale).astype(np.float32),
                       np.asarray(faces.scores, np.float32), probs)
            for index, stamp, faces, probs in zip(indices, stamps, found, probabilities)
        ]


def _side(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


__all__ = ["Scorer", "ScoutPass", "ScoutScorer", "acquire_scout_scorer"]
