"""The training job end to end on a tiny generated set: extract, train, resume, evaluate."""
import json

import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, is_not_empty

from models.checkpoint import load_checkpoint
from models.frame import FrameModel
from models.losses import FrameLoss
from models.preprocess import FacePreprocess
from models.preprocess import decode_crop
from models.training import CropDataset, CropSample, EarlyStopping, crop_loader, train_frame_epoch
from pipeline.cli import main
from pipeline.config import ScanConfig, load_config
from pipeline.datasets import load_dataset
from pipeline.evaluate import compute_metrics
from pipeline.extract import build_extract_pipeline
from pipeline.train import run_train
from pipeline.train_config import TrainConfig
from pipeline.trainset import generate_training_set
from transforms.face_table import FACE_SCHEMA

FAST_SCAN = ["faces.detect_size=320"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainset")
    items = generate_training_set(str(out), identities=5, seconds=1.2, seed=1)
    return out, items


@pytest.fixture(scope="module")
def faces_dir(tiny_set, tmp_path_factory):
    data, items = tiny_set
    out = tmp_path_factory.mktemp("faces")
    videos = load_dataset(str(data / "manifest.csv"))
    pipeline = TestPipeline()
    rows = build_extract_pipeline(pipeline, videos, str(out), load_config(ScanConfig, None, FAST_SCAN))
    assert_that(rows, is_not_empty())
    pipeline.run().wait_until_finish()
    return out


def test_generated_set_keeps_identities_in_one_split(tiny_set):
    _, items = tiny_set
    splits = {}
    for item in items:
        assert splits.setdefault(item.group, item.split) == item.split
    assert {"train", "val", "test"} <= set(splits.values())
    assert {i.label for i in items} == {"real", "fake"}


def test_extracted_faces_table(faces_dir, tiny_set):
    _, items = tiny_set
    table = pq.read_table(str(faces_dir / "faces"))
    assert table.schema.equals(FACE_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    by_uri = {i.uri: i for i in items}
    assert {r["uri"] for r in rows} == set(by_uri)  # every generated video gave faces
    for row in rows[:: max(1, len(rows) // 20)]:
        item = by_uri[row["uri"]]
        assert (row["label"], row["split"], row["group"]) == (item.label, item.split, item.group)
        crop = decode_crop(row["crop_png"])
        assert crop.shape == (224, 224, 3) and row["crop_size"] == 224
    videos = pq.read_table(str(faces_dir / "videos")).to_pylist()
    assert len(videos) == len(items) and {v["status"] for v in videos} == {"ok"}


def _tiny_config(faces_dir, out, **overrides) -> TrainConfig:
    base = [
        f"data.faces={faces_dir}", f"output={out}", "model.input_size=64", "model.dropout=0.0",
        "frame.epochs=1", "frame.batch_size=8", "frame.workers=0", "data.frames_per_track=4",
        "data.val_frames_per_track=4", "sequence.epochs=3", "sequence.hidden_dim=16", "device=cpu",
        "frame.contrastive_weight=0.1", "model.manipulation_head=true",
    ]
    return load_config(TrainConfig, None, base + [f"{k}={v}" for k, v in overrides.items()])


def test_train_writes_a_scan_checkpoint_and_resumes(faces_dir, tmp_path):
    path = run_train(_tiny_config(faces_dir, tmp_path, **{"frame.ema_decay": 0.9}))
    loaded = load_checkpoint(path)
    card = loaded.card
    assert card.input_size == 64 and card.aggregator == "bilstm" and loaded.sequence_model is not None
    assert 0 < card.threshold < 1 and card.temperature > 0
    assert set(card.manipulation_classes) == {"face_swap", "self_blend"}
    assert {"config", "data", "validation", "temperature", "threshold"} <= set(card.training)
    assert card.training["data"]["train"]["videos"] > 0
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["stage"] == "frame"] == [1]
    assert any(l["stage"] == "sequence" for l in lines) and lines[-1]["stage"] == "calibration"
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "state.pt").exists()
    # resume: one more frame epoch, continuing where the state file left off
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert int(state["ema"]["n_averaged"]) > 0  # the weight average travels with the state
    run_train(_tiny_config(faces_dir, tmp_path, **{"frame.epochs": 2, "frame.ema_decay": 0.9,
                                                   "resume": tmp_path / "state.pt"}))
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["stage"] == "frame"] == [1, 2]


def test_one_epoch_lowers_the_training_loss(faces_dir):
    rows = pq.read_table(str(faces_dir / "faces")).to_pylist()[:48]
    samples = [CropSample(r["crop_png"], int(r["label"] == "fake"), r["video_id"]) for r in rows]
    torch.manual_seed(0)
    model = FrameModel("efficientnet-b0", dropout=0.0)
    preprocess = FacePreprocess(input_size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    loss_fn = FrameLoss()
    # Fixed batches: in train mode BatchNorm uses batch statistics, so the loss is only
    # comparable before and after when the batches are the same.
    loader = crop_loader(CropDataset(samples), batch_size=16, shuffle=False, workers=0, seed=0)

    def mean_loss():
        model.train()  # batch statistics, as in training
        with torch.no_grad():
            losses = [float(loss_fn(model(preprocess(c))["logits"], None, y)["loss"]) * len(y) for c, y, _ in loader]
        return sum(losses) / len(samples)

    before = mean_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    train_frame_epoch(model, loader, preprocess, loss_fn, optimizer, torch.device("cpu"))
    assert mean_loss() < before


def test_weight_ema_averages_the_steps():
    from models.training import weight_ema

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = weight_ema(model, decay=0.5)
    for value in (1.0, 1.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update_parameters(model)
    # the first update copies the weights, later ones move halfway: 0 -> 1 -> 1
    assert float(ema.module.weight) == pytest.approx(1.0)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)
    assert float(ema.module.weight) == pytest.approx(2.0)


def test_recalibrated_batchnorm_matches_the_data():
    from models.frame import calibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4, momentum=0.01))
    batches = [torch.randn(8, 3, 5, 5) * 3 + 2 for _ in range(4)]
    calibrate_batchnorm(model, iter(batches))
    features = torch.cat([model[0](b) for b in batches]).detach()
    bn = model[1]
    assert torch.allclose(bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.01 and model.training  # settings restored
    assert torch.allclose(bn.running_var, features.var(dim=(0, 2, 3)), rtol=0.05)


def test_early_stopping():
    stop = EarlyStopping(patience=2, mode="min")
    assert [stop.step(v) for v in (1.0, 0.8, 0.9, 0.85)] == [True, True, False, False]
    assert stop.should_stop and stop.best == 0.8
    again = EarlyStopping(patience=2, mode="max")
    again.load_state_dict(stop.state_dict())
    assert again.bad_epochs == 2


def test_metrics_from_verdict_rows():
    from pipeline.datasets import LabelledVideo

    videos = [LabelledVideo(f"/v{i}.mp4", l, m, f"g{i}", "test", f"v{i}")
              for i, (l, m) in enumerate([("real", ""), ("real", ""), ("fake", "self_blend"), ("fake", "face_swap"), ("fake", "face_swap")])]
    scores = [0.1, 0.4, 0.35, 0.8, 0.9]
    rows = [{"uri": v.uri, "score": s, "status": "ok", "threshold": 0.5,
             "tracks": [{"scores": [s, s]}]} for v, s in zip(videos, scores)]
    rows.append({"uri": "/v5.mp4", "score": None, "status": "no_face", "threshold": 0.5, "tracks": []})
    videos.append(LabelledVideo("/v5.mp4", "real", "", "g5", "test", "v5"))
    m = compute_metrics(videos, rows)
    assert m["video_auc"] == pytest.approx(5 / 6)  # pairs: (0.1<all fakes) 3, (0.4 > 0.35) 2 of 3
    assert m["frame_auc"] == pytest.approx(5 / 6)
    assert m["videos_scored"] == 5 and m["unscored_by_status"] == {"no_face": 1}
    assert m["video_accuracy"] == pytest.approx(0.8)
    assert m["confusion"] == [[2, 0], [1, 2]]
    assert m["per_manipulation"]["face_swap"]["auc_vs_real"] == pytest.approx(1.0)
    assert m["per_manipulation"]["self_blend"]["auc_vs_real"] == pytest.approx(0.5)
    for key in ("video_auc", "video_ap", "video_accuracy", "video_log_loss", "eer", "frame_auc"):
        assert key in m


def test_evaluate_command_writes_metrics(faces_dir, tiny_set, tmp_path, capsys):
    data, _ = tiny_set
    checkpoint = run_train(_tiny_config(faces_dir, tmp_path / "train"))
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", checkpoint, "--data", str(data / "manifest.csv"), "--split", "test",
                 "--output", str(out), *[a for o in FAST_SCAN for a in ("--set", o)]])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "test" and metrics["videos"] >= 2
    for key in ("video_auc", "video_ap", "video_accuracy", "video_log_loss", "eer", "frame_auc"):
        assert key in metrics
    assert metrics["model_name"] == "deepfake-scan-model"
    assert "AUC" in capsys.readouterr().out


def test_fine_tuning_starts_from_a_checkpoints_weights(tmp_path):
    from models.card import ModelCard
    from models.checkpoint import save_checkpoint
    from pipeline.train import _initial_frame_model

    torch.manual_seed(3)
    start = FrameModel("efficientnet-b0")
    card = ModelCard(name="start", frame_arch="efficientnet-b0", input_size=64, aggregator="mean", sequence_arch=None)
    save_checkpoint(str(tmp_path / "start.pt"), card, start)
    config = load_config(TrainConfig, None, [f"model.init={tmp_path / 'start.pt'}", "model.manipulation_head=true"])
    target = ModelCard(name="t", frame_arch="efficientnet-b0", input_size=64, manipulation_classes=("a", "b"))
    model = _initial_frame_model(config, target)
    mine, theirs = model.state_dict(), start.state_dict()
    assert torch.equal(mine["backbone._conv_stem.weight"], theirs["backbone._conv_stem.weight"])
    assert torch.equal(mine["head.weight"], theirs["head.weight"])
    assert model.manipulation_head is not None  # a head the start did not have begins afresh
    wrong = load_config(TrainConfig, None, [f"model.init={tmp_path / 'start.pt'}", "model.arch=efficientnet-b1"])
    with pytest.raises(ValueError, match="efficientnet-b0 checkpoint"):
        _initial_frame_model(wrong, ModelCard(name="t", frame_arch="efficientnet-b1", input_size=64))
