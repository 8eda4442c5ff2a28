"""What containing the decoder child costs: ``python -m bench.containment [--inputs N] [--video PATH]``.

For in-process decoding and each ``decode.containment`` level it times
- the child's start-up (interpreter, imports, the process-wide layers and the
  start-up probe of the per-input ones), paid once per worker and per crash;
- an input that costs next to nothing to decode, a 64x64 PNG (``pillow``):
  what is left is the per-input process (fork, its private folder, its
  layers, its exit);
- an input's ``open``, one 25-frame clip (decord, 1080p) held in the child as
  the scan holds it, a 640x360 copy of one frame, and ``close``: the same
  beside real decoding.
Wall time is the median over ``--inputs`` inputs; CPU time (worker and
decoder processes together, the start-up's subtracted) is their mean: it
moves less than wall time on a machine shared with other work.
"""
from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from transforms.sandbox import DecoderSandbox

logger = logging.getLogger(__name__)

LIMITS = dict(max_side=1920, max_pixels=40_000_000)
SETUPS = (("in-process", dict(isolate=False)), ("off", dict(containment="off")),
          ("best_effort", dict(containment="best_effort")), ("strict", dict(containment="strict")))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=30, help="inputs timed per setup")
    parser.add_argument("--video", help="an H.264 video to decode (default: 3 s of synthetic 1080p)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or str(_synthetic_video(Path(tmp) / "bench.mp4"))
        image = str(Path(tmp) / "bench.png")
        Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
        print("milliseconds; wall: median per input; cpu: worker and decoder processes together, per input")
        print(f"{'setup':<12} {'start-up':>9} {'start cpu':>9} {'tiny PNG':>10} {'cpu':>6} {'25 frames':>10} {'cpu':>6}")
        for name, kwargs in SETUPS:
            start, start_cpu = _lifetime(kwargs, "", "", 0)[:2]
            empty = _lifetime(kwargs, image, "pillow", args.inputs)
            decoded = _lifetime(kwargs, video, "decord", args.inputs)
            per_input = [(cpu - start_cpu) / args.inputs for cpu in (empty[1], decoded[1])]
            print(f"{name:<12} {start:>9.0f} {start_cpu:>9.0f} {empty[2]:>10.1f} {per_input[0]:>6.1f} "
                  f"{decoded[2]:>10.1f} {per_input[1]:>6.1f}")


def _lifetime(sandbox_kwargs: dict, path: str, decoder: str, inputs: int) -> tuple[float, float, float]:
    """One sandbox's life: start-up wall ms, CPU ms of everything it ran, median wall ms per input."""
    cpu_before = _cpu_ms()
    times = []
    with DecoderSandbox(timeout_s=120, **sandbox_kwargs) as sandbox:
        started = time.perf_counter()
        sandbox.containment_layers()
        start_ms = (time.perf_counter() - started) * 1000
        for _ in range(inputs):
            started = time.perf_counter()
            _one_input(sandbox, decoder, path, list(range(25)) if decoder == "decord" else [0])
            times.append((time.perf_counter() - started) * 1000)
    return start_ms, _cpu_ms() - cpu_before, statistics.median(times) if times else 0.0


def _one_input(sandbox: DecoderSandbox, decoder: str, path: str, frames: Sequence[int]) -> None:
    """As the scan reads an input: the clip stays in the decoder process, a small copy comes back."""
    sandbox.open(decoder, path, **LIMITS)
    sandbox.hold(frames)
    sandbox.downscaled([0], 640, 360)
    sandbox.close_input()


def _cpu_ms() -> float:
    """User and system CPU of this process and of every descendant it has reaped (they reap theirs)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime)


def _synthetic_video(path: Path, frames: int = 75) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        ramp = np.linspace(0, 255, 1920, dtype=np.float32)
        for i in range(frames):
            image = np.empty((1080, 1920, 3), np.uint8)
            image[..., 0] = (ramp + 4 * i) % 256
            image[..., 1] = ramp[::-1][None, :]
            image[..., 2] = (np.arange(1080)[:, None] + 8 * i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


if __name__ == "__main__":
    main()
