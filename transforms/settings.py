"""Settings of the scan's stages (inputs, decode, sampling, faces), and the validators every config shares.

The stages in ``transforms/`` take these dataclasses; ``pipeline/config.py``
composes them into the job's ``ScanConfig`` and loads them from YAML. They live
here, below the pipeline, so a stage never imports the job that runs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from models.crops import ALIGNED, CropSpec


class ConfigError(ValueError):
    """A configuration the user wrote cannot be used; the message says why, in one line."""


# ---------------------------------------------------------------- validators


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got '{value}'")


def check_positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"config key '{key}' must be positive, got {value}")


def check_non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"config key '{key}' must be zero or more, got {value}")


def check_fraction(key: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(f"config key '{key}' must be between 0 and 1, got {value}")


# ---------------------------------------------------------------- stages


SCOUT, CLIPS, UNIFORM = "scout", "clips", "uniform"
SAMPLING_POLICIES = (CLIPS, UNIFORM, SCOUT)
# A manipulated stretch this long is always seen by scouting: scout frames are at most this far apart.
MAX_SCOUT_EVERY_S = 5.0


@dataclass
class SamplingConfig:
    """Which frames of a video are decoded.

    ``scout`` (the default) covers the whole video: single frames at most
    ``scout_every_s`` apart are detected and scored by the frame model, then the
    dense clips go where they scored highest (``context_clips`` of them spread
    evenly instead). Without a frame model to score them (the training job's
    extraction) it samples as ``clips`` does. ``clips``: evenly spaced clips only,
    the cheap policy. ``uniform``: ``clip_len`` frames spread over the video.
    """

    policy: str = SCOUT
    clip_len: int = 25
    clip_every_s: float = 5.0  # one more clip for every this many seconds of video; scouted clips this far apart
    max_clips: int = 4
    snap_to_keyframes: bool = True  # start clips on a keyframe near the planned start (no decode wasted)
    scout_every_s: float = 2.0  # scout: at most this many seconds between scout frames (on keyframes where they allow)
    context_clips: int = 1  # scout: dense clips spread evenly for context (the rest follow the scout scores)

    def validate(self) -> None:
        check_choice("sampling.policy", self.policy, SAMPLING_POLICIES)
        check_positive("sampling.clip_len", self.clip_len)
        check_positive("sampling.clip_every_s", self.clip_every_s)
        check_positive("sampling.max_clips", self.max_clips)
        check_positive("sampling.scout_every_s", self.scout_every_s)
        if self.scout_every_s > MAX_SCOUT_EVERY_S:
            raise ConfigError(f"config key 'sampling.scout_every_s' must be at most {MAX_SCOUT_EVERY_S:g} "
                              f"(a manipulated stretch that long must always be seen), got {self.scout_every_s}")
        check_non_negative("sampling.context_clips", self.context_clips)


@dataclass
class DecodeConfig:
    """Decoders, their isolation and the limits on what is decoded."""

    # Tried in order: a later decoder reads the file when an earlier one fails, crashes or hangs.
    decoders: list[str] = field(default_factory=lambda: ["decord", "pyav"])
    isolate: bool = True  # decode in a child process (false: in-process, for debugging only)
    timeout_s: float = 120.0  # per input and decoder, and per call to the decoder; the child is killed after this
    timeout_s_per_minute: float = 30.0  # more budget per minute of video (scouting a long video makes many calls)
    memory_mb: int = 4096  # address-space limit of the decoder process (0: none)
    max_side: int = 1920  # larger frames are downscaled inside the decoder
    max_pixels: int = 40_000_000  # larger frames (over 8K UHD) are refused: status too_large
    max_file_mb: float = 20480.0  # larger files are refused before reading: status too_large
    max_duration_s: float = 14400.0  # longer videos are refused: status too_large
    threads: int = 0  # decoding threads per decoder process; 0: the decoder's default (decord 1, FFmpeg per core)
    # strict | best_effort | off: how much of the decoder child's containment is demanded (README, Security)
    containment: str = "best_effort"

    def validate(self) -> None:
        from transforms.decoders import validate_decoder_name

        if not self.decoders:
            raise ConfigError("decode.decoders must name at least one decoder")
        for name in self.decoders:
            try:
                validate_decoder_name(name)
            except ValueError as e:
                raise ConfigError(f"decode.decoders: {e}") from None
        check_positive("decode.timeout_s", self.timeout_s)
        check_non_negative("decode.timeout_s_per_minute", self.timeout_s_per_minute)
        check_non_negative("decode.memory_mb", self.memory_mb)
        if 0 < self.memory_mb < 512:
            raise ConfigError(f"decode.memory_mb must be 0 (no limit) or at least 512, got {self.memory_mb}")
        check_positive("decode.max_side", self.max_side)
        check_positive("decode.max_pixels", self.max_pixels)
        check_positive("decode.max_file_mb", self.max_file_mb)
        check_positive("decode.max_duration_s", self.max_duration_s)
        check_non_negative("decode.threads", self.threads)
        from transforms.containment import LEVELS, STRICT

        check_choice("decode.containment", self.containment, LEVELS)
        if self.containment == STRICT and not self.isolate:
            raise ConfigError("decode.containment: strict needs decode.isolate: true (in-process decoding is not contained)")


@dataclass
class FacesConfig:
    """Face detection (MTCNN), tracking, and which faces are big enough to judge."""

    detect_size: int = 640  # frames are downscaled so the longer side is at most this for detection
    # Smallest face detected, in source pixels (shorter box side); scaled with the detection
    # copy's downscale, but MTCNN cannot see below its 12-px window in that copy.
    min_face_size: int = 20
    # Tracks whose face (median longer box side, source pixels) is smaller are reported, not scored.
    min_judge_size: int = 24
    min_confidence: float = 0.9
    detect_every: int = 12  # detect on every Nth frame of a clip (and the last), interpolate between; 1: all
    interpolate_min_iou: float = 0.75  # two detections that agree less than this: the gap between is bisected
    detect_threads: int = 0  # CPU threads for MTCNN while the decoder reads ahead; 0: the worker's cores but one
    mtcnn_thresholds: list[float] = field(default_factory=lambda: [0.6, 0.7, 0.7])
    # Crops are cut as the checkpoint's card says (policy, size, margins). These two are only
    # an assertion: set, they must agree with the card, or the command stops before any work.
    crop_size: Optional[int] = None  # must equal the card's input_size
    margin: Optional[float] = None  # must equal an aligned card's crop_margin (box cards: leave unset)
    track_iou: float = 0.3
    track_max_gap: int = 2
    min_track_frames: int = 5  # shorter tracks are dropped (capped at the clip's length)
    max_tracks_per_clip: int = 8  # the longest tracks are kept

    def validate(self) -> None:
        check_positive("faces.detect_size", self.detect_size)
        check_positive("faces.min_face_size", self.min_face_size)
        check_fraction("faces.min_confidence", self.min_confidence)
        check_positive("faces.detect_every", self.detect_every)
        check_non_negative("faces.detect_threads", self.detect_threads)
        check_fraction("faces.interpolate_min_iou", self.interpolate_min_iou)
        if len(self.mtcnn_thresholds) != 3:
            raise ConfigError("faces.mtcnn_thresholds must hold three numbers (P-Net, R-Net, O-Net)")
        for t in self.mtcnn_thresholds:
            check_fraction("faces.mtcnn_thresholds", t)
        check_positive("faces.min_judge_size", self.min_judge_size)
        if self.crop_size is not None:
            check_positive("faces.crop_size", self.crop_size)
        if self.margin is not None and not 0 <= self.margin <= 2:
            raise ConfigError(f"faces.margin must be between 0 and 2, got {self.margin}")
        check_fraction("faces.track_iou", self.track_iou)
        check_non_negative("faces.track_max_gap", self.track_max_gap)
        check_positive("faces.min_track_frames", self.min_track_frames)
        check_positive("faces.max_tracks_per_clip", self.max_tracks_per_clip)

    def check_crop(self, crop: CropSpec, source: str) -> None:
        """Stop, in one line, when ``crop_size``/``margin`` are set and disagree with ``crop``.

        ``source`` names where ``crop`` comes from (e.g. ``checkpoint demo.pt``).
        Nothing is ever resized or re-cut to make them agree.
        """
        bad = []
        if self.crop_size is not None and self.crop_size != crop.size:
            bad.append(f"faces.crop_size={self.crop_size}")
        if self.margin is not None and (crop.policy != ALIGNED or abs(self.margin - crop.margin) > 1e-9):
            bad.append(f"faces.margin={self.margin:g}")
        if bad:
            raise ConfigError(
                f"{' and '.join(bad)} {'disagree' if len(bad) > 1 else 'disagrees'} with {source}, whose crops "
                f"are {crop.describe()}: leave faces.crop_size and faces.margin unset (crops are always cut "
                "as the model was trained, never resized)"
            )


@dataclass
class InputsConfig:
    """Which files a directory or glob yields."""

    video_extensions: list[str] = field(
        default_factory=lambda: [".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"]
    )
    image_extensions: list[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp"])

    def media_type(self, uri: str) -> Optional[str]:
        """``video``, ``image``, or ``None`` for a file type the scanner does not handle (by extension)."""
        ext = os.path.splitext(uri.split("?")[0])[1].lower()
        if ext in self.video_extensions:
            return "video"
        if ext in self.image_extensions:
            return "image"
        return None

    def validate(self) -> None:
        for name in ("video_extensions", "image_extensions"):
            for ext in getattr(self, name):
                if not ext.startswith(".") or ext != ext.lower():
                    raise ConfigError(f"inputs.{name}: '{ext}' must be lower case and start with '.'")
