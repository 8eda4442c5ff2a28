"""The naive pipeline of the published write-ups, on the same archive, for comparison.

Per video: OpenCV seeks to each sampled frame (``CAP_PROP_POS_FRAMES``) and
reads it; MTCNN runs on the full-resolution frame, one frame at a time; each
face is aligned and scored by the frame model one crop at a time (eager
PyTorch, as the write-ups run it); tracks are linked and the BiLSTM judges
them. The frames sampled are the scan job's (same clip plan), and the face
model, the crops (cut as the checkpoint's card says) and thresholds are the
same, so the faces found can be compared box by box.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.crops import ALIGNED, cut_aligned_crop, cut_box_crop
from models.faces import MTCNN_MIN_FACE, FaceDetector
from models.inference import FramePredictor, SequencePredictor
from models.tracking import link_tracks
from pipeline.config import ScanConfig
from transforms.media import sample_clips

logger = logging.getLogger(__name__)


@dataclass
class BaselineResult:
    uri: str
    score: float | None
    frames: int
    boxes: dict[int, np.ndarray]  # frame index -> (k, 4) boxes found on that frame
    seconds: dict[str, float] = field(default_factory=dict)  # per stage

    def to_dict(self) -> dict:
        return {"uri": self.uri, "score": self.score, "frames": self.frames, "seconds": self.seconds,
                "boxes": {str(k): v.tolist() for k, v in self.boxes.items()}}

    @staticmethod
    def from_dict(d: dict) -> "BaselineResult":
        boxes = {int(k): np.asarray(v, np.float32).reshape(-1, 4) for k, v in d["boxes"].items()}
        return BaselineResult(d["uri"], d["score"], d["frames"], boxes, d["seconds"])


def clip_plan(uri: str, config: ScanConfig) -> list[list[int]]:
    """The frames the scan job samples from ``uri`` (same sampler, same keyframe snapping)."""
    import decord  # only for the keyframe index: OpenCV does not expose it

    reader = decord.VideoReader(uri, num_threads=1)
    keys = [int(k) for k in reader.get_key_indices()] if config.sampling.snap_to_keyframes else None
    s = config.sampling
    return sample_clips(len(reader), float(reader.get_avg_fps()), policy=s.policy, clip_len=s.clip_len,
                        clip_every_s=s.clip_every_s, max_clips=s.max_clips, keyframes=keys)


class NaivePipeline:
    """OpenCV seek per frame, full-resolution MTCNN per frame, the model per crop."""

    def __init__(self, config: ScanConfig, checkpoint: str):
        faces = config.faces
        # detect_size larger than any frame: MTCNN sees the full-resolution frame.
        self.detector = FaceDetector(detect_size=100_000, min_face_size=faces.min_face_size,
                                     min_confidence=faces.min_confidence, thresholds=faces.mtcnn_thresholds)
        loaded = load_checkpoint(checkpoint, map_location="cpu")
        self.frame_model = FramePredictor(loaded, torch.device("cpu"), optimize=False, precision="fp32")
        self.sequence_model = SequencePredictor(loaded, torch.device("cpu")) if loaded.sequence_model else None
        self.crop = loaded.card.crop
        self.config = config

    def _cut(self, frame: np.ndarray, faces, d: int) -> np.ndarray:
        if self.crop.policy == ALIGNED:
            return cut_aligned_crop(frame, faces.landmarks[d], self.crop)
        return cut_box_crop(frame, faces.boxes[d], self.crop)

    def _smallest_face(self, capture) -> int:
        """The smallest face the scan job can find in this video, in source pixels.

        The scan's MTCNN sees a copy downscaled by the decoder and for detection, where
        nothing under its 12-px window is found; the baseline looks for no smaller face
        on the full frame, so both do the same search and find the same faces.
        """
        side = max(capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) or 1.0
        scale = min(1.0, self.config.decode.max_side / side, self.config.faces.detect_size / side)
        return max(self.config.faces.min_face_size, math.ceil(MTCNN_MIN_FACE / scale))

    def scan(self, uri: str) -> BaselineResult:
        seconds = dict.fromkeys(("plan", "decode", "detect", "align", "score", "aggregate"), 0.0)
        tick = time.perf_counter()
        clips = clip_plan(uri, self.config)
        seconds["plan"] += time.perf_counter() - tick
        capture = cv2.VideoCapture(uri)
        self.detector.min_face_size = self._smallest_face(capture)
        boxes: dict[int, np.ndarray] = {}
        track_probs, frames = [], 0
        try:
            for clip in clips:
                detections, crops_by_pos = [], {}
                for pos, index in enumerate(clip):
                    tick = time.perf_counter()
                    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                    ok, bgr = capture.read()
                    seconds["decode"] += time.perf_counter() - tick
                    if not ok:
                        continue
                    frames += 1
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    tick = time.perf_counter()
                    found = self.detector.detect(rgb[None])[0]
                    seconds["detect"] += time.perf_counter() - tick
                    detections.append(found)
                    boxes[index] = found.boxes
                    for d in range(len(found)):
                        tick = time.perf_counter()
                        crop = self._cut(rgb, found, d)
                        seconds["align"] += time.perf_counter() - tick
                        tick = time.perf_counter()
                        crops_by_pos[(len(detections) - 1, d)] = self.frame_model(crop[None])
                        seconds["score"] += time.perf_counter() - tick
                tick = time.perf_counter()
                tracks = link_tracks(detections, iou_threshold=self.config.faces.track_iou,
                                     max_gap=self.config.faces.track_max_gap,
                                     min_length=min(self.config.faces.min_track_frames, max(len(detections), 1)))
                for track in tracks:
                    outs = [crops_by_pos[(p, d)] for p, d in zip(track.frames, track.detections)]
                    if self.sequence_model is not None:
                        track_probs.append(float(self.sequence_model([np.concatenate([e for _, e in outs])])[0]))
                    else:
                        track_probs.append(float(np.mean([p[0] for p, _ in outs])))
                seconds["aggregate"] += time.perf_counter() - tick
        finally:
            capture.release()
        return BaselineResult(uri, max(track_probs) if track_probs else None, frames, boxes, seconds)
