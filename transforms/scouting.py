"""The scouting pass: single frames across a whole video, detected, cut and scored (no Beam here).

``models.scouting`` says which frames; this module looks at them. The frames
are held in the decoder process in batches of at most a clip's length (a
batch is decoded forward from its first frame's keyframe, one batch ahead of
detection), so memory does not grow with the video's length and full frames
never leave the decoder. Each batch's faces are found on downscaled copies,
cut as the checkpoint's card says, and scored at once by the frame model
(``ScoutScorer``: the worker process's shared frame predictor, the one the
RunInference handler uses).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, ContextManager, Optional, Sequence

import numpy as np

from models.faces import FaceDetector
from models.scouting import ScoutFrame
from models.segments import clock

logger = logging.getLogger(__name__)

# crops (N, S, S, 3) uint8 -> fake probabilities (N,)
Scorer = Callable[[np.ndarray], np.ndarray]


def acquire_scout_scorer(checkpoint: str, *, device: str = "auto", precision: str = "auto", optimize: bool = True,
                         batch_size: int = 8) -> "ScoutScorer":
    """A ``ScoutScorer`` around the worker process's one frame predictor for these settings.

    The predictor is ``transforms.checkpoints.acquire_frame_predictor``'s, built once
    per process under Beam's ``Shared``: the very object the RunInference handler's
    ``load_model`` returns, so the frame model is readied (traced, on the CPU) once,
    not once for the handler and again for scouting. The scorer itself is a thin,
    cheap wrapper; keep it while scoring, so the shared predictor stays alive.
    """
    return ScoutScorer(checkpoint, device=device, precision=precision, optimize=optimize, batch_size=batch_size)


class ScoutScorer:
    """Fake probabilities of face crops from the worker process's shared frame predictor.

    Built through ``acquire_scout_scorer`` in a DoFn's ``setup``: ``acquire_frame_predictor``
    hands out the predictor the frame model handler uses, made from the checkpoint
    copy the aggregator uses (the file is staged and opened, and the model traced,
    once per process). Crops are scored ``batch_size`` at a time; the scorer may be
    called from several threads at once (see ``transforms.checkpoints.ScanPredictor``).
    """

    def __init__(self, checkpoint: str, *, device: str = "auto", precision: str = "auto", optimize: bool = True,
                 batch_size: int = 8):
        from transforms.checkpoints import acquire_frame_predictor

        # model.precision=auto defers to the card there, as the scan's handler does: both get one predictor.
        self.shared = acquire_frame_predictor(checkpoint, device=device, precision=precision, optimize=optimize)
        self.predictor = self.shared.predictor
        self.checkpoint = self.shared.checkpoint
        self.crop = self.checkpoint.card.crop
        self.batch_size = max(int(batch_size), 1)
        logger.info("scout frames scored by %s on %s", self.checkpoint.card.name, self.shared.device_name)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        out = [self.shared(crops[i : i + self.batch_size])[0] for i in range(0, len(crops), self.batch_size)]
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
