"""The ``pillow`` decoder: still images, the scan's only decoder for image inputs."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from transforms.clips import Clip, Probe, fit_size
from transforms.container import check_pixels
from transforms.elements import UNREADABLE
from transforms.media import MediaError, first_line


class PillowDecoder:
    """Still images through Pillow, with EXIF orientation and in-decoder JPEG downscaling."""

    name = "pillow"

    def __init__(self, path: str, max_side: int, max_pixels: int, threads: int = 0):
        from PIL import Image, ImageOps

        Image.MAX_IMAGE_PIXELS = None  # our own limit below, with our own status
        try:
            img = Image.open(path)
            check_pixels(img.width, img.height, max_pixels)
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
