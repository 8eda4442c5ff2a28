"""The training job end to end on a tiny generated set: extract, train, resume, evaluate.

The jobs run as a user runs them, through ``pipeline.cli.main``: ``extract`` and
``train`` with ``--set`` overrides, ``--seed`` and ``--resume``.
"""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline

from models.checkpoint import load_checkpoint
from models.crops import CropSpec
from models.frame import FrameModel
from models.losses import FrameLoss
from models.preprocess import FacePreprocess
from models.preprocess import decode_crop
from models.training import CropDataset, CropSample, EarlyStopping, crop_loader, train_frame_epoch
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.datasets import load_dataset
from pipeline.evaluate import compute_metrics, format_table
from pipeline.crop_record import read_crop_spec
from pipeline.train_config import TrainConfig
from pipeline.synthetic.trainset import generate_training_set
from transforms.face_table import FACE_SCHEMA

FAST_SCAN = ["--set", "faces.detect_size=320"]
ROWS_PER_GROUP = 16


def _set(*settings) -> list[str]:
    """``--set`` flags for ``key=value`` settings."""
    return [a for item in settings for a in ("--set", str(item))]


def _train(*settings, resume=None) -> str:
    """``deepfake-scan train --set ...`` (``--resume`` when given); returns the checkpoint it wrote."""
    assert main(["train", *_set(*settings), *(["--resume", str(resume)] if resume else [])]) == 0
    output = [s.split("=", 1)[1] for s in map(str, settings) if s.startswith("output=")][-1]
    return f"{output}/model.pt"


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("trainset")
    items = generate_training_set(str(out), identities=5, seconds=1.2, seed=1)
    return out, items


@pytest.fixture(scope="module")
def faces_dir(tiny_set, tmp_path_factory):
    """Crops cut at the tiny training config's input size (aligned, 64 px) by ``extract --train-config``."""
    data, items = tiny_set
    train_yaml = tmp_path_factory.mktemp("train_config") / "tiny.yaml"
    train_yaml.write_text("model:\n  input_size: 64\n")
    out = tmp_path_factory.mktemp("faces")
    with pytest.MonkeyPatch.context() as patch:  # small row groups: training streams many of them
        patch.setattr("pipeline.extract.FACE_ROWS_PER_GROUP", ROWS_PER_GROUP)
        assert main(["extract", "--data", str(data / "manifest.csv"), "--output", str(out),
                     "--train-config", str(train_yaml), *FAST_SCAN], test_pipeline=TestPipeline()) == 0
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
    # extract writes row groups of bounded size, the units training streams
    groups = [pq.ParquetFile(p).metadata for p in sorted((faces_dir / "faces").glob("*.parquet"))]
    sizes = [m.row_group(g).num_rows for m in groups for g in range(m.num_row_groups)]
    assert max(sizes) <= ROWS_PER_GROUP and sum(sizes) == table.num_rows and len(sizes) > 1
    rows = table.to_pylist()
    by_uri = {i.uri: i for i in items}
    assert {r["uri"] for r in rows} == set(by_uri)  # every generated video gave faces
    for row in rows[:: max(1, len(rows) // 20)]:
        item = by_uri[row["uri"]]
        assert (row["label"], row["split"], row["group"]) == (item.label, item.split, item.group)
        crop = decode_crop(row["crop_png"])
        assert crop.shape == (64, 64, 3) and row["crop_size"] == 64
    videos = pq.read_table(str(faces_dir / "videos")).to_pylist()
    assert len(videos) == len(items) and {v["status"] for v in videos} == {"ok"}
    assert read_crop_spec(str(faces_dir)) == CropSpec("aligned", 64, margin=0.25)


def test_extract_cuts_the_crops_the_training_config_names(tiny_set, tmp_path, capsys):
    """``extract --train-config`` with box crops: box crops in the table, the spec in crop.json.

    The manifest names no splits, so ``extract --seed`` decides them.
    """
    from models.crops import cut_box_crop
    from pipeline.datasets import DEFAULT_SPLIT_SEED
    from transforms.decoders import DecordDecoder

    data, items = tiny_set
    manifest = tmp_path / "two.csv"
    chosen = [next(i for i in items if i.label == label) for label in ("real", "fake")]
    manifest.write_text("uri,label\n" + "".join(f"{i.uri},{i.label}\n" for i in chosen))
    train_yaml = tmp_path / "train_box.yaml"
    train_yaml.write_text("model:\n  input_size: 96\n  crop_policy: box\n  box_margins: [0.1, 0.2, 0.1, 0.05]\n")
    out = tmp_path / "faces"

    def splits(seed: int) -> dict[str, str]:
        return {v.uri: v.split for v in load_dataset(str(manifest), seed=seed)}

    seed = next(s for s in range(1, 100) if splits(s) != splits(DEFAULT_SPLIT_SEED))  # one that moves a video
    scan_flags = FAST_SCAN + ["--seed", str(seed)]
    # a scan config that pins another crop size stops in one line, before anything is written
    assert main(["extract", "--data", str(manifest), "--output", str(out), "--train-config", str(train_yaml),
                 *scan_flags, "--set", "faces.crop_size=224"]) == 2
    err = capsys.readouterr().err.strip()
    assert "faces.crop_size=224 disagrees with training config" in err and len(err.splitlines()) == 1
    assert not out.exists()

    assert main(["extract", "--data", str(manifest), "--output", str(out), "--train-config", str(train_yaml),
                 *scan_flags]) == 0
    spec = CropSpec("box", 96, box_margins=(0.1, 0.2, 0.1, 0.05))
    assert json.loads((out / "crop.json").read_text()) == {
        "policy": "box", "size": 96, "margin": 0.25, "box_margins": [0.1, 0.2, 0.1, 0.05]}
    assert read_crop_spec(str(out)) == spec
    rows = pq.read_table(str(out / "faces")).to_pylist()
    assert {r["uri"] for r in rows} == {i.uri for i in chosen} and {r["crop_size"] for r in rows} == {96}
    assert {r["uri"]: r["split"] for r in rows} == splits(seed)
    # each crop is the box crop of its decoded frame at the recorded box (PNG is lossless)
    for row in (rows[0], rows[-1]):
        frame = DecordDecoder(row["uri"], max_side=1920, max_pixels=10**8).read([row["frame_index"]]).frames[0]
        np.testing.assert_array_equal(decode_crop(row["crop_png"]), cut_box_crop(frame, row["box"], spec))


def test_read_crop_spec_of_older_and_broken_face_tables(tmp_path):
    from pipeline.config import ConfigError

    assert read_crop_spec(str(tmp_path)) == CropSpec("aligned", 224, margin=0.25)  # before crop.json: the defaults
    (tmp_path / "config.yaml").write_text("faces:\n  crop_size: 380\n  margin: 0.3\n")
    assert read_crop_spec(str(tmp_path)) == CropSpec("aligned", 380, margin=0.3)  # ... or what its config said
    (tmp_path / "crop.json").write_text('{"policy": "round", "size": 96, "margin": 0.25, "box_margins": [0, 0, 0, 0]}')
    with pytest.raises(ConfigError, match="does not say how the crops were cut") as info:
        read_crop_spec(str(tmp_path))
    assert "\n" not in str(info.value)


def _tiny(faces_dir, out, *more) -> list[str]:
    """Settings of a quick training run on the tiny face table (64 px crops, one frame epoch)."""
    return [
        f"data.faces={faces_dir}", f"output={out}", "model.input_size=64", "model.dropout=0.0",
        "frame.epochs=1", "frame.batch_size=8", "frame.workers=0", "data.frames_per_track=4",
        "data.val_frames_per_track=4", "sequence.epochs=3", "sequence.hidden_dim=16", "device=cpu",
        "frame.contrastive_weight=0.1", "model.manipulation_head=true", *more,
    ]


def test_train_writes_a_scan_checkpoint_and_resumes(faces_dir, tmp_path):
    path = _train(*_tiny(faces_dir, tmp_path, "frame.ema_decay=0.9", "seed=3"))
    loaded = load_checkpoint(path)
    card = loaded.card
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (choice,) = [l for l in lines if l["stage"] == "aggregator"]  # validation chose BiLSTM or mean
    assert choice["chosen"] == ("bilstm" if choice["val_video_auc_bilstm"] > choice["val_video_auc_mean"] else "mean")
    assert card.input_size == 64 and card.aggregator == choice["chosen"]
    assert (loaded.sequence_model is not None) == (choice["chosen"] == "bilstm")
    assert 0 < card.threshold < 1 and card.temperature > 0
    train_fakes = {r["manipulation"] for r in pq.read_table(str(faces_dir / "faces")).to_pylist()
                   if r["split"] == "train" and r["label"] == "fake"}
    assert set(card.manipulation_classes) == train_fakes | {"self_blend"}  # the table's and the augmentation's
    assert {"config", "data", "validation", "temperature", "threshold"} <= set(card.training)
    assert card.training["data"]["train"]["videos"] > 0
    # The operating point was chosen on the validation videos as the scan's aggregation scores them.
    point = card.operating_point
    assert point["threshold"] == card.threshold and point["target_fpr"] == 0.01
    assert (point["aggregator"], point["strategy"]) == (card.aggregator, "max")
    scores, labels, _ = _scan_scores(path, str(faces_dir))
    assert point["val_videos"] == len(scores) == card.training["data"]["val"]["videos"]
    assert point["val_fpr"] <= 0.01 and point["val_fpr"] == float(np.mean(scores[labels == 0] >= card.threshold))
    if scores[labels == 0].max() < scores[labels == 1].min():
        assert point["method"] == "gap_midpoint"
        assert scores[labels == 0].max() < card.threshold < scores[labels == 1].min()
    assert [l["epoch"] for l in lines if l["stage"] == "frame"] == [1]
    assert any(l["stage"] == "sequence" for l in lines) and lines[-1]["stage"] == "calibration"
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "state.pt").exists()
    # --set seed=3 is the run's seed: in the effective config, the card and the state file
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert card.training["config"]["seed"] == state["config"]["seed"] == 3
    assert load_config(TrainConfig, str(tmp_path / "config.yaml")).seed == 3
    # --resume: one more frame epoch, continuing where the state file left off
    assert int(state["ema"]["n_averaged"]) > 0  # the weight average travels with the state
    _train(*_tiny(faces_dir, tmp_path, "frame.epochs=2", "frame.ema_decay=0.9", "seed=3"),
           resume=tmp_path / "state.pt")
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines if l["stage"] == "frame"] == [1, 2]
    assert load_config(TrainConfig, str(tmp_path / "config.yaml")).resume == str(tmp_path / "state.pt")


@pytest.mark.parametrize("select_on", ["auc", "log_loss"])
def test_early_stopping_keeps_the_epoch_its_validation_figure_prefers(faces_dir, tmp_path, select_on):
    _train(*_tiny(faces_dir, tmp_path, "frame.epochs=3", "frame.patience=3", "frame.lr=0.003",
                  f"frame.select_on={select_on}", "sequence.enabled=false"))
    frames = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()
              if json.loads(l)["stage"] == "frame"]
    values = [f["val_auc" if select_on == "auc" else "val_log_loss"] for f in frames]
    best = None
    for frame, value in zip(frames, values):  # "best" marks each new maximum AUC (minimum loss)
        better = best is None or (value > best if select_on == "auc" else value < best)
        assert frame["best"] == better, (select_on, values, [f["best"] for f in frames])
        best = value if better else best
    assert load_config(TrainConfig, str(tmp_path / "config.yaml")).frame.select_on == select_on


def test_an_unknown_selection_figure_stops_in_one_line(faces_dir, tmp_path, capsys):
    assert main(["train", *_set(*_tiny(faces_dir, tmp_path, "frame.select_on=accuracy"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "frame.select_on" in err[0] and "auc" in err[0]


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
            losses = [float(loss_fn(model(preprocess(b.crops))["logits"], None, b.targets)["loss"]) * len(b)
                      for b in loader]
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
    rows = [{"uri": v.uri, "media_type": "video", "score": s, "status": "ok", "threshold": 0.5,
             "tracks": [{"scores": [s, s]}]} for v, s in zip(videos, scores)]
    rows.append({"uri": "/v5.mp4", "media_type": "video", "score": None, "status": "no_face", "threshold": 0.5,
                 "tracks": []})
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


def test_metrics_label_each_verdict_with_its_own_threshold():
    """Stills are labelled with their own threshold: accuracy must not depend on which row comes first."""
    from pipeline.datasets import LabelledVideo

    specs = [("/real.jpg", "real", "image", 0.80, 0.95), ("/fake.mp4", "fake", "video", 0.80, 0.70),
             ("/real.mp4", "real", "video", 0.20, 0.70)]
    videos = [LabelledVideo(u, l, "x" if l == "fake" else "", u, "test", u) for u, l, _, _, _ in specs]
    rows = [{"uri": u, "media_type": kind, "score": s, "status": "ok", "threshold": t, "tracks": [{"scores": [s]}]}
            for u, _, kind, s, t in specs]
    for order in (rows, rows[::-1]):
        m = compute_metrics(videos, order)
        assert m["video_accuracy"] == 1.0 and m["confusion"] == [[2, 0], [0, 1]]
        assert m["per_manipulation"]["x"]["recall"] == 1.0
        assert m["threshold"] == 0.70 and m["thresholds_by_media_type"] == {"image": 0.95, "video": 0.70}
    assert "threshold 0.700 (images 0.950)" in format_table(m)


def test_evaluate_command_writes_metrics(faces_dir, tiny_set, tmp_path, capsys):
    data, _ = tiny_set
    checkpoint = _train(*_tiny(faces_dir, tmp_path / "train"))
    out = tmp_path / "metrics.json"
    code = main(["evaluate", "--checkpoint", checkpoint, "--data", str(data / "manifest.csv"), "--split", "test",
                 "--output", str(out), *FAST_SCAN])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "test" and metrics["videos"] >= 2
    assert metrics["split_source"] == "data"  # the generated manifest names its splits
    assert metrics["selection"] == f"split test: {metrics['videos']} of {metrics['videos_in_data']} videos " \
                                   "(splits from the data)"
    for key in ("video_auc", "video_ap", "video_accuracy", "video_log_loss", "eer", "frame_auc"):
        assert key in metrics
    assert metrics["model_name"] == "deepfake-scan-model"
    printed = capsys.readouterr().out
    assert "AUC" in printed and f"data: {metrics['selection']}" in printed


def test_fine_tuning_starts_from_a_checkpoints_weights(tmp_path):
    from models.card import ModelCard
    from models.checkpoint import save_checkpoint
    from pipeline.frame_stage import initial_frame_model

    torch.manual_seed(3)
    start = FrameModel("efficientnet-b0")
    card = ModelCard(name="start", frame_arch="efficientnet-b0", input_size=64, aggregator="mean", sequence_arch=None)
    save_checkpoint(str(tmp_path / "start.pt"), card, start)
    config = load_config(TrainConfig, None, [f"model.init={tmp_path / 'start.pt'}", "model.manipulation_head=true"])
    target = ModelCard(name="t", frame_arch="efficientnet-b0", input_size=64, manipulation_classes=("a", "b"))
    model = initial_frame_model(config, target)
    mine, theirs = model.state_dict(), start.state_dict()
    assert torch.equal(mine["backbone._conv_stem.weight"], theirs["backbone._conv_stem.weight"])
    assert torch.equal(mine["head.weight"], theirs["head.weight"])
    assert model.manipulation_head is not None  # a head the start did not have begins afresh
    wrong = load_config(TrainConfig, None, [f"model.init={tmp_path / 'start.pt'}", "model.arch=efficientnet-b1"])
    with pytest.raises(ValueError, match="efficientnet-b0 checkpoint"):
        initial_frame_model(wrong, ModelCard(name="t", frame_arch="efficientnet-b1", input_size=64))


# --- calibration through the scan's own code, on a synthetic face table ---------------------


def _synthetic_faces(root, crop: CropSpec = CropSpec("aligned", 32), frames: int = 4) -> str:
    """A face table of plain crops, recorded as cut like ``crop``: fakes carry a red patch a model learns fast."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.preprocess import encode_crop
    from pipeline.crop_record import write_crop_spec

    size = crop.size
    rng = np.random.default_rng(0)
    rows = []
    videos = [("train", i) for i in range(8)] + [("val", i) for i in range(8)]
    for split, i in videos:
        label = "fake" if i % 2 else "real"
        video_id = f"{split}_{label}_{i}"
        for track_id in range(1 + i % 2):  # fakes have two faces: the SBI rule and max see both
            side = 80.0 - 30.0 * track_id
            for frame in range(frames):
                pixels = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
                if label == "fake":
                    pixels[size // 4 : -size // 4, size // 4 : -size // 4, 0] = 250
                rows.append({
                    "video_id": video_id, "uri": f"/data/{video_id}.mp4", "group": video_id, "split": split,
                    "label": label, "manipulation": "self_blend" if label == "fake" else "",
                    "track_id": track_id, "clip_index": 0, "frame_index": 3 * frame, "timestamp": 3 * frame / 25,
                    "box": [100.0 * track_id, 10.0, 100.0 * track_id + side, 10.0 + side],
                    "crop_png": encode_crop(pixels), "crop_size": size,
                })
    (root / "faces").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=FACE_SCHEMA), str(root / "faces" / "part-00000.parquet"))
    (root / "faces" / "_SUCCESS").write_text("")
    write_crop_spec(str(root), crop)
    return str(root)


def _synthetic(faces, out, *more) -> list[str]:
    """Settings of a quick training run on a synthetic face table (32 px crops, no augmentation)."""
    return [f"data.faces={faces}", f"output={out}", "model.input_size=32", "model.dropout=0.0", "device=cpu",
            "frame.epochs=2", "frame.batch_size=8", "frame.workers=0", "frame.lr=0.003", "frame.ema_decay=0.5",
            "data.frames_per_track=4", "data.val_frames_per_track=4", "data.max_tracks_per_video=1",
            "sequence.epochs=4", "sequence.hidden_dim=8", "augment.sbi_p=0", "augment.blur_p=0",
            "augment.jpeg_p=0", "augment.downscale_p=0", "augment.color_jitter_p=0", *more]


def _scan_scores(path: str, faces: str):
    """Validation videos scored by the scan's aggregation stage with the saved checkpoint."""
    import numpy as np

    from models.device import resolve_device
    from models.inference import FramePredictor
    from transforms.aggregate import AggregateVerdictsFn
    from transforms.elements import OK, ExtractedMedia, FaceScore, FaceTrackCrops, MediaInfo, ScoredMedia
    from transforms.verdicts import RunInfo

    frames = FramePredictor(load_checkpoint(path), resolve_device("cpu"), precision="fp32")
    fn = AggregateVerdictsFn(path, "max", RunInfo("calibration-check", "m", None, "0", threshold=0.5))
    fn.setup()
    by_video = {}  # video id -> (a row, its tracks' rows in frame order, tracks in id order)
    rows = pq.read_table(f"{faces}/faces").to_pylist()
    for row in sorted((r for r in rows if r["split"] == "val"), key=lambda r: (r["track_id"], r["frame_index"])):
        meta, tracks = by_video.setdefault(row["video_id"], (row, {}))
        tracks.setdefault(row["track_id"], []).append(row)
    by_video = {v: (meta, list(tracks.values())) for v, (meta, tracks) in by_video.items()}
    scores, labels, aggregators = [], [], set()
    for video_id, (meta, tracks) in sorted(by_video.items()):
        elements, faces_scores = [], []
        for track in tracks:
            probs, embeddings = frames(np.stack([decode_crop(r["crop_png"]) for r in track]))
            elements.append(FaceTrackCrops(
                track_id=track[0]["track_id"], clip_index=0, frame_indices=tuple(r["frame_index"] for r in track),
                timestamps=tuple(r["frame_index"] / 25 for r in track), boxes=np.array([r["box"] for r in track], np.float32),
                detection_scores=np.ones(len(track), np.float32), crops=None))
            faces_scores.append(tuple(FaceScore(float(p), e, "cpu") for p, e in zip(probs, embeddings)))
        item = ExtractedMedia(MediaInfo(f"/data/{video_id}.mp4", "video"), OK, tracks=tuple(elements))
        (row,) = fn.process(ScoredMedia(item, tuple(faces_scores)))
        scores.append(row["score"])
        labels.append(int(meta["label"] == "fake"))
        aggregators.add(row["aggregator"])
    return np.array(scores), np.array(labels), aggregators


BOX_MARGINS = (0.1, 0.2, 0.1, 0.0)


@pytest.mark.parametrize("aggregator", ["bilstm", "mean"])
def test_calibration_scores_validation_as_the_scan_does(tmp_path, aggregator):
    import math

    from models.metrics import operating_point

    # The BiLSTM is kept whatever validation says, so the bilstm case calibrates a bilstm card.
    crop, overrides = CropSpec("aligned", 32), ["calibration.target_fpr=0.05", "sequence.select_on_validation=false"]
    if aggregator == "mean":  # no sequence model; and box crops, whose card must say so
        crop = CropSpec("box", 32, box_margins=BOX_MARGINS)
        overrides += ["sequence.enabled=false", "model.crop_policy=box", "model.box_margins=[0.1,0.2,0.1,0.0]"]
    faces = _synthetic_faces(tmp_path / "faces", crop)
    path = _train(*_synthetic(faces, tmp_path / "train", *overrides))
    card = load_checkpoint(path).card
    assert card.crop == crop
    scores, labels, aggregators = _scan_scores(path, faces)
    assert aggregators == {card.aggregator} == {aggregator}
    # Every validation track counts (max_tracks_per_video=1 limits training only): the scan's
    # aggregation of the validation videos gives the card's operating point.
    point = operating_point(scores, labels, target_fpr=0.05)
    stored = card.operating_point
    assert stored["threshold"] == card.threshold == pytest.approx(point.threshold, rel=1e-5)
    assert (stored["method"], stored["val_fpr"], stored["val_tpr"]) == (point.method, point.val_fpr, point.val_tpr)
    assert (stored["val_videos"], stored["val_real"], stored["val_fake"]) == (8, 4, 4)
    assert (stored["target_fpr"], stored["aggregator"], stored["strategy"]) == (0.05, aggregator, "max")
    assert card.training["validation"]["video"]["threshold"] == card.threshold
    # The red patch separates the classes: the threshold is strictly inside the gap, at its
    # middle in logit space (never at its edge).
    reals, fakes = scores[labels == 0], scores[labels == 1]
    assert reals.max() < fakes.min(), f"synthetic validation not separable: {scores} {labels}"
    assert stored["method"] == "gap_midpoint" and (stored["val_fpr"], stored["val_tpr"]) == (0.0, 1.0)
    assert reals.max() < card.threshold < fakes.min()
    from models.metrics import _LOGIT_EPS

    # scores as confident as 1e-10 are clipped before the logit, as the operating point clips them
    logit = lambda p: math.log(min(max(p, _LOGIT_EPS), 1 - _LOGIT_EPS) / (1 - min(max(p, _LOGIT_EPS), 1 - _LOGIT_EPS)))  # noqa: E731,E501
    assert logit(card.threshold) == pytest.approx((logit(reals.max()) + logit(fakes.min())) / 2, abs=1e-4)


def test_training_stops_in_one_line_when_the_crops_are_not_the_configs(tmp_path, capsys):
    from pipeline.crop_record import write_crop_spec

    def stops(*settings: str) -> str:
        assert main(["train", *_set(*_synthetic(faces, tmp_path / "train", *settings))]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("deepfake-scan: error: ") and len(err.splitlines()) == 1
        assert not (tmp_path / "train").exists()  # stopped before any work
        return err

    faces = _synthetic_faces(tmp_path / "faces")
    cases = [
        (CropSpec("aligned", 64, 0.25), "holds aligned 64 px, margin 0.25 crops but the training config asks "
                                        "for aligned 32 px, margin 0.25"),
        (CropSpec("aligned", 32, 0.4), "margin 0.4"),
        (CropSpec("box", 32), "holds box 32 px"),
    ]
    for spec, message in cases:
        write_crop_spec(faces, spec)
        assert message in stops()
    # Box crops, as the config says, but self-blending needs the aligned template.
    write_crop_spec(faces, CropSpec("box", 32, box_margins=BOX_MARGINS))
    assert "augment.sbi_p=0.5 self-blends on the aligned face template" in stops(
        "model.crop_policy=box", "model.box_margins=[0.1,0.2,0.1,0.0]", "augment.sbi_p=0.5")


def test_imagenet_start_loads_the_backbone_and_its_normalisation(monkeypatch):
    """With a stand-in for models.pretrained: the lead runs the real weights after integration."""
    from types import SimpleNamespace

    from models import pretrained
    from models.card import ModelCard
    from pipeline.frame_stage import initial_frame_model, normalisation

    loaded = []
    monkeypatch.setattr(pretrained, "load_imagenet_backbone", lambda model: loaded.append(model) or model)
    monkeypatch.setattr(pretrained, "pretrained_config",
                        lambda arch: SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: ["efficientnet-b0"])
    config = load_config(TrainConfig, None, ["model.pretrained=imagenet"])
    assert normalisation(config) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    card = ModelCard(name="t", frame_arch="efficientnet-b0", input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    model = initial_frame_model(config, card)
    assert loaded == [model]
    plain = load_config(TrainConfig, None, [])
    assert normalisation(plain) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    initial_frame_model(plain, card)
    assert len(loaded) == 1
