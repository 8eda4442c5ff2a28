"""Loading the Self-Blended Images authors' checkpoint layout as a frame model."""
import numpy as np
import pytest
import torch
from efficientnet_pytorch import EfficientNet

from models.checkpoint import CheckpointError, load_checkpoint
from models.device import resolve_device
from models.inference import FramePredictor


class Detector(torch.nn.Module):
    """The released detector's structure: an efficientnet-pytorch B4 under ``net``."""

    def __init__(self):
        super().__init__()
        self.net = EfficientNet.from_name("efficientnet-b4", num_classes=2)

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def sbi_file(tmp_path_factory):
    torch.manual_seed(0)
    detector = Detector().eval()
    with torch.no_grad():  # give the batch norms non-trivial statistics
        detector.train()
        detector(torch.rand(4, 3, 128, 128))
        detector.eval()
    path = tmp_path_factory.mktemp("sbi") / "FFraw.tar"
    torch.save({"model": detector.state_dict(), "epoch": 99}, path)
    return path, detector


def test_sbi_checkpoint_scores_like_the_original_network(sbi_file):
    path, detector = sbi_file
    loaded = load_checkpoint(f"sbi:{path}")
    card = loaded.card
    assert (card.frame_arch, card.input_size, card.mean, card.std) == ("efficientnet-b4", 380, (0, 0, 0), (1, 1, 1))
    assert loaded.sequence_model is None and card.aggregator == "mean"
    assert loaded.sha256 is not None
    crops = np.random.default_rng(0).integers(0, 256, (2, 380, 380, 3), dtype=np.uint8)
    probs, embeddings = FramePredictor(loaded, resolve_device("cpu"))(crops)
    # the original: 380x380 crops scaled to [0, 1], no mean/std, softmax(logits)[:, 1]
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        expected = torch.softmax(detector(x), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert embeddings.shape == (2, 1792)


def test_sbi_refuses_other_layouts(tmp_path, sbi_file):
    path, detector = sbi_file
    torch.save(detector.state_dict(), tmp_path / "bare.pth")  # no "model" entry
    with pytest.raises(CheckpointError, match="not an SBI checkpoint"):
        load_checkpoint(f"sbi:{tmp_path / 'bare.pth'}")
    torch.save({"model": {"backbone.x": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="'net.'"):
        load_checkpoint(f"sbi:{tmp_path / 'other.pth'}")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(f"sbi:{tmp_path / 'missing.pth'}")
