"""Tests for the model registry, frame and sequence models, and face preprocessing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import registry
from models.card import ModelCard
from models.frame import FrameModel, calibrate_batchnorm, default_input_size
from models.preprocess import FacePreprocess
from models.registry import create_model, list_models, register_model
from models.sequence import TrackLSTM

REPO_ROOT = Path(__file__).resolve().parents[1]
EMBEDDING_DIMS = {
    "efficientnet-b0": 1280,
    "efficientnet-b1": 1280,
    "efficientnet-b2": 1408,
    "efficientnet-b3": 1536,
    "efficientnet-b4": 1792,
    "efficientnet-b5": 2048,
    "efficientnet-b6": 2304,
    "efficientnet-b7": 2560,
    "efficientnet-lite0": 1280,
    "efficientnet-lite1": 1280,
    "efficientnet-lite2": 1280,
}
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Small tensors: see conftest."""


# --- registry -----------------------------------------------------------------------------


def test_list_models_by_kind():
    assert list_models("frame") == sorted(EMBEDDING_DIMS)
    assert list_models("sequence") == ["bilstm"]
    assert list_models() == sorted([*EMBEDDING_DIMS, "bilstm"])
    with pytest.raises(ValueError, match="kind"):
        list_models("audio")


def test_unknown_model_raises_key_error_listing_valid_names():
    with pytest.raises(KeyError) as info:
        create_model("resnet-50")
    message = str(info.value)
    assert "resnet-50" in message
    assert "efficientnet-b0" in message and "efficientnet-b7" in message and "bilstm" in message


def test_duplicate_registration_raises(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # undone after the test
    register_model("test-net", kind="frame")(lambda: torch.nn.Identity())
    assert "test-net" in list_models("frame")
    with pytest.raises(ValueError, match="already registered"):
        register_model("test-net", kind="frame")(lambda: torch.nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        register_model("efficientnet-b0", kind="frame")(lambda: torch.nn.Identity())
    with pytest.raises(ValueError, match="kind"):
        register_model("other-net", kind="audio")


def test_registry_imports_model_modules_lazily():
    code = (
        "import sys; from models.registry import create_model, list_models; "
        "assert 'models.frame' not in sys.modules; "
        "names = list_models(); m = create_model('bilstm', input_dim=4); print(len(names), type(m).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(EMBEDDING_DIMS) + 1), "TrackLSTM"]


# --- frame model --------------------------------------------------------------------------


def _calibrated_b0(**kwargs) -> FrameModel:
    """b0 in eval mode with BatchNorm statistics of 64x64 noise (fresh statistics make eval degenerate)."""
    torch.manual_seed(0)
    model = create_model("efficientnet-b0", **kwargs)
    return calibrate_batchnorm(model, torch.randn(4, 3, 64, 64)).eval()


def test_frame_model_forward_shapes():
    model = _calibrated_b0(num_classes=3, dropout=0.1)
    assert isinstance(model, FrameModel)
    assert model.embedding_dim == 1280
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert set(out) == {"logits", "embedding"}
    assert out["logits"].shape == (2, 3)
    assert out["embedding"].shape == (2, 1280)
    assert torch.isfinite(out["logits"]).all()
    assert (out["embedding"][0] - out["embedding"][1]).abs().max() > 1e-3  # depends on the input


def test_calibrate_batchnorm_sets_statistics_and_restores_mode():
    torch.manual_seed(0)
    model = FrameModel("efficientnet-b0").eval()
    bn = model.backbone._bn1
    momentum = bn.momentum
    assert torch.all(bn.running_mean == 0)
    assert calibrate_batchnorm(model, torch.randn(2, 3, 32, 32)) is model
    assert not model.training and bn.momentum == momentum
    assert bn.running_mean.abs().sum() > 0 and int(bn.num_batches_tracked) == 1


def test_frame_model_has_no_dead_weights():
    torch.manual_seed(0)
    model = FrameModel("efficientnet-b0").train()
    assert not any("_fc" in key for key in model.state_dict())
    model(torch.randn(2, 3, 32, 32))["logits"].sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_frame_model_channels_last_matches_contiguous():
    model = _calibrated_b0()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert model.backbone._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got["logits"], expected["logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["embedding"], expected["embedding"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", sorted(EMBEDDING_DIMS))
def test_every_frame_arch_builds(arch):
    model = create_model(arch, num_classes=2, dropout=0.0).eval()
    assert model.arch == arch
    assert model.embedding_dim == EMBEDDING_DIMS[arch]
    assert model.head.in_features == EMBEDDING_DIMS[arch]
    with torch.no_grad():  # train mode: BatchNorm uses batch statistics (see _calibrated_b0)
        out = model.train()(torch.randn(2, 3, 32, 32))
    assert out["embedding"].shape == (2, EMBEDDING_DIMS[arch])
    assert out["logits"].shape == (2, 2)


def test_default_input_size():
    assert default_input_size("efficientnet-b0") == 224
    assert default_input_size("efficientnet-b4") == 380
    assert default_input_size("efficientnet-b7") == 600
    assert [default_input_size(f"efficientnet-lite{i}") for i in range(3)] == [224, 240, 260]
    with pytest.raises(ValueError, match="efficientnet-b0"):
        default_input_size("efficientnet-b9")


# --- sequence model -----------------------------------------------------------------------


def _reference_logit(model: TrackLSTM, seq: torch.Tensor) -> torch.Tensor:
    """The same pooling computed on one unpadded sequence without packing."""
    _, (h_n, _) = model.lstm(seq[None])
    return model.head(torch.cat([h_n[-2], h_n[-1]], dim=-1)).squeeze()


def test_track_lstm_is_padding_invariant():
    torch.manual_seed(0)
    model = TrackLSTM(input_dim=8, hidden_dim=6).eval()
    short = torch.randn(4, 8)
    with torch.no_grad():
        alone = model(short[None], torch.tensor([4]))
        batch = torch.randn(3, 9, 8) * 100  # large garbage everywhere, including the padding
        batch[1, :4] = short
        batched = model(batch, torch.tensor([9, 4, 7]))
        batch[1, 4:] = -batch[1, 4:]  # different padding, same sequence
        again = model(batch, torch.tensor([9, 4, 7]))
    assert alone.shape == (1,) and batched.shape == (3,)
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again, batched, rtol=0, atol=0)


def test_track_lstm_matches_unpacked_reference():
    torch.manual_seed(1)
    model = TrackLSTM(input_dim=5, hidden_dim=7, num_layers=2).eval()
    lengths = torch.tensor([3, 6, 1, 5])
    x = torch.randn(4, 6, 5)
    with torch.no_grad():
        got = model(x, lengths)
        expected = torch.stack([_reference_logit(model, x[i, :n]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_track_lstm_gradients_flow_and_skip_padding():
    torch.manual_seed(2)
    model = create_model("bilstm", input_dim=4, hidden_dim=3, dropout=0.1).train()
    x = torch.randn(2, 5, 4, requires_grad=True)
    model(x, torch.tensor([5, 2])).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad[1, :2].abs().sum() > 0
    assert torch.all(x.grad[1, 2:] == 0)


@pytest.mark.parametrize("lengths", [[0, 3], [3, 4], [3]])
def test_track_lstm_rejects_bad_lengths(lengths):
    model = TrackLSTM(input_dim=4, hidden_dim=3)
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 3, 4), torch.tensor(lengths))


# --- preprocessing ------------------------------------------------------------------------


def _expected_normalised(crops: np.ndarray) -> np.ndarray:
    """Hand computation in float64: [N, H, W, 3] uint8 -> [N, 3, H, W]."""
    return (((crops / 255.0) - MEAN) / STD).transpose(0, 3, 1, 2)


def test_preprocess_constant_colour_matches_hand_computation():
    colour = np.array([10, 128, 250], dtype=np.uint8)
    crops = np.broadcast_to(colour, (2, 8, 8, 3)).copy()
    out = FacePreprocess(input_size=8, mean=MEAN, std=STD)(crops)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    expected = (colour / 255.0 - MEAN) / STD
    for channel in range(3):
        torch.testing.assert_close(
            out[:, channel], torch.full((2, 8, 8), float(expected[channel])), rtol=0, atol=1e-5
        )
    # pixels onto [-1, 1] first, then mean/std
    ranged = FacePreprocess(input_size=8, mean=MEAN, std=STD, pixel_range=(-1.0, 1.0))(crops)
    expected = (colour / 255.0 * 2 - 1 - MEAN) / STD
    torch.testing.assert_close(ranged[:, :, 4, 4], torch.tensor(expected, dtype=torch.float32).expand(2, 3),
                               rtol=0, atol=1e-5)


def test_preprocess_random_image_without_resize():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    out = FacePreprocess(input_size=16, mean=MEAN, std=STD)(crops)
    np.testing.assert_allclose(out.numpy(), _expected_normalised(crops), rtol=0, atol=1e-5)


def test_preprocess_refuses_crops_of_another_size():
    """Crops cut for another model are refused, never resized to fit (a silent change of the input)."""
    from models.preprocess import CropSizeError

    pre = FacePreprocess(input_size=16, mean=MEAN, std=STD)
    for bad in (np.zeros((2, 40, 40, 3), np.uint8), [np.zeros((16, 16, 3), np.uint8), np.zeros((14, 16, 3), np.uint8)]):
        with pytest.raises(CropSizeError, match="never resized") as info:
            pre(bad)
        assert "\n" not in str(info.value)
    assert pre(np.zeros((0, 40, 40, 3), np.uint8)).shape == (0, 3, 16, 16)  # an empty batch has no size


def test_preprocess_output_is_channels_last():
    crops = np.zeros((2, 12, 12, 3), dtype=np.uint8)
    out = FacePreprocess(input_size=12, mean=MEAN, std=STD)(crops)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not out.is_contiguous()


def test_preprocess_accepts_array_list_and_tensor():
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, size=(3, 20, 20, 3), dtype=np.uint8)
    pre = FacePreprocess(input_size=20, mean=MEAN, std=STD)
    from_array = pre(crops)
    torch.testing.assert_close(pre(list(crops)), from_array, rtol=0, atol=0)
    torch.testing.assert_close(pre(torch.from_numpy(crops)), from_array, rtol=0, atol=0)
    bgr_view = crops[..., ::-1]  # negative strides, as after a cv2 BGR->RGB slice
    torch.testing.assert_close(pre(bgr_view[..., ::-1]), from_array, rtol=0, atol=0)
    np.testing.assert_allclose(from_array.numpy(), _expected_normalised(crops), rtol=0, atol=1e-5)
    assert pre([]).shape == (0, 3, 20, 20)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8, 4), np.uint8)],
)
def test_preprocess_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        FacePreprocess(input_size=8, mean=MEAN, std=STD)(bad)


def test_preprocess_from_card():
    half = (0.5, 0.5, 0.5)
    card = ModelCard(name="t", frame_arch="efficientnet-b0", input_size=32, mean=half, std=half)
    pre = FacePreprocess.from_card(card)
    assert pre.input_size == 32
    out = pre(np.full((1, 32, 32, 3), 255, dtype=np.uint8))
    torch.testing.assert_close(out, torch.ones(1, 3, 32, 32))
    raw = ModelCard(name="t", frame_arch="efficientnet-b4", input_size=32, pixel_range=(0.0, 1.0),
                    mean=(0.0,) * 3, std=(1.0,) * 3)  # [0, 1] and nothing more, as the SBI authors feed B4
    out = FacePreprocess.from_card(raw)(np.full((1, 32, 32, 3), 51, dtype=np.uint8))
    torch.testing.assert_close(out, torch.full((1, 3, 32, 32), 0.2))
    with pytest.raises(TypeError):
        FacePreprocess(32, (0.5,) * 3, (0.5,) * 3)  # keyword-only
