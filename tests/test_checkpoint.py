"""Tests for model cards and single-file checkpoints."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import uuid

import fsspec
import numpy as np
import pytest
import torch

from models.card import ModelCard
from models.checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from models.frame import FrameModel, calibrate_batchnorm
from models.sequence import TrackLSTM


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Small tensors: see conftest."""


def _card(**overrides) -> ModelCard:
    fields = dict(
        name="test-b0",
        frame_arch="efficientnet-b0",
        input_size=64,
        sequence_kwargs={"hidden_dim": 16},
        frame_kwargs={"dropout": 0.3},
        training={"epochs": 1, "val_auc": 0.5, "data": ["celeb-df"]},
    )
    fields.update(overrides)
    return ModelCard(**fields)


@pytest.fixture
def models():
    torch.manual_seed(0)
    frame = FrameModel("efficientnet-b0", dropout=0.3)
    # Non-default BatchNorm statistics: the round trip covers buffers and outputs depend on inputs.
    calibrate_batchnorm(frame, torch.randn(4, 3, 64, 64))
    sequence = TrackLSTM(input_dim=1280, hidden_dim=16)
    return frame.eval(), sequence.eval()


@pytest.fixture
def memory_dir():
    root = f"memory://deepfake-scan-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _outputs(frame, sequence):
    torch.manual_seed(1)
    images, tracks = torch.randn(2, 3, 64, 64), torch.randn(2, 5, 1280)
    with torch.no_grad():
        out = frame(images)
        return out["logits"], out["embedding"], sequence(tracks, torch.tensor([5, 3]))


# --- model card ---------------------------------------------------------------------------


def test_card_round_trip_through_json():
    card = _card(training={"val_auc": np.float32(0.75), "steps": np.int64(3), "lrs": (0.1, 0.01)})
    d = card.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert d["mean"] == [0.485, 0.456, 0.406] and d["class_names"] == ["real", "fake"]
    assert type(d["training"]["val_auc"]) is float and type(d["training"]["steps"]) is int
    again = ModelCard.from_dict(json.loads(json.dumps(d)))
    assert again == card
    assert again.mean == (0.485, 0.456, 0.406) and isinstance(again.class_names, tuple)
    assert again.fake_index == 1


def test_card_from_dict_rejects_unknown_and_missing_keys():
    d = _card().to_dict()
    with pytest.raises(ValueError, match="unknown model card keys.*colour"):
        ModelCard.from_dict({**d, "colour": "red"})
    del d["frame_arch"]
    with pytest.raises(ValueError, match="missing required keys.*frame_arch"):
        ModelCard.from_dict(d)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 0.0}, "threshold"),
        ({"aggregator": "max"}, "aggregator"),
        ({"sequence_arch": None}, "needs a sequence_arch"),
        ({"fake_class": "forged"}, "fake_class"),
        ({"input_size": 0}, "input_size"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"frame_kwargs": {"num_classes": 3}}, "num_classes"),
        ({"training": {"when": object()}}, "JSON"),
    ],
)
def test_card_validation(overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _card(**overrides)


def test_card_mean_aggregator_needs_no_sequence_arch():
    card = _card(aggregator="mean", sequence_arch=None, class_names=("fake", "real"))
    assert card.fake_index == 0


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True])
def test_round_trip_fp32(tmp_path, models, as_url):
    frame, sequence = models
    path = str(tmp_path / "sub" / "ckpt.pt")
    sha = save_checkpoint(f"file://{path}" if as_url else path, _card(), frame, sequence)
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]  # no temporary files left behind
    with open(path, "rb") as f:
        assert sha == hashlib.sha256(f.read()).hexdigest()
    assert file_sha256(path) == sha

    loaded = load_checkpoint(path)
    assert loaded.sha256 == sha and loaded.source == path
    assert loaded.card == _card(embedding_dim=1280)
    assert not loaded.frame_model.training and not loaded.sequence_model.training
    for want, got in zip(_outputs(frame, sequence), _outputs(loaded.frame_model, loaded.sequence_model)):
        assert torch.equal(want, got)


def test_file_is_a_plain_weights_dict(tmp_path, models):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), _card(), *models)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert set(payload) == {"format", "version", "card", "frame_state", "sequence_state"}
    assert payload["format"] == "deepfake-scan-checkpoint" and payload["version"] == 1
    assert payload["card"] == _card(embedding_dim=1280).to_dict()
    assert not any("_fc" in key for key in payload["frame_state"])


def test_round_trip_half(tmp_path, models):
    frame, sequence = models
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    save_checkpoint(str(full), _card(), frame, sequence)
    sha = save_checkpoint(str(half), _card(), frame, sequence, half=True)
    assert sha == file_sha256(str(half))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    stored = torch.load(half, weights_only=True)["frame_state"]
    assert stored["head.weight"].dtype == torch.float16
    assert stored["backbone._bn0.running_var"].dtype == torch.float32  # buffers stay float32
    assert stored["backbone._bn0.num_batches_tracked"].dtype == torch.int64

    loaded = load_checkpoint(str(half))
    for original, model in ((frame, loaded.frame_model), (sequence, loaded.sequence_model)):
        buffers = dict(original.named_buffers())
        for key, value in model.state_dict().items():
            want = original.state_dict()[key]
            if want.is_floating_point() and key not in buffers:
                want = want.half().float()
            assert value.dtype == original.state_dict()[key].dtype and torch.equal(value, want), key
    for want, got in zip(_outputs(frame, sequence), _outputs(loaded.frame_model, loaded.sequence_model)):
        error = float((got - want).norm() / want.norm())
        assert 0 < error < 1e-2  # really rounded, but close


def test_half_refuses_values_that_overflow(tmp_path, models):
    frame, sequence = models
    with torch.no_grad():
        frame.head.bias[0] = 1e6
    with pytest.raises(ValueError, match="head.bias.*float16"):
        save_checkpoint(str(tmp_path / "x.pt"), _card(), frame, sequence, half=True)


def test_memory_url_round_trip(memory_dir, models):
    frame, sequence = models
    url = f"{memory_dir}/ckpt.pt"
    sha = save_checkpoint(url, _card(), frame, sequence)
    assert sha == hashlib.sha256(fsspec.filesystem("memory").cat(url)).hexdigest()
    assert file_sha256(url) == sha
    loaded = load_checkpoint(url)
    assert loaded.sha256 == sha
    for want, got in zip(_outputs(frame, sequence), _outputs(loaded.frame_model, loaded.sequence_model)):
        assert torch.equal(want, got)


def test_mean_aggregator_round_trip_without_sequence_model(tmp_path, models):
    path = str(tmp_path / "frame-only.pt")
    save_checkpoint(path, _card(aggregator="mean", sequence_arch=None), models[0])
    loaded = load_checkpoint(path)
    assert loaded.sequence_model is None and loaded.card.aggregator == "mean"


def test_loading_leaves_global_rng_alone(tmp_path, models):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint(path, _card(), *models)
    state = torch.get_rng_state()
    load_checkpoint(path)
    assert torch.equal(state, torch.get_rng_state())


def test_untrained_is_deterministic():
    state = torch.get_rng_state()
    a = load_checkpoint(None)
    assert torch.equal(state, torch.get_rng_state())
    with torch.random.fork_rng(devices=[]):  # whatever the caller's RNG state, same weights
        torch.manual_seed(123)
        b = load_checkpoint("untrained")
        torch.manual_seed(456)
        c = load_checkpoint("untrained:efficientnet-b0")
    for loaded in (a, b, c):
        assert loaded.sha256 is None and loaded.card.name == "untrained"
        assert loaded.card.frame_arch == "efficientnet-b0" and loaded.card.input_size == 224
        assert loaded.card.embedding_dim == 1280 and loaded.card.aggregator == "bilstm"
        assert not loaded.frame_model.training and not loaded.sequence_model.training
    for other in (b, c):
        for model in ("frame_model", "sequence_model"):
            want, got = getattr(a, model).state_dict(), getattr(other, model).state_dict()
            assert want.keys() == got.keys()
            assert all(torch.equal(want[k], got[k]) for k in want)
    # BatchNorm statistics are calibrated, so untrained scores still depend on the input.
    with torch.no_grad():
        embeddings = a.frame_model(torch.randn(2, 3, 224, 224))["embedding"]
    assert (embeddings[0] - embeddings[1]).abs().max() > 1e-3
    b1 = load_checkpoint("untrained:efficientnet-b1")
    assert b1.frame_model.arch == b1.card.frame_arch == "efficientnet-b1" and b1.card.input_size == 240
    assert b1.source == "untrained:efficientnet-b1"


def test_saving_refuses_models_that_do_not_match_the_card(tmp_path, models):
    frame, sequence = models
    path = str(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="efficientnet-b1"):
        save_checkpoint(path, _card(frame_arch="efficientnet-b1"), frame, sequence)
    with pytest.raises(ValueError, match="bilstm.*shape"):
        save_checkpoint(path, _card(sequence_kwargs={"hidden_dim": 32}), frame, sequence)
    with pytest.raises(ValueError, match="no sequence model"):
        save_checkpoint(path, _card(), frame)
    assert not os.path.exists(path)


# --- refusals -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=f"^checkpoint not found: {path}$"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint" + bytes(range(256)) * 8])
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a PyTorch weights file"):
        load_checkpoint(str(path))


def test_wrong_format_key(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "someone-else", "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a deepfake-scan checkpoint"):
        load_checkpoint(str(path))


def _payload(path) -> dict:
    return torch.load(path, weights_only=True)


def test_unknown_architecture(tmp_path, models):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), _card(), *models)
    payload = _payload(path)
    payload["card"]["frame_arch"] = "efficientnet-b9"
    torch.save(payload, path)
    expected = "unknown frame architecture 'efficientnet-b9'; known: efficientnet-b0, efficientnet-b1"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match="efficientnet-b9"):
        load_checkpoint("untrained:efficientnet-b9")


def test_frame_weights_of_another_architecture(tmp_path, models):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), _card(), *models)
    payload = _payload(path)
    payload["frame_state"] = FrameModel("efficientnet-b1").state_dict()  # deeper: extra blocks
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match architecture efficientnet-b0: .*unexpected keys"):
        load_checkpoint(str(path))


def test_sequence_weights_of_another_size(tmp_path, models):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), _card(), *models)
    payload = _payload(path)
    payload["sequence_state"] = TrackLSTM(input_dim=1280, hidden_dim=32).state_dict()
    torch.save(payload, path)
    expected = r"do not match architecture bilstm: .*shape mismatches.*\(128, 1280\) vs \(64, 1280\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(str(path))


class _RunsCode:
    """Unpickling this writes a flag file: what a malicious checkpoint would do."""

    def __init__(self, flag: str):
        self.flag = flag

    def __reduce__(self):
        return (exec, (f"open({self.flag!r}, 'w').write('code ran')",))


@pytest.mark.parametrize("layout", ["torch-zip", "raw-pickle"])
def test_pickle_that_runs_code_is_refused(tmp_path, layout):
    # The payload is real: plain unpickling runs it.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_RunsCode(str(proof)), protocol=2))
    assert proof.read_text() == "code ran"

    flag = tmp_path / "flag"
    path = tmp_path / "evil.pt"
    if layout == "torch-zip":
        evil = {"format": "deepfake-scan-checkpoint", "version": 1, "card": _RunsCode(str(flag))}
        buffer = io.BytesIO()
        torch.save(evil, buffer)
        path.write_bytes(buffer.getvalue())
    else:
        path.write_bytes(pickle.dumps(_RunsCode(str(flag)), protocol=2))
    with pytest.raises(CheckpointError, match="refused: it is not a plain weights file"):
        load_checkpoint(str(path))
    assert not flag.exists()


# --- read_card: what the driver needs, without building a model ----------------------------


def test_read_card_gives_the_card_and_sha_without_building_models(models, tmp_path, monkeypatch):
    from models import checkpoint as checkpoint_module
    from models.checkpoint import read_card

    frame, sequence = models
    path = str(tmp_path / "m.pt")
    sha = save_checkpoint(path, _card(crop_policy="box", box_margins=(0.1, 0.2, 0.1, 0.0)), frame, sequence)

    def no_models(*args, **kwargs):
        raise AssertionError("read_card built a model")

    monkeypatch.setattr(checkpoint_module, "create_model", no_models)
    card, found = read_card(path)
    assert found == sha == file_sha256(path)
    assert card.name == "test-b0" and card.crop.policy == "box" and card.crop.size == 64
    assert card.crop.box_margins == (0.1, 0.2, 0.1, 0.0)

    untrained, none = read_card("untrained:efficientnet-b4")
    assert none is None and untrained.name == "untrained" and untrained.crop.size == 380
    assert read_card(None)[0].crop.size == 224

    sbi = tmp_path / "sbi.pth"
    torch.save({"model": {"net._fc.bias": torch.zeros(2)}}, sbi)  # the layout only: no weights are loaded
    card, found = read_card(f"sbi:{sbi}")
    assert found == file_sha256(str(sbi)) and card.crop.policy == "box" and card.input_size == 380


@pytest.mark.parametrize("spec, message", [
    ("{tmp}/missing.pt", "checkpoint not found"),
    ("{tmp}/notes.txt", "not a PyTorch weights file"),
    ("untrained:efficientnet-b9", "unknown frame architecture"),
    ("sbi:{tmp}/plain.pt", "not an SBI checkpoint"),
])
def test_read_card_refuses_in_one_line(tmp_path, spec, message):
    from models.checkpoint import read_card

    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"format": "something-else"}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=message) as info:
        read_card(spec.format(tmp=tmp_path))
    assert "\n" not in str(info.value)


def test_checkpoint_and_sbi_modules_import_in_either_order():
    import subprocess
    import sys

    for first, second in (("models.sbi", "models.checkpoint"), ("models.checkpoint", "models.sbi")):
        code = f"import {first}, {second}; from models.checkpoint import CheckpointError, LoadedCheckpoint"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert result.returncode == 0, result.stderr
