"""The two torchvision functions facenet-pytorch imports, with a fallback.

facenet-pytorch's MTCNN imports ``torchvision.ops.boxes.batched_nms`` and
``torchvision.transforms.functional.to_tensor`` and nothing else from
torchvision. CPU-only installs cannot have torchvision (the registry has no CPU
build, and its CUDA build fails to import against CPU torch), so when the real
package cannot be imported we provide small equivalents of those two functions.
Real torchvision is always preferred when it imports (GPU containers).
"""
from __future__ import annotations

import importlib
import logging
import sys
import threading
import types
from typing import Any, Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)
_IMPORT_LOCK = threading.Lock()


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with torchvision's semantics.

    Boxes are ``(x1, y1, x2, y2)``; overlap is IoU with areas ``(x2 - x1) * (y2 - y1)``;
    a box is dropped when its IoU with a kept, higher-scoring box is strictly
    greater than ``iou_threshold``. Returns kept indices in decreasing score order.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    b = boxes.detach().to("cpu", torch.float64).numpy()
    s = scores.detach().to("cpu", torch.float64).numpy()
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-s, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        order = rest[iou <= iou_threshold]
    return torch.as_tensor(np.asarray(keep, dtype=np.int64), device=boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS applied independently per category ``idxs`` (torchvision's contract)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # Shift each category's boxes so that boxes of different categories never overlap.
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def to_tensor(pic: Any) -> torch.Tensor:
    """Convert a PIL image or an ``HxW[xC]`` ndarray to a ``CxHxW`` tensor.

    As in torchvision: ``uint8`` input is scaled to ``[0, 1]`` floats, any other
    dtype keeps its values.
    """
    if isinstance(pic, np.ndarray):
        if pic.ndim == 2:
            pic = pic[:, :, None]
        img = torch.from_numpy(np.ascontiguousarray(pic.transpose((2, 0, 1))))
        if img.dtype == torch.uint8:
            return img.to(dtype=torch.get_default_dtype()).div(255)
        return img
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a hard dependency
        Image = None
    if Image is not None and isinstance(pic, Image.Image):
        arr = np.array(pic, copy=True)
        if pic.mode == "1":
            arr = 255 * arr.astype(np.uint8)
        return to_tensor(arr)
    raise TypeError(f"to_tensor expects a PIL image or an ndarray, got {type(pic).__name__}")


def real_torchvision_available() -> bool:
    """True when the installed torchvision imports and provides both functions."""
    try:
        importlib.import_module("torchvision.ops.boxes")
        importlib.import_module("torchvision.transforms.functional")
        return True
    except Exception:  # a broken torchvision raises more than ImportError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            sys.modules.pop(name, None)
        return False


def _shim_modules() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops_boxes = types.ModuleType("torchvision.ops.boxes")
    tfs = types.ModuleType("torchvision.transforms")
    tfs_functional = types.ModuleType("torchvision.transforms.functional")
    ops_boxes.batched_nms = batched_nms
    ops_boxes.nms = nms
    ops.boxes = ops_boxes
    ops.batched_nms = batched_nms
    ops.nms = nms
    tfs_functional.to_tensor = to_tensor
    tfs.functional = tfs_functional
    root.ops = ops
    root.transforms = tfs
    root.__deepfake_scan_shim__ = True
    return {
        "torchvision": root,
        "torchvision.ops": ops,
        "torchvision.ops.boxes": ops_boxes,
        "torchvision.transforms": tfs,
        "torchvision.transforms.functional": tfs_functional,
    }


def import_facenet_mtcnn() -> Callable[..., torch.nn.Module]:
    """Import facenet-pytorch's ``MTCNN`` class, using the fallback when needed.

    The stand-in modules are placed in ``sys.modules`` only while facenet-pytorch
    imports (it binds the two functions at import time) and are removed again,
    so no other code ever sees a fake torchvision. Thread-safe: Beam sets DoFns
    up on several threads of one process at once, and a second thread must not
    take the half-imported module the first one is still executing.
    """
    with _IMPORT_LOCK:
        return _import_mtcnn()


def _import_mtcnn() -> Callable[..., torch.nn.Module]:
    if "facenet_pytorch.models.mtcnn" in sys.modules:
        return sys.modules["facenet_pytorch.models.mtcnn"].MTCNN
    if real_torchvision_available():
        from facenet_pytorch.models.mtcnn import MTCNN

        logger.debug("facenet-pytorch uses the installed torchvision")
        return MTCNN
    shims = _shim_modules()
    saved = {name: sys.modules.get(name) for name in shims}
    sys.modules.update(shims)
    try:
        module = importlib.import_module("facenet_pytorch.models.mtcnn")
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    logger.debug("facenet-pytorch uses deepfake-scan's torchvision fallback")
    return module.MTCNN
