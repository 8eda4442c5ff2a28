"""The torchvision fallback that lets facenet-pytorch run on CPU-only torch."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from models import torchvision_compat as compat


def reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook greedy NMS, written independently of the implementation under test."""
    keep = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def random_boxes(rng, n):
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(5, 40, size=(n, 2))
    return np.hstack([xy, xy + wh]).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_reference(seed, threshold):
    boxes, scores = random_boxes(np.random.default_rng(seed), 200)
    kept = compat.nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold)
    assert kept.dtype == torch.int64
    assert kept.tolist() == reference_nms(boxes, scores, threshold)


def test_batched_nms_is_per_category():
    rng = np.random.default_rng(7)
    boxes, scores = random_boxes(rng, 150)
    idxs = rng.integers(0, 3, 150)
    kept = compat.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.5)
    expected = []
    for c in range(3):
        members = np.flatnonzero(idxs == c)
        expected += [int(members[k]) for k in reference_nms(boxes[members], scores[members], 0.5)]
    # torchvision returns the kept boxes of all categories in decreasing score order
    assert kept.tolist() == sorted(expected, key=lambda i: -scores[i])


def test_batched_nms_keeps_identical_boxes_of_different_categories():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    kept = compat.batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert kept.tolist() == [0, 1]
    kept = compat.batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.5)
    assert kept.tolist() == [0]


def test_nms_empty():
    assert compat.batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0), 0.5).numel() == 0


@pytest.mark.skipif(not compat.real_torchvision_available(), reason="real torchvision not importable here")
def test_matches_real_torchvision():
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(3)
    boxes, scores = random_boxes(rng, 300)
    idxs = torch.from_numpy(rng.integers(0, 4, 300))
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    assert compat.batched_nms(b, s, idxs, 0.5).tolist() == batched_nms(b, s, idxs, 0.5).tolist()


def test_to_tensor_uint8_scales_and_transposes():
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = compat.to_tensor(arr)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert t[1, 0, 2].item() == pytest.approx(arr[0, 2, 1] / 255.0)


def test_to_tensor_float_keeps_values_and_pil_works():
    arr = np.full((4, 5, 3), 200.0, dtype=np.float32)
    assert compat.to_tensor(arr).max().item() == 200.0
    t = compat.to_tensor(Image.fromarray(np.full((4, 5, 3), 255, np.uint8)))
    assert t.shape == (3, 4, 5) and t.max().item() == 1.0
    assert compat.to_tensor(np.zeros((4, 5), np.uint8)).shape == (1, 4, 5)
    with pytest.raises(TypeError):
        compat.to_tensor([1, 2, 3])


def test_mtcnn_imports_without_leaving_a_fake_torchvision():
    mtcnn_class = compat.import_facenet_mtcnn()
    assert mtcnn_class.__name__ == "MTCNN"
    tv = sys.modules.get("torchvision")
    assert tv is None or not getattr(tv, "__deepfake_scan_shim__", False)


def test_mtcnn_imports_safely_from_several_threads_at_once():
    # Beam sets DoFns up on several threads of one process (Dataflow, DirectRunner
    # with multi_threading); each must get the class, never the half-imported module.
    # Threads arrive staggered so that some find the module half-imported.
    code = (
        "import threading, time\n"
        "import torch\n"
        "from models import torchvision_compat as compat\n"
        "got = []\n"
        "def load(i):\n"
        "    time.sleep(0.02 * i)\n"
        "    got.append(compat.import_facenet_mtcnn().__name__)\n"
        "threads = [threading.Thread(target=load, args=(i,)) for i in range(12)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(sorted(got))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(["MTCNN"] * 12)


def test_mtcnn_finds_the_astronaut_with_the_fallback():
    from skimage import data

    mtcnn = compat.import_facenet_mtcnn()(keep_all=True, device="cpu")
    boxes, probs = mtcnn.detect(data.astronaut())
    assert boxes is not None and len(boxes) == 1 and probs[0] > 0.99
    x1, y1, x2, y2 = boxes[0]
    assert 150 < x1 < 230 and 30 < y1 < 100 and 240 < x2 < 300 and 140 < y2 < 200
