"""Decode, detect, track and crop as a Beam stage: one input in, one ``ExtractedMedia`` out.

The scan job and the training job's face extraction share this transform.
Decoding, detection and cropping run inside one DoFn (``FaceExtractor``) so that
full frames never leave it; only face crops do. Given the scan's checkpoint,
the DoFn also scores the scout frames of the ``scout`` sampling policy with the
process's shared copy of it (``transforms.scouting.ScoutScorer``); without one
(the training job's extraction) ``scout`` samples as ``clips`` does.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from models.crops import CropSpec
from models.device import resolve_device, set_torch_threads, threads_beside_decoder
from models.faces import FaceDetector
from transforms.elements import METRICS_NAMESPACE, OK, ExtractedMedia, MediaInput
from transforms.face_extractor import FaceExtractor
from transforms.scouting import acquire_scout_scorer
from transforms.settings import SCOUT, DecodeConfig, FacesConfig, SamplingConfig

logger = logging.getLogger(__name__)


class ExtractFacesFn(beam.DoFn):
    """Beam wrapper around ``FaceExtractor``: the MTCNN and the decoder process are per DoFn instance.

    ``crop`` says how crops are cut (the checkpoint's card, read on the driver).
    ``device`` and ``torch_threads`` are the worker's (``model.device``, ``model.torch_threads``).
    ``checkpoint`` (with ``precision``, ``optimize``, ``batch_size`` as ``model.*`` says)
    scores scout frames; it is the scan's, shared with the frame model handler.
    """

    def __init__(self, decode: DecodeConfig, sampling: SamplingConfig, faces: FacesConfig, crop: CropSpec,
                 *, device: str = "auto", torch_threads: int = 0, checkpoint: Optional[str] = None,
                 precision: str = "auto", optimize: bool = True, batch_size: int = 8):
        self._decode = decode
        self._sampling = sampling
        self._faces = faces
        self._crop = crop
        self._device = device
        self._torch_threads = torch_threads
        self._checkpoint = checkpoint
        self._scoring = dict(precision=precision, optimize=optimize, batch_size=batch_size)
        self._extractor: Optional[FaceExtractor] = None

    def setup(self) -> None:
        set_torch_threads(self._torch_threads)
        faces = self._faces
        detector = FaceDetector(
            detect_size=faces.detect_size,
            min_face_size=faces.min_face_size,
            min_confidence=faces.min_confidence,
            thresholds=faces.mtcnn_thresholds,
            device=resolve_device(self._device),
            threads=threads_beside_decoder(faces.detect_threads, self._torch_threads),
        )
        scorer = None
        if self._sampling.policy == SCOUT and self._checkpoint is None:
            logger.info("sampling.policy=scout needs the frame model to score scout frames; without a "
                        "checkpoint (extracting training crops) videos are sampled as sampling.policy=clips")
        elif self._sampling.policy == SCOUT:
            scorer = acquire_scout_scorer(self._checkpoint, device=self._device, **self._scoring)
            if scorer.crop != self._crop:  # never score crops the model was not trained on
                raise ValueError(f"checkpoint {self._checkpoint} scores {scorer.crop.describe()} crops, "
                                 f"but {self._crop.describe()} crops are cut")
        self._extractor = FaceExtractor(self._sampling, faces, detector, self._crop, self._decode, scorer=scorer)
        # Under decode.containment=strict a worker that cannot contain its decoders fails here, before any input.
        logger.info("decoder containment on this worker: %s", self._extractor.sandbox.containment_layers())

    def process(self, item: MediaInput) -> Iterable[ExtractedMedia]:
        start = time.perf_counter()
        set_torch_threads(self._torch_threads)  # this worker thread's share (see setup)
        result = self._extractor.extract(item)
        # Stage timers (milliseconds) for the benchmark and the Dataflow console.
        for stage, seconds in self._extractor.take_stage_seconds().items():
            Metrics.distribution(METRICS_NAMESPACE, f"{stage}_ms").update(int(seconds * 1000))
        Metrics.distribution(METRICS_NAMESPACE, "extract_ms").update(int((time.perf_counter() - start) * 1000))
        Metrics.counter(METRICS_NAMESPACE, "frames_sampled").inc(result.frames_sampled)
        Metrics.counter(METRICS_NAMESPACE, "scout_frames").inc(len(result.scouts))
        if result.status != OK:
            logger.info("%s: %r (%s)", result.status, item.uri, result.error)
        Metrics.counter(METRICS_NAMESPACE, f"extract_{result.status}").inc()
        Metrics.counter(METRICS_NAMESPACE, "faces_extracted").inc(result.faces_found)
        yield result

    def teardown(self) -> None:
        if self._extractor is not None:
            self._extractor.sandbox.shutdown()


class ExtractFaces(beam.PTransform):
    """``PCollection[MediaInput]`` -> ``PCollection[ExtractedMedia]``, one per input.

    ``decode``, ``sampling``, ``faces``: the stage's settings (``transforms.settings``).
    ``crop``: how face crops are cut (``ModelCard.crop`` of the checkpoint that
    will score them, or the training config's spec when extracting).
    ``device``, ``torch_threads``: where MTCNN runs and with how many intra-op threads.
    ``checkpoint``: the scan's checkpoint, to score the ``scout`` policy's scout frames
    (on ``device``, in ``precision``, ``batch_size`` crops a call, traced when
    ``optimize``: as ``model.*`` says). ``None`` (extracting training crops):
    ``scout`` samples as ``clips`` does.
    """

    def __init__(self, decode: DecodeConfig, sampling: SamplingConfig, faces: FacesConfig, crop: CropSpec, *,
                 device: str = "auto", torch_threads: int = 0, checkpoint: Optional[str] = None,
                 precision: str = "auto", optimize: bool = True, batch_size: int = 8):
        super().__init__()
        if not isinstance(crop, CropSpec):
            raise TypeError(f"crop must be a CropSpec, got {type(crop).__name__}")
        self._fn = ExtractFacesFn(decode, sampling, faces, crop, device=device, torch_threads=torch_threads,
                                  checkpoint=checkpoint, precision=precision, optimize=optimize,
                                  batch_size=batch_size)

    def expand(self, inputs):
        return inputs | "DecodeDetectAlign" >> beam.ParDo(self._fn)
