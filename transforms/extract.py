"""Decode, detect, align and track: one input in, one ``ExtractedMedia`` out.

The scan job and the training job's face extraction share this transform.
Decoding, detection and alignment run inside one DoFn so that full frames
never leave it; only aligned face crops do.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from models.align import align_face
from models.device import resolve_device
from models.faces import FaceDetector
from models.tracking import link_tracks
from pipeline.config import FacesConfig, SamplingConfig
from transforms import media
from transforms.elements import (
    ERROR,
    NO_FACE,
    OK,
    UNREADABLE,
    UNSUPPORTED,
    ExtractedMedia,
    FaceTrackCrops,
    MediaInfo,
    MediaInput,
)

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "deepfake_scan"


class FaceExtractor:
    """Turns one media file into face tracks with aligned crops (no Beam here)."""

    def __init__(self, sampling: SamplingConfig, faces: FacesConfig, detector: FaceDetector):
        self.sampling = sampling
        self.faces = faces
        self.detector = detector

    def extract(self, item: MediaInput) -> ExtractedMedia:
        """Never raises for a bad input: failures become a status and an error text."""
        info = MediaInfo(uri=item.uri, media_type=item.media_type)
        try:
            with media.staged(item.uri) as path:
                size, sha = media.fingerprint(path)
                info = dataclasses.replace(info, file_size=size, content_sha256=sha)
                if item.media_type is None:
                    ext = os.path.splitext(item.uri)[1] or "(none)"
                    return ExtractedMedia(info, UNSUPPORTED, f"unsupported file type '{ext}'")
                if size == 0:
                    return ExtractedMedia(info, UNREADABLE, "empty file (0 bytes)")
                if item.media_type == "image":
                    return self._extract_image(path, info)
                return self._extract_video(path, info)
        except media.MediaError as e:
            return ExtractedMedia(info, e.status, str(e))
        except FileNotFoundError as e:
            return ExtractedMedia(info, UNREADABLE, f"file not found: {media.first_line(e)}")
        except Exception as e:  # never let one input take the job down
            logger.exception("unexpected failure on %r", item.uri)
            return ExtractedMedia(info, ERROR, f"{type(e).__name__}: {media.first_line(e)}")

    def _extract_image(self, path: str, info: MediaInfo) -> ExtractedMedia:
        frame = media.load_image(path)
        info = dataclasses.replace(
            info, width=frame.shape[1], height=frame.shape[0], num_frames=1, codec=_image_codec(path), decoder="pillow"
        )
        tracks = self._tracks_for_clip(frame[None], [0], np.zeros(1), clip_index=0, first_id=0)
        return self._finish(info, frames_sampled=1, tracks=tracks)

    def _extract_video(self, path: str, info: MediaInfo) -> ExtractedMedia:
        probe = media.probe_video(path)
        info = dataclasses.replace(
            info,
            duration_s=probe.duration_s,
            fps=probe.fps,
            width=probe.width,
            height=probe.height,
            codec=probe.codec,
            num_frames=probe.num_frames,
            decoder="decord",
        )
        clips = media.sample_clips(
            probe.num_frames,
            probe.fps,
            policy=self.sampling.policy,
            clip_len=self.sampling.clip_len,
            clip_every_s=self.sampling.clip_every_s,
            max_clips=self.sampling.max_clips,
        )
        tracks: list[FaceTrackCrops] = []
        sampled = 0
        for clip_index, (indices, (frames, stamps)) in enumerate(
            zip(clips, media.decode_video_clips(path, clips))
        ):
            sampled += len(indices)
            tracks += self._tracks_for_clip(frames, indices, stamps, clip_index, first_id=len(tracks))
        return self._finish(info, frames_sampled=sampled, tracks=tracks)

    def _tracks_for_clip(
        self, frames: np.ndarray, indices: list[int], stamps: np.ndarray, clip_index: int, first_id: int
    ) -> list[FaceTrackCrops]:
        detections = self.detector.detect(frames)
        linked = link_tracks(
            detections,
            iou_threshold=self.faces.track_iou,
            max_gap=self.faces.track_max_gap,
            min_length=min(self.faces.min_track_frames, len(frames)),
        )
        # Keep the longest tracks, in the tracker's order (first appearance, left to right).
        longest = {id(t) for t in sorted(linked, key=len, reverse=True)[: self.faces.max_tracks_per_clip]}
        linked = [t for t in linked if id(t) in longest]
        tracks = []
        for offset, track in enumerate(linked):
            chosen = [detections[pos] for pos in track.frames]
            crops = np.stack(
                [
                    align_face(frames[pos], faces.landmarks[d], self.faces.crop_size, self.faces.margin)[0]
                    for pos, faces, d in zip(track.frames, chosen, track.detections)
                ]
            )
            tracks.append(
                FaceTrackCrops(
                    track_id=first_id + offset,
                    clip_index=clip_index,
                    frame_indices=tuple(int(indices[pos]) for pos in track.frames),
                    timestamps=tuple(float(stamps[pos]) for pos in track.frames),
                    boxes=np.stack([f.boxes[d] for f, d in zip(chosen, track.detections)]).astype(np.float32),
                    detection_scores=np.array([f.scores[d] for f, d in zip(chosen, track.detections)], np.float32),
                    crops=crops,
                )
            )
        return tracks

    @staticmethod
    def _finish(info: MediaInfo, frames_sampled: int, tracks: list[FaceTrackCrops]) -> ExtractedMedia:
        faces_found = sum(len(t) for t in tracks)
        if not tracks:
            return ExtractedMedia(info, NO_FACE, "no face found in the sampled frames", frames_sampled, 0, ())
        return ExtractedMedia(info, OK, None, frames_sampled, faces_found, tuple(tracks))


def _image_codec(path: str) -> Optional[str]:
    try:
        from PIL import Image

        with Image.open(path) as img:
            return (img.format or "").lower() or None
    except Exception:
        return None


class ExtractFacesFn(beam.DoFn):
    """Beam wrapper around ``FaceExtractor``; the MTCNN is built once per DoFn instance."""

    def __init__(self, sampling: SamplingConfig, faces: FacesConfig, device: str = "cpu"):
        self._sampling = sampling
        self._faces = faces
        self._device = device
        self._extractor: Optional[FaceExtractor] = None
        self._counters = {}

    def setup(self) -> None:
        detector = FaceDetector(
            detect_size=self._faces.detect_size,
            min_face_size=self._faces.min_face_size,
            min_confidence=self._faces.min_confidence,
            thresholds=self._faces.mtcnn_thresholds,
            device=resolve_device(self._device),
        )
        self._extractor = FaceExtractor(self._sampling, self._faces, detector)

    def process(self, item: MediaInput) -> Iterable[ExtractedMedia]:
        result = self._extractor.extract(item)
        if result.status != OK:
            logger.info("%s: %s (%s)", result.status, item.uri, result.error)
        Metrics.counter(METRICS_NAMESPACE, f"extract_{result.status}").inc()
        Metrics.counter(METRICS_NAMESPACE, "faces_extracted").inc(result.faces_found)
        yield result


class ExtractFaces(beam.PTransform):
    """``PCollection[MediaInput]`` -> ``PCollection[ExtractedMedia]``, one per input."""

    def __init__(self, sampling: SamplingConfig, faces: FacesConfig, device: str = "cpu"):
        super().__init__()
        self._fn = ExtractFacesFn(sampling, faces, device)

    def expand(self, inputs):
        return inputs | "DecodeDetectAlign" >> beam.ParDo(self._fn)
