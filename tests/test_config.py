"""Configuration: YAML -> validated dataclass -> overrides, and its one-line errors."""
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, ScanConfig, dump_config, load_config, to_dict

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_yaml_is_the_builtin_default():
    assert to_dict(load_config(ScanConfig, str(CONFIGS / "scan.yaml"))) == to_dict(ScanConfig())


def test_every_shipped_config_loads():
    """Training configs (train_*.yaml) as a TrainConfig, the others as a ScanConfig."""
    from pipeline.train_config import TrainConfig

    paths = sorted(CONFIGS.glob("*.yaml"))
    assert {"scan.yaml", "train_demo.yaml"} <= {p.name for p in paths}
    for path in paths:
        if path.name.startswith("train_"):
            config = load_config(TrainConfig, str(path))
            # the augment section loads straight into models.augment.AugmentConfig, key for key
            written = yaml.safe_load(path.read_text()).get("augment", {})
            assert {k: getattr(config.augment, k) for k in written} == written, path
            continue
        faces = load_config(ScanConfig, str(path)).faces
        # crops come from the checkpoint's card: no shipped config pins them
        assert faces.crop_size is None and faces.margin is None, path


def test_training_config_round_trips_and_refuses_bad_augmentation_in_one_line(tmp_path):
    from models.augment import AugmentConfig
    from pipeline.train_config import TrainConfig

    config = load_config(TrainConfig, str(CONFIGS / "train_demo.yaml"), ["augment.blur_sigma=[0.5, 2]"])
    assert isinstance(config.augment, AugmentConfig) and config.augment.blur_sigma == [0.5, 2.0]
    dump_config(config, str(tmp_path / "config.yaml"))  # what 'train' writes to OUTPUT/config.yaml
    assert load_config(TrainConfig, str(tmp_path / "config.yaml")) == config
    for overrides, message in [
        (["augment.blur_p=2"], "config section 'augment': blur_p must be in [0, 1], got 2.0"),
        (["augment.jpeg_quality=[90, 40]"], "config section 'augment': jpeg_quality: low 90.0 > high 40.0"),
        (["augment.sbi_mask_outlines=[star]"], "config section 'augment': sbi_mask_outlines must name some of"),
        (["augment.margin=0.3"], "unknown config key 'augment.margin'"),  # the crops' margin, never a setting
        (["augment.blur_sigma=0.5"], "config key 'augment.blur_sigma' must be a list"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(TrainConfig, None, overrides)
        assert message in str(info.value) and "\n" not in str(info.value)


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("faces:\n  crop_size: 380\nsampling:\n  max_clips: 2\n")
    config = load_config(ScanConfig, str(path), ["sampling.max_clips=3", "model.checkpoint=/x.pt"])
    assert config.faces.crop_size == 380
    assert config.sampling.max_clips == 3
    assert config.model.checkpoint == "/x.pt"
    assert config.faces.margin is None


def test_crop_settings_must_agree_with_the_crop_spec_in_one_line():
    from models.crops import CropSpec

    aligned, box = CropSpec("aligned", 224, margin=0.25), CropSpec("box", 380)
    load_config(ScanConfig).faces.check_crop(box, "checkpoint x.pt")  # unset: anything goes
    load_config(ScanConfig, None, ["faces.crop_size=224", "faces.margin=0.25"]).faces.check_crop(aligned, "x")
    cases = [
        (["faces.crop_size=224"], box, "faces.crop_size=224 disagrees with checkpoint x.pt, whose crops are box 380"),
        (["faces.margin=0.25"], box, "faces.margin=0.25 disagrees with checkpoint x.pt, whose crops are box 380"),
        (["faces.margin=0.3"], aligned, "faces.margin=0.3 disagrees with checkpoint x.pt, whose crops are aligned"),
        (["faces.crop_size=380", "faces.margin=0.3"], aligned, "faces.crop_size=380 and faces.margin=0.3 disagree"),
    ]
    for overrides, spec, message in cases:
        with pytest.raises(ConfigError) as info:
            load_config(ScanConfig, None, overrides).faces.check_crop(spec, "checkpoint x.pt")
        text = str(info.value)
        assert message in text and "checkpoint x.pt" in text and spec.describe() in text and "\n" not in text


def test_effective_config_round_trips(tmp_path):
    config = load_config(ScanConfig, None, ["aggregate.threshold=0.7", "faces.mtcnn_thresholds=[0.5, 0.6, 0.7]"])
    dump_config(config, str(tmp_path / "config.yaml"))
    again = load_config(ScanConfig, str(tmp_path / "config.yaml"))
    assert again == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["aggregate"]["threshold"] == 0.7


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["faces.crop_sise=224"], "unknown config key 'faces.crop_sise'"),
        (["sampling.clip_len=abc"], "'sampling.clip_len' must be an integer"),
        (["sampling.clip_len=2.5"], "'sampling.clip_len' must be an integer"),
        (["faces.margin=true"], "'faces.margin' must be a number"),
        (["sampling.policy=random"], "must be one of clips, uniform"),
        (["model.device=tpu"], "must be one of auto, cpu, cuda"),
        (["faces.min_confidence=1.5"], "between 0 and 1"),
        (["sampling.clip_len=0"], "must be positive"),
        (["faces=3"], "faces must be a mapping"),
        (["nonsense"], "not of the form"),
        (["faces.mtcnn_thresholds=[0.5]"], "three numbers"),
        (["faces.crop_size=0"], "'faces.crop_size' must be positive"),
        (["faces.min_judge_size=0"], "'faces.min_judge_size' must be positive"),
    ],
)
def test_bad_values_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(ScanConfig, None, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(ScanConfig, str(tmp_path / "missing.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(ScanConfig, str(tmp_path / "list.yaml"))
    (tmp_path / "broken.yaml").write_text("faces: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ScanConfig, str(tmp_path / "broken.yaml"))
    (tmp_path / "typo.yaml").write_text("face:\n  crop_size: 224\n")
    with pytest.raises(ConfigError, match="unknown config key 'face'"):
        load_config(ScanConfig, str(tmp_path / "typo.yaml"))
