"""The decoders that turn untrusted media bytes into RGB frames.

Each decoder opens one file, describes it (``probe``) and returns the frames
asked for (``read``), downscaled inside the decoder when the source is larger
than ``max_side``. They run in the sandboxed child process of
``transforms.sandbox`` (a crash or a hang there cannot touch the worker), so
this module imports neither Beam nor torch.

Built-in names: ``decord`` (fast, seeks by the container index), ``pyav``
(FFmpeg through PyAV: reads files whose index decord rejects) and ``pillow``
(still images). ``module:attr`` names a decoder class elsewhere (tests use it
to plug in decoders that crash or hang on purpose).
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from transforms.elements import TOO_LARGE, UNREADABLE
from transforms.media import MediaError, first_line

if TYPE_CHECKING:
    from models.crops import CropSpec

logger = logging.getLogger(__name__)


@dataclass
class Probe:
    """What a decoder learned about a file before decoding frames."""

    num_frames: int
    fps: float
    width: int  # display size of the source (after rotation), in pixels
    height: int
    duration_s: float
    codec: Optional[str]
    decoded_width: int  # size of the frames ``read`` returns (after rotation and downscaling)
    decoded_height: int
    rotation: int = 0  # degrees counterclockwise applied to decoded frames for display
    container_frames: Optional[int] = None  # frame count written in the container header, if any
    notes: list[str] = field(default_factory=list)
    keyframes: Optional[list[int]] = None  # indices of the frames a seek lands on, when the index tells

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Clip:
    """Frames a decoder returned for one request."""

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    timestamps: list[float]  # seconds
    indices: list[int]  # frame index of each returned frame (a subset of those asked for)
    notes: list[str] = field(default_factory=list)


class HeldClip:
    """A decoded clip kept where it was decoded: only small copies and face crops leave it.

    The full-resolution frames of a 1080p clip are 150 MB; the worker needs a
    downscaled copy of a few of them for detection and the faces' crops (aligned,
    ``warp``, or cut around their boxes, ``crop_boxes``), so that is all that
    crosses the process boundary.
    """

    def __init__(self, clip: Clip):
        self.clip = clip

    def summary(self) -> dict:
        frames = self.clip.frames
        repeats = repeated_frames(frames) if len(frames) > 1 else 0
        return {"shape": list(frames.shape), "timestamps": self.clip.timestamps, "indices": self.clip.indices,
                "notes": self.clip.notes, "repeats": repeats}

    def downscaled(self, positions: Sequence[int], width: int, height: int) -> np.ndarray:
        """``(len(positions), height, width, 3)`` copies (area interpolation) of the held frames."""
        import cv2

        frames = self.clip.frames
        if (width, height) == (frames.shape[2], frames.shape[1]):
            return np.ascontiguousarray(frames[list(positions)])
        out = np.empty((len(positions), height, width, 3), np.uint8)
        for k, pos in enumerate(positions):
            cv2.resize(frames[pos], (width, height), dst=out[k], interpolation=cv2.INTER_AREA)
        return out

    def warp(self, positions: Sequence[int], matrices: np.ndarray, size: int) -> np.ndarray:
        """Aligned ``size`` x ``size`` crops: frame ``positions[k]`` warped by ``matrices[k]`` (2x3)."""
        from models.align import warp_face

        out = np.empty((len(positions), size, size, 3), np.uint8)
        for k, (pos, matrix) in enumerate(zip(positions, np.asarray(matrices, np.float32).reshape(-1, 2, 3))):
            out[k] = warp_face(self.clip.frames[pos], matrix, size)
        return out

    def crop_boxes(self, positions: Sequence[int], boxes: np.ndarray, spec: CropSpec) -> np.ndarray:
        """``box`` crops (``models.crops.cut_box_crop``): the face at ``boxes[k]`` of frame ``positions[k]``.

        Args:
            positions: Frame positions within the held clip.
            boxes: ``(len(positions), 4)`` boxes ``x0, y0, x1, y1`` in the held frames' pixels.
            spec: The crop spec, policy ``box``.

        Returns:
            ``(len(positions), spec.size, spec.size, 3)`` uint8.
        """
        from models.crops import cut_box_crop

        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(boxes) != len(positions):
            raise ValueError(f"{len(positions)} frame positions but {len(boxes)} boxes")
        out = np.empty((len(positions), spec.size, spec.size, 3), np.uint8)
        for k, (pos, box) in enumerate(zip(positions, boxes)):
            out[k] = cut_box_crop(self.clip.frames[pos], box, spec)
        return out


class ClipReader:
    """Decodes an input's clips in order on a background thread, one clip ahead of its consumer.

    While the worker detects faces in clip ``k``, clip ``k + 1`` is being
    decoded (decord and PyAV release the GIL), so decoding overlaps detection
    instead of adding to it. At most two decoded clips exist at a time.
    """

    def __init__(self, decoder, clips: Sequence[Sequence[int]]):
        self._decoder = decoder
        self._clips = [[int(i) for i in c] for c in clips]
        self._done: dict[int, object] = {}  # clip number -> Clip, or the exception its decode raised
        self._wanted = 0  # the clip the consumer holds or waits for
        self._next = 0  # the clip the consumer should ask for next
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clip-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for k, indices in enumerate(self._clips):
            with self._cond:
                while not self._stopped and k > self._wanted + 1:
                    self._cond.wait()
                if self._stopped:
                    return
            try:
                result: object = self._decoder.read(indices)
            except BaseException as e:  # handed to the consumer, raised there
                result = e
            with self._cond:
                self._done[k] = result
                self._cond.notify_all()

    def planned(self, indices: Sequence[int]) -> Optional[int]:
        """The clip number of ``indices`` if it is the next one planned, else ``None``."""
        if not self._stopped and self._next < len(self._clips) and self._clips[self._next] == [int(i) for i in indices]:
            return self._next
        return None

    def get(self, k: int) -> Clip:
        """Clip number ``k`` (waits for its decode); earlier clips are dropped."""
        with self._cond:
            self._wanted, self._next = k, k + 1
            self._cond.notify_all()
            while k not in self._done:
                self._cond.wait()
            for old in [n for n in self._done if n < k]:
                del self._done[old]
            result = self._done[k]
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Stop decoding ahead; waits for a decode in progress (the decoder can then be closed)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()
        self._done.clear()


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled down so the longer side is at most ``max_side`` (even sizes)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display rotation (degrees counterclockwise, multiples of 90) to ``(n, H, W, 3)`` frames."""
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=turns, axes=(1, 2))) if turns else frames


def repeated_frames(frames: np.ndarray) -> int:
    """How many frames are byte-identical to the frame before them.

    Decoders that cannot decode a frame sometimes hand back the previous one
    instead of failing; in camera footage two identical consecutive frames are
    rare, so the count is recorded as a warning (static screen content can
    repeat honestly, so it never changes a status by itself). Every 16th row is
    compared first, so differing frames (nearly all) cost little.
    """
    return sum(
        1
        for i in range(1, len(frames))
        if np.array_equal(frames[i, ::16], frames[i - 1, ::16]) and np.array_equal(frames[i], frames[i - 1])
    )


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(
            TOO_LARGE, f"{width}x{height} pixels per frame is over decode.max_pixels={max_pixels}"
        )


@dataclass
class _Container:
    codec: Optional[str]
    width: int
    height: int
    rotation: int
    frames: Optional[int]
    fps: float
    duration_s: float


def _container_facts(path: str) -> _Container:
    """Header facts through PyAV: codec, size, display rotation, frame count."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["no"]
                raise MediaError(UNREADABLE, f"no video stream (the file has {', '.join(kinds)} streams)")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or 0
            duration = 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1e6
            rotation = 0
            try:  # the display matrix travels with the decoded frame
                rotation = int(round(next(container.decode(stream)).rotation or 0))
            except Exception:  # no decodable first frame: decode will say so
                pass
            return _Container(
                codec=ctx.name,
                width=int(ctx.width),
                height=int(ctx.height),
                rotation=rotation,
                frames=int(stream.frames) or None,
                fps=float(rate),
                duration_s=duration,
            )
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(UNREADABLE, f"cannot open the file: {first_line(e)}") from None


class DecordDecoder:
    """decord's ``VideoReader``: one accurate seek per clip, then decoding forward.

    The reader is freed after each ``read`` and opened again for the next: an open
    decord 0.6 reader keeps a decoding thread spinning on a full core while it
    waits (measured: 3.0 s of CPU in 3 s idle), which on a 2-core worker
    halves what face detection and the model get. Reopening costs 20-80 ms.
    """

    name = "decord"

    def __init__(self, path: str, max_side: int, max_pixels: int, threads: int = 0):
        facts = None
        try:
            facts = _container_facts(path)
        except MediaError as e:
            if "no video stream" in str(e):
                raise
        if facts is not None:
            _check_pixels(facts.width, facts.height, max_pixels)
        # decord applies the display rotation itself; its target size is in display orientation.
        quarter = facts is not None and (facts.rotation // 90) % 2 == 1
        display = (facts.height, facts.width) if quarter else (facts.width, facts.height) if facts else None
        size = fit_size(*display, max_side) if display else (-1, -1)
        # decord's own default (a thread per core) did not decode faster here: one unless told
        self._path, self._size, self._threads = path, size, threads or 1
        self._reader = self._open()
        num_frames = len(self._reader)
        if num_frames == 0:
            raise MediaError(UNREADABLE, "the video has no frames")
        fps = float(self._reader.get_avg_fps() or 0.0)
        if facts is None:  # PyAV could not read the header: take decord's own word for it
            shape = self._reader[0].shape
            facts = _Container(None, int(shape[1]), int(shape[0]), 0, None, fps, 0.0)
            _check_pixels(facts.width, facts.height, max_pixels)
            display = size = (facts.width, facts.height)
        notes = []
        if facts.frames and facts.frames != num_frames:
            notes.append(f"the container header claims {facts.frames} frames, its index holds {num_frames}")
        self.probe = Probe(
            num_frames=num_frames,
            fps=fps,
            width=display[0],
            height=display[1],
            duration_s=num_frames / fps if fps > 0 else facts.duration_s,
            codec=facts.codec,
            decoded_width=size[0],
            decoded_height=size[1],
            rotation=facts.rotation,
            container_frames=facts.frames,
            notes=notes,
            keyframes=self._key_indices(),
        )
        # Kept for the first read, which follows at once; later reads open their own.

    def _open(self):
        import decord

        try:
            return decord.VideoReader(self._path, ctx=decord.cpu(0), width=self._size[0], height=self._size[1],
                                      num_threads=self._threads)
        except Exception as e:  # decord raises DECORDError and RuntimeError
            raise MediaError(UNREADABLE, f"cannot open the video: {first_line(e)}") from None

    def _key_indices(self) -> Optional[list[int]]:
        try:
            keys = [int(k) for k in self._reader.get_key_indices()]
        except Exception:  # an index without keyframe flags: clips are not snapped
            return None
        return keys or None

    def read(self, indices: Sequence[int]) -> Clip:
        wanted = [int(i) for i in indices if 0 <= int(i) < self.probe.num_frames]
        notes = []
        if len(wanted) < len(indices):
            notes.append(f"{len(indices) - len(wanted)} requested frame(s) lie beyond the last frame")
        if not wanted:
            raise MediaError(UNREADABLE, "none of the requested frames exist")
        reader, self._reader = self._reader or self._open(), None
        try:
            frames = None
            if wanted == list(range(wanted[0], wanted[0] + len(wanted))):
                try:
                    frames = _decord_run(reader, wanted[0], len(wanted))
                except Exception as e:  # e.g. the index promised more frames than decode: the batch path decides
                    logger.debug("decord sequential read failed (%s); reading the batch instead", first_line(e))
                    reader = self._open()
            if frames is None:
                frames = reader.get_batch(wanted).asnumpy()  # writeable, unlike a DLPack view
            stamps = reader.get_frame_timestamp(wanted)[:, 0].astype(np.float64)
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(UNREADABLE, f"failed to decode frames: {first_line(e)}") from None
        finally:
            del reader  # stops its spinning thread
        return Clip(frames, [float(t) for t in stamps], wanted, notes)

    def close(self) -> None:
        self._reader = None


class _DLPack:
    """Hands numpy a decord DLPack capsule (decord 0.6 has ``to_dlpack`` but not the ``__dlpack__`` protocol)."""

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, stream=None, **_):
        return self._capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def _decord_numpy(array) -> np.ndarray:
    """A read-only numpy view of a decord ``NDArray``, without ``asnumpy``'s copy (~8 ms per 1080p frame)."""
    return np.from_dlpack(_DLPack(array.to_dlpack()))


def _decord_run(reader, first: int, count: int) -> np.ndarray:
    """``count`` consecutive frames from ``first``: one accurate seek, then decoding forward.

    Cheaper than ``get_batch`` for a clip (measured 28-30 against 37-40 ms of CPU
    per 1080p frame): each frame is copied once into the clip's array.
    """
    reader.seek_accurate(first)
    frame = _decord_numpy(reader.next())
    if frame.ndim != 3 or frame.shape[2] != 3:  # decord 0.6 hands back (16, 16, 6) for 16x16 video
        raise ValueError(f"decord returned a frame of shape {frame.shape}")
    out = np.empty((count,) + frame.shape, np.uint8)
    out[0] = frame
    for k in range(1, count):
        out[k] = _decord_numpy(reader.next())  # a frame of another shape raises here
    return out


class PyAVDecoder:
    """FFmpeg through PyAV: decodes forward from the start (short videos) or from a seek."""

    name = "pyav"
    _SEQUENTIAL_UP_TO = 1500  # frames; beyond this, seek to each clip by its timestamp

    def __init__(self, path: str, max_side: int, max_pixels: int, threads: int = 0):
        import av

        facts = _container_facts(path)
        _check_pixels(facts.width, facts.height, max_pixels)
        try:
            self._container = av.open(path)
        except Exception as e:
            raise MediaError(UNREADABLE, f"cannot open the file: {first_line(e)}") from None
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        if threads:  # else FFmpeg picks (one thread per core)
            self._stream.thread_count = threads
        self._size = fit_size(facts.width, facts.height, max_side)
        self._rotation = facts.rotation
        fps = facts.fps
        claimed = facts.frames or (int(round(facts.duration_s * fps)) if fps > 0 else 0)
        if claimed <= 0:
            self._container.close()
            raise MediaError(UNREADABLE, "the container gives neither a frame count nor a duration")
        start = self._stream.start_time
        self._start_s = float(start * self._stream.time_base) if start is not None and self._stream.time_base else 0.0
        quarter = (facts.rotation // 90) % 2 == 1
        w, h = self._size
        self.probe = Probe(
            num_frames=claimed,
            fps=fps,
            width=facts.height if quarter else facts.width,
            height=facts.width if quarter else facts.height,
            duration_s=facts.duration_s or (claimed / fps if fps > 0 else 0.0),
            codec=facts.codec,
            decoded_width=h if quarter else w,
            decoded_height=w if quarter else h,
            rotation=facts.rotation,
            container_frames=facts.frames,
        )
        self._frames = None  # the running decode generator
        self._next_index: Optional[int] = None  # its next frame's index when counting from frame 0

    def _frames_from(self, first_wanted: int, last_wanted: int):
        """Position the decoder before ``first_wanted``; yields ``(index, frame)``."""
        if last_wanted < self._SEQUENTIAL_UP_TO:  # count frames from the start: exact under VFR
            if self._frames is None or self._next_index is None or first_wanted < self._next_index:
                if self._frames is not None:
                    self._container.seek(0, stream=self._stream)
                self._frames, self._next_index = self._container.decode(self._stream), 0
            for frame in self._frames:
                index = self._next_index
                self._next_index += 1
                yield index, frame
            return
        target = first_wanted / self.probe.fps + self._start_s
        self._container.seek(int(target / self._stream.time_base), stream=self._stream, backward=True)
        self._frames, self._next_index = self._container.decode(self._stream), None
        for frame in self._frames:
            yield int(round((float(frame.time or 0.0) - self._start_s) * self.probe.fps)), frame

    def read(self, indices: Sequence[int]) -> Clip:
        wanted = sorted({int(i) for i in indices})
        if not wanted:
            raise MediaError(UNREADABLE, "no frames requested")
        todo = set(wanted)
        frames, stamps, got, notes = [], [], [], []
        try:
            for index, frame in self._frames_from(wanted[0], wanted[-1]):
                if index in todo:
                    frames.append(frame.to_ndarray(format="rgb24", width=self._size[0], height=self._size[1]))
                    stamps.append(float(frame.time or 0.0) - self._start_s)
                    got.append(index)
                    todo.discard(index)
                if index >= wanted[-1]:
                    break
        except Exception as e:  # a damaged packet mid-stream: keep what decoded
            self._frames = None
            if not frames:
                raise MediaError(UNREADABLE, f"failed to decode frames: {first_line(e)}") from None
            notes.append(f"decoding stopped early: {first_line(e)}")
        if not frames:
            raise MediaError(UNREADABLE, "decoded none of the requested frames")
        if todo:
            notes.append(
                f"{len(todo)} of {len(wanted)} requested frame(s) could not be decoded "
                f"(the container claims {self.probe.num_frames} frames)"
            )
        return Clip(rotate(np.stack(frames), self._rotation), stamps, got, notes)

    def close(self) -> None:
        self._container.close()


class PillowDecoder:
    """Still images through Pillow, with EXIF orientation and in-decoder JPEG downscaling."""

    name = "pillow"

    def __init__(self, path: str, max_side: int, max_pixels: int, threads: int = 0):
        from PIL import Image, ImageOps

        Image.MAX_IMAGE_PIXELS = None  # our own limit below, with our own status
        try:
            img = Image.open(path)
            _check_pixels(img.width, img.height, max_pixels)
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when enough
            img = ImageOps.exif_transpose(img.convert("RGB"))
        except MediaError:
            raise
        except Exception as e:  # UnidentifiedImageError, truncated data, bad EXIF ...
            raise MediaError(UNREADABLE, f"cannot decode the image: {first_line(e)}") from None
        width, height = img.size
        if max(width, height) > max_side:
            img = img.resize(fit_size(width, height, max_side))
        self._pixels = np.asarray(img)
        self.probe = Probe(
            num_frames=1,
            fps=0.0,
            width=width,
            height=height,
            duration_s=0.0,
            codec=(Image.open(path).format or "").lower() or None,
            decoded_width=self._pixels.shape[1],
            decoded_height=self._pixels.shape[0],
        )

    def read(self, indices: Sequence[int]) -> Clip:
        return Clip(self._pixels[None], [0.0], [0])

    def close(self) -> None:
        self._pixels = None


BUILTIN = {"decord": DecordDecoder, "pyav": PyAVDecoder, "pillow": PillowDecoder}


def open_decoder(name: str, path: str, max_side: int, max_pixels: int, threads: int = 0):
    """An opened decoder; ``threads`` reaches the built-in ones (others take the first three)."""
    if name in BUILTIN:
        return BUILTIN[name](path, max_side, max_pixels, threads=threads)
    return decoder_class(name)(path, max_side, max_pixels)


def decoder_class(name: str):
    """A decoder by built-in name or ``module:attr``; raises ``ValueError`` with the valid names."""
    if name in BUILTIN:
        return BUILTIN[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"unknown decoder '{name}' (valid: {', '.join(BUILTIN)} or module:attr)")
    return getattr(importlib.import_module(module), attr)


def validate_decoder_name(name: str) -> None:
    """Checks a configured decoder name without importing anything heavy."""
    if name not in BUILTIN and (":" not in name or not all(name.partition(":")[::2])):
        raise ValueError(f"unknown decoder '{name}' (valid: {', '.join(BUILTIN)} or module:attr)")

