"""Long test videos: a real recording with a manipulated stretch between two keyframes, and its untouched twin.

An archive's manipulation is often a few seconds inside a long real
recording. This writes such a pair from the sample archive's own recipe
(``pipeline.synthetic.filming``): one portrait, scene and camera path filmed
twice, once real and once manipulated (a self-blend or a face swap, as in the
sample archive), both near-losslessly. The manipulated video takes the
manipulated take's frames inside the stretch and the real take's elsewhere;
the twin takes the real take's throughout. Both are then encoded alike, with a
keyframe every ``gop`` frames and none elsewhere, so the stretch lies between
two keyframes and only the face inside it differs between the two files.
The same arguments give byte-identical files on the same software stack.

Try the scanner on a pair, as a user would::

    python -m bench.long_videos /tmp/long
    deepfake-scan scan /tmp/long/manifest.csv --output /tmp/long/scan
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Optional, Sequence

import av

from models.labels import FAKE, REAL
from models.manipulate import FACE_SWAP, SELF_BLEND
from transforms.manifests import MANIFEST_NAME, write_manifest
from pipeline.synthetic.filming import SampleSpec, make_sample
from pipeline.synthetic.portraits import FaceSource

logger = logging.getLogger(__name__)

_MASTER_CRF = 4  # the two takes, before splicing: near-lossless, so the final encode is the only real one
_INDEX = 2000  # seeds scene and camera (shared by both takes); apart from the sample archive's items


@dataclass(frozen=True)
class LongItem:
    """One file of the pair, as the manifest lists it."""

    uri: str
    label: str
    manipulation: str


@dataclass(frozen=True)
class LongPair:
    """A manipulated long video, its untouched twin, and where the manipulated stretch lies.

    Attributes:
        fake: Path of the video with the manipulated stretch.
        real: Path of its untouched twin.
        stretch_s: ``(start, end)`` of the manipulated stretch, seconds.
        stretch_frames: ``(first, end)`` frame indices of the stretch (end excluded).
        keyframes: Frame indices of the keyframes (the same in both files).
        seconds, fps, gop, manipulation: As written.
    """

    fake: str
    real: str
    stretch_s: tuple[float, float]
    stretch_frames: tuple[int, int]
    keyframes: tuple[int, ...]
    seconds: float
    fps: int
    gop: int
    manipulation: str

    @property
    def items(self) -> list[LongItem]:
        return [LongItem(self.fake, FAKE, self.manipulation), LongItem(self.real, REAL, "")]


def make_long_pair(
    out_dir: str,
    *,
    seconds: float = 75.0,
    fps: int = 24,
    size: tuple[int, int] = (320, 240),
    stretch_s: tuple[float, float] = (43.0, 49.0),
    gop: int = 250,
    manipulation: str = SELF_BLEND,
    who: str = "lfw99",
    donor: str = "lfw29",
    background: str = "plaster",
    face_height: float = 0.48,
    crf: int = 23,
    seed: int = 0,
) -> LongPair:
    """Write the pair (and ``manifest.csv``: uri, label, manipulation) into ``out_dir``.

    The defaults: 75 s of 320x240 at 24 fps, a keyframe every 250 frames, and a
    6-s self-blend of ``lfw99`` (the sample archive's ``fake_self_blend_001``)
    from 0:43 to 0:49, between the keyframes at 0:41.7 and 0:52.1.

    Raises:
        ValueError: If the stretch does not lie inside the video between two keyframes.
    """
    first, end = int(round(stretch_s[0] * fps)), int(round(stretch_s[1] * fps))
    count = int(round(seconds * fps))
    if not 0 < first < end <= count:
        raise ValueError(f"the stretch {stretch_s} s must lie inside the {seconds:g}-s video")
    if first % gop == 0 or first // gop != (end - 1) // gop:
        raise ValueError(f"the stretch (frames {first}-{end - 1}) must lie between two keyframes "
                         f"(every {gop} frames)")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    kind = manipulation.replace("_", "-")
    fake = os.path.join(out_dir, f"long_{kind}_{_clock(stretch_s[0])}-{_clock(stretch_s[1])}.mp4")
    real = os.path.join(out_dir, "long_real_twin.mp4")
    take = SampleSpec("real_take", size, who, background=background, face_height=face_height, fps=fps,
                      seconds=seconds, crf=_MASTER_CRF, preset="ultrafast")
    manipulated = dataclasses.replace(take, name="manipulated_take", manipulation=manipulation,
                                      donor=donor if manipulation == FACE_SWAP else "")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".takes-") as tmp:
        faces = FaceSource()
        logger.info("filming the real and the manipulated take (%g s each)", seconds)
        real_take = make_sample(take, _INDEX, tmp, seed, faces).uri
        fake_take = make_sample(manipulated, _INDEX, tmp, seed, faces).uri
        _splice(fake, real_take, fake_take, (first, end), fps, gop, crf)
        _splice(real, real_take, fake_take, (0, 0), fps, gop, crf)
    pair = LongPair(fake, real, (first / fps, end / fps), (first, end), tuple(range(0, count, gop)), seconds,
                    fps, gop, manipulation)
    write_manifest(os.path.join(out_dir, MANIFEST_NAME), pair.items, ("uri", "label", "manipulation"))
    return pair


def _splice(path: str, real_take: str, fake_take: str, stretch: tuple[int, int], fps: int, gop: int,
            crf: int) -> None:
    """Encode the real take's frames, with the fake take's inside ``stretch`` (frame indices, end excluded)."""
    options = {"crf": str(crf), "preset": "veryfast", "threads": "2",
               "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:mbtree=0"}
    with av.open(real_take) as real, av.open(fake_take) as fake, av.open(path, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options=options)
        source = real.streams.video[0]
        stream.width, stream.height, stream.pix_fmt = source.width, source.height, "yuv420p"
        for index, (ours, theirs) in enumerate(zip(real.decode(video=0), fake.decode(video=0))):
            chosen = theirs if stretch[0] <= index < stretch[1] else ours
            frame = av.VideoFrame.from_ndarray(chosen.to_ndarray(format="rgb24"), format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.long_videos", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--seconds", type=float, default=75.0, help="length of both videos (default 75)")
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT (default 320x240)")
    p.add_argument("--stretch", default="43:49", metavar="START:END", help="manipulated seconds (default 43:49)")
    p.add_argument("--gop", type=int, default=250, help="frames between keyframes (default 250)")
    p.add_argument("--manipulation", choices=(SELF_BLEND, FACE_SWAP), default=SELF_BLEND)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    width, height = (int(v) for v in args.size.lower().split("x"))
    start, end = (float(v) for v in args.stretch.split(":"))
    pair = make_long_pair(args.out_dir, seconds=args.seconds, fps=args.fps, size=(width, height),
                          stretch_s=(start, end), gop=args.gop, manipulation=args.manipulation)
    print(f"{pair.fake}: {pair.manipulation} from {start:g} s to {end:g} s\n{pair.real}: its untouched twin\n"
          f"manifest: {os.path.join(os.path.abspath(args.out_dir), MANIFEST_NAME)}")


if __name__ == "__main__":
    main()
