"""Decode, detect, track and crop one input: ``MediaInput`` -> ``ExtractedMedia`` (no Beam here).

The scan, the training job's extraction and the report's thumbnails share this
class; ``transforms/extract.py`` wraps it in a DoFn. Crops are cut as a
``CropSpec`` says (the checkpoint's card when scanning, the training config when
extracting): aligned to the five-point template, or the detector box grown by margins.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from typing import Optional

import numpy as np

from models.align import align_face, alignment_matrix
from models.crops import ALIGNED, CropSpec, cut_box_crop
from models.faces import FaceDetector, FrameFaces
from models.keyframes import fill_between, keyframe_positions, undecided_positions
from models.scouting import (
    EVEN,
    UNIFORM,
    ClipSpan,
    PlannedClip,
    ScoutFrame,
    batches,
    dense_clip_count,
    place_clips,
    scout_positions,
)
from models.tracking import box_iou, link_tracks
from transforms.settings import CLIPS, SCOUT, DecodeConfig, FacesConfig, SamplingConfig
from transforms import media
from transforms.sandbox import DecoderSandbox
from transforms.scouting import Scorer, ScoutPass
from transforms.elements import (
    ERROR,
    NO_FACE,
    OK,
    SMALL_FACE,
    TIMEOUT,
    TOO_LARGE,
    UNREADABLE,
    UNSUPPORTED,
    ExtractedMedia,
    FaceTrackCrops,
    MediaInfo,
    MediaInput,
)

logger = logging.getLogger(__name__)

# Scouting stops where less than this share of the input's decoder time budget is left:
# the dense clips need it (4 clips of 25 frames take a few seconds).
_CLIPS_SHARE_OF_BUDGET = 0.15


class FaceExtractor:
    """Turns one media file into face tracks with their crops (no Beam here).

    Decoding goes through ``sandbox`` (a child process, see ``transforms.sandbox``),
    which keeps each decoded clip: detection runs here on the downscaled copies it
    sends of a few frames (``models.keyframes``), and it cuts the crops ``crop``
    describes at the landmarks or boxes found here. Full frames never leave the
    decoder process. Tracks whose face is smaller than ``faces.min_judge_size``
    source pixels are reported (``ExtractedMedia.small_tracks``) but not cropped.

    With the ``scout`` sampling policy and a ``scorer`` (the frame model's fake
    probability of crops cut as ``crop`` says), a video is first scouted across
    its whole length (``transforms.scouting``) and its dense clips go where the
    scout frames scored highest (``models.scouting``). Without a scorer (the
    training job's extraction) ``scout`` samples as ``clips`` does.
    """

    def __init__(
        self,
        sampling: SamplingConfig,
        faces: FacesConfig,
        detector: FaceDetector,
        crop: CropSpec,
        decode: Optional[DecodeConfig] = None,
        sandbox: Optional[DecoderSandbox] = None,
        scorer: Optional[Scorer] = None,
    ):
        if not isinstance(crop, CropSpec):
            raise TypeError(f"crop must be a CropSpec, got {type(crop).__name__}")
        self.sampling = sampling
        self.faces = faces
        self.detector = detector
        self.crop = crop
        self.decode = decode or DecodeConfig()
        self.sandbox = sandbox or DecoderSandbox(
            self.decode.timeout_s, self.decode.memory_mb, isolate=self.decode.isolate,
            containment=self.decode.containment, timeout_s_per_minute=self.decode.timeout_s_per_minute,
        )
        self.scorer = scorer
        self.stage_seconds: dict[str, float] = {}

    def extract(self, item: MediaInput) -> ExtractedMedia:
        """Never raises for a bad input: failures become a status and an error text.

        The input's source version (``media.source_version``, a metadata pre-key
        of its bytes) is recorded in the verdict so a later ``--skip-scanned``
        scan can recognise the file unchanged without reading it. It is taken
        before the bytes are read, so bytes that change meanwhile are hashed again.
        """
        info = MediaInfo(uri=item.uri, media_type=item.media_type)
        try:
            version = item.source_version or media.source_version(item.uri)
            info = dataclasses.replace(info, source_version=version)
            with media.staged(item.uri, max_bytes=int(self.decode.max_file_mb * 2**20)) as path:
                size, sha = media.fingerprint(path)
                info = dataclasses.replace(info, file_size=size, content_sha256=sha)
                if item.media_type is None:
                    ext = os.path.splitext(item.uri)[1] or "(none)"
                    return ExtractedMedia(info, UNSUPPORTED, f"unsupported file type '{ext}'")
                if size == 0:
                    return ExtractedMedia(info, UNREADABLE, "empty file (0 bytes)")
                decoders = ["pillow"] if item.media_type == "image" else self.decode.decoders
                return self._extract_with(decoders, path, info)
        except media.MediaError as e:
            return ExtractedMedia(info, e.status, str(e))
        except FileNotFoundError as e:
            return ExtractedMedia(info, UNREADABLE, f"file not found: {media.first_line(e)}")
        except OSError as e:  # symlink loops, permissions, I/O errors
            return ExtractedMedia(info, UNREADABLE, f"cannot read the file: {media.first_line(e)}")
        except Exception as e:  # never let one input take the job down
            logger.exception("unexpected failure on %r", item.uri)
            return ExtractedMedia(info, ERROR, f"{type(e).__name__}: {media.first_line(e)}")

    def _extract_with(self, decoders: list[str], path: str, info: MediaInfo) -> ExtractedMedia:
        """Try each decoder in turn; the first that decodes the file decides the verdict."""
        failures: list[str] = []
        statuses: list[str] = []
        for name in decoders:
            try:
                result = self._decode_and_detect(name, path, info)
            except media.MediaError as e:
                failures.append(f"{name}: {e}")
                statuses.append(e.status)
                if e.status == TOO_LARGE:
                    break  # a limit holds whatever the decoder
                continue
            finally:
                self.sandbox.close_input()
            if failures:
                warnings = tuple(f"{f}; decoded with {name} instead" for f in failures)
                result = dataclasses.replace(
                    result, info=dataclasses.replace(result.info, warnings=warnings + result.info.warnings)
                )
            return result
        status = TIMEOUT if TIMEOUT in statuses else statuses[-1]
        return ExtractedMedia(info, status, "; ".join(failures))

    def _decode_and_detect(self, decoder: str, path: str, info: MediaInfo) -> ExtractedMedia:
        probe = self.sandbox.open(decoder, path, self.decode.max_side, self.decode.max_pixels, self.decode.threads)
        # The sandbox's budget for this input (it grows with the duration): scouting leaves the dense clips their share.
        now = time.monotonic()
        stop_scouting = now + (self.sandbox.input_deadline - now) * (1 - _CLIPS_SHARE_OF_BUDGET)
        info = dataclasses.replace(
            info,
            duration_s=probe.duration_s if info.media_type == "video" else None,
            fps=probe.fps if info.media_type == "video" else None,
            width=probe.width,
            height=probe.height,
            codec=probe.codec,
            num_frames=probe.num_frames,
            decoder=decoder,
            warnings=tuple(probe.notes),
        )
        if probe.duration_s > self.decode.max_duration_s:
            raise media.MediaError(
                TOO_LARGE,
                f"video of {probe.duration_s:.0f} s is over decode.max_duration_s={self.decode.max_duration_s:g}",
            )
        # Boxes are reported in the source's pixels even when the decoder downscaled.
        scale = probe.width / probe.decoded_width if probe.decoded_width else 1.0
        policy, scouts, notes = None, [], []
        if info.media_type == "image":
            planned = [PlannedClip((0,), EVEN)]
        else:
            # scout needs the frame model; without it (extracting training crops) it samples as clips
            policy = CLIPS if self.sampling.policy == SCOUT and self.scorer is None else self.sampling.policy
            if policy == SCOUT and probe.num_frames > self.sampling.clip_len:  # else one clip holds it all
                scouts, notes = self._scout(probe, scale, stop_scouting)
            planned = self._plan_clips(policy, probe, scouts)
        tracks: list[FaceTrackCrops] = []
        small: list[FaceTrackCrops] = []
        spans: list[ClipSpan] = []
        sampled, repeats = len(scouts), 0
        frame_s = 1.0 / probe.fps if probe.fps > 0 else 0.0
        # The next clip decodes while this one's faces are found.
        self.sandbox.plan([list(c.indices) for c in planned])
        for clip_index, clip in enumerate(planned):
            with self._timed("decode"):
                held = self.sandbox.hold(list(clip.indices))
            notes += held["notes"]
            sampled += len(held["indices"])
            repeats += held["repeats"]
            stamps = held["timestamps"]
            spans.append(ClipSpan(float(stamps[0]), float(stamps[-1]) + frame_s, clip.placed))
            judged, too_small = self._tracks_for_clip(held, clip_index, len(tracks) + len(small), scale)
            tracks += judged
            small += too_small
        if repeats:
            notes.append(f"{repeats} sampled frame(s) are exact repeats of the frame before (undecodable frames?)")
        info = dataclasses.replace(info, warnings=info.warnings + tuple(notes))
        result = self._finish(info, sampled, tracks, small, self.faces.min_judge_size)
        if info.media_type == "image":
            return result
        return dataclasses.replace(result, sampling=policy, scouts=tuple(scouts), clips=tuple(spans))

    def _scout(self, probe, scale: float, stop_at: float) -> tuple[list[ScoutFrame], list[str]]:
        """Scout frames across the whole video (until ``stop_at``), scored; and the decoder's notes."""
        s = self.sampling
        keys = probe.keyframes if s.snap_to_keyframes else None
        positions = scout_positions(probe.num_frames, probe.fps, s.scout_every_s, keys)
        scout = ScoutPass(self.sandbox, self.detector, self._cut, self.scorer, self.faces.min_judge_size, self._timed)
        return scout.run(batches(positions, s.clip_len), scale, stop_at)

    def _plan_clips(self, policy: str, probe, scouts: list[ScoutFrame]) -> list[PlannedClip]:
        """The dense clips: where the scouts point (``scout``), else as ``media.sample_clips`` spaces them."""
        s = self.sampling
        keys = probe.keyframes if s.snap_to_keyframes else None
        if policy == SCOUT:
            fps = probe.fps if probe.fps > 0 else 25.0
            count = dense_clip_count(probe.num_frames / fps, s.clip_every_s, s.max_clips)
            scored = [(f.frame_index, f.score) for f in scouts if f.score is not None]
            return place_clips(probe.num_frames, s.clip_len, count, scored, context=s.context_clips,
                               min_gap=int(round(s.clip_every_s * fps)), keyframes=keys)
        clips = media.sample_clips(probe.num_frames, probe.fps, policy=policy, clip_len=s.clip_len,
                                   clip_every_s=s.clip_every_s, max_clips=s.max_clips, keyframes=keys)
        placed = EVEN if policy == CLIPS else UNIFORM
        return [PlannedClip(tuple(c), placed) for c in clips]

    def _detect_clip(self, length: int, height: int, width: int, source_scale: float = 1.0) -> list[FrameFaces]:
        """Detect on keyframes of the held clip, then where they disagree; interpolate the rest."""
        size = self.detector.detection_size(height, width)
        min_iou = self.faces.interpolate_min_iou
        found: dict[int, FrameFaces] = {}
        todo = keyframe_positions(length, self.faces.detect_every)
        while todo:
            small = self.sandbox.downscaled(todo, *size)
            found.update(zip(todo, self.detector.detect_downscaled(small, (height, width), source_scale)))
            todo = undecided_positions(found, min_iou)
        return fill_between(found, length, min_iou)

    def _tracks_for_clip(
        self, held: dict, clip_index: int, first_id: int, scale: float = 1.0
    ) -> tuple[list[FaceTrackCrops], list[FaceTrackCrops]]:
        """The clip's tracks: ``(judged, with crops; too small to judge, without)``.

        ``scale``: source pixels per decoded pixel.
        """
        indices, stamps = held["indices"], held["timestamps"]
        height, width = held["shape"][1:3]
        with self._timed("detect"):
            detections = self._detect_clip(len(indices), height, width, 1.0 / scale)
        linked = link_tracks(
            detections,
            iou_threshold=self.faces.track_iou,
            max_gap=self.faces.track_max_gap,
            min_length=min(self.faces.min_track_frames, len(indices)),
        )
        # Keep the longest tracks, in the tracker's order (first appearance, left to right).
        longest = {id(t) for t in sorted(linked, key=len, reverse=True)[: self.faces.max_tracks_per_clip]}
        linked = [t for t in linked if id(t) in longest]
        tracks = []
        for offset, track in enumerate(linked):
            chosen = [detections[pos] for pos in track.frames]
            boxes = np.stack([f.boxes[d] for f, d in zip(chosen, track.detections)])
            tracks.append(
                FaceTrackCrops(
                    track_id=first_id + offset,
                    clip_index=clip_index,
                    frame_indices=tuple(int(indices[pos]) for pos in track.frames),
                    timestamps=tuple(float(stamps[pos]) for pos in track.frames),
                    boxes=(boxes * scale).astype(np.float32),  # source pixels
                    detection_scores=np.array([f.scores[d] for f, d in zip(chosen, track.detections)], np.float32),
                    crops=None,
                    interpolated=tuple(bool(f.interpolated) for f in chosen),
                )
            )
        big = [(t, link) for t, link in zip(tracks, linked) if t.face_size >= self.faces.min_judge_size]
        small = [t for t in tracks if t.face_size < self.faces.min_judge_size]
        positions = [pos for _, link in big for pos in link.frames]
        faces = [(detections[pos], d) for _, link in big for pos, d in zip(link.frames, link.detections)]
        with self._timed("align"):
            crops = self._cut(positions, faces)
        judged, first = [], 0
        for track, _ in big:
            judged.append(dataclasses.replace(track, crops=crops[first : first + len(track)]))
            first += len(track)
        return judged, small

    def _cut(self, positions: list[int], faces: list[tuple[FrameFaces, int]]) -> np.ndarray:
        """Crops, as ``self.crop`` says, of face ``d`` of ``frame_faces`` for each ``(frame_faces, d)`` of
        ``faces``, on the held frame at the same place in ``positions``."""
        spec = self.crop
        if spec.policy == ALIGNED:
            matrices = [alignment_matrix(f.landmarks[d], spec.size, spec.margin) for f, d in faces]
            return self.sandbox.warp(positions, np.asarray(matrices, np.float32).reshape(-1, 2, 3), spec.size)
        # Box crops: the detector boxes in the decoded frames' pixels, cut in the decoder process.
        boxes = np.asarray([f.boxes[d] for f, d in faces], np.float32).reshape(-1, 4)
        return self.sandbox.crop_boxes(positions, boxes, spec)

    @contextlib.contextmanager
    def _timed(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - start

    def take_stage_seconds(self) -> dict[str, float]:
        """Seconds spent per stage (decode, detect, align) since the last call."""
        taken, self.stage_seconds = self.stage_seconds, {}
        return taken

    def crops_at(
        self, uri: str, media_type: str, decoder: Optional[str], frame_indices: list[int], boxes: np.ndarray
    ) -> dict[int, np.ndarray]:
        """The crops of faces recorded in a verdict, re-decoded from the source and cut as ``self.crop`` says.

        ``boxes`` (source pixels, one per frame index) say which face. Box crops
        are cut from those boxes; aligned crops from the landmarks of the
        detection overlapping the box most (re-detected: verdicts keep no landmarks).
        Frames that no longer decode or hold no matching face are left out.
        Raises ``MediaError``.
        """
        name = "pillow" if media_type == "image" else (decoder or self.decode.decoders[0])
        with media.staged(uri) as path:
            try:
                probe = self.sandbox.open(name, path, self.decode.max_side, self.decode.max_pixels, self.decode.threads)
                clip = self.sandbox.read([int(i) for i in frame_indices])
            finally:
                self.sandbox.close_input()
        scale = probe.decoded_width / probe.width if probe.width else 1.0  # decoded pixels per source pixel
        wanted = {int(i): np.asarray(b, np.float32) * scale for i, b in zip(frame_indices, boxes)}
        spec, crops = self.crop, {}
        if spec.policy != ALIGNED:
            for index, frame in zip(clip.indices, clip.frames):
                if index in wanted:
                    crops[index] = cut_box_crop(frame, wanted[index], spec)
            return crops
        for index, frame, faces in zip(clip.indices, clip.frames, self.detector.detect(clip.frames, scale)):
            if not len(faces) or index not in wanted:
                continue
            overlap = box_iou(faces.boxes, wanted[index][None])[:, 0]
            best = int(np.argmax(overlap))
            if overlap[best] >= 0.3:
                crops[index] = align_face(frame, faces.landmarks[best], spec.size, spec.margin)[0]
        return crops

    @staticmethod
    def _finish(
        info: MediaInfo,
        frames_sampled: int,
        tracks: list[FaceTrackCrops],
        small: list[FaceTrackCrops] = (),
        min_judge_size: float = 0.0,
    ) -> ExtractedMedia:
        """The verdict-to-be: ``ok`` with judged tracks, else ``small_face`` or ``no_face``."""
        faces_found = sum(len(t) for t in (*tracks, *small))
        if small:
            sizes = f"{max(t.face_size for t in small):.0f} px; faces.min_judge_size is {min_judge_size:g}"
            if not tracks:
                error = f"faces found but too small ({sizes})"
                return ExtractedMedia(info, SMALL_FACE, error, frames_sampled, faces_found, (), tuple(small))
            info = dataclasses.replace(info, warnings=info.warnings + (f"{len(small)} track(s) too small to judge ({sizes})",))
        if not tracks:
            return ExtractedMedia(info, NO_FACE, "no face found in the sampled frames", frames_sampled, 0, ())
        return ExtractedMedia(info, OK, None, frames_sampled, faces_found, tuple(tracks), tuple(small))
