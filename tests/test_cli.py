"""The command line itself: one spelling for a config on every command, and ``samples`` through it.

``extract`` and ``train`` run end to end through ``pipeline.cli.main`` in
``test_training_job.py``; here the parser's rules, and what each flag hands the
job, are checked without running the jobs.
"""
from __future__ import annotations

import argparse
import csv

import pytest

from pipeline.cli import build_parser, main

CONFIG_COMMANDS = ("scan", "extract", "train", "evaluate")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_every_command_that_takes_a_config_takes_it_one_way():
    """``--config YAML`` and a repeatable ``--set KEY=VALUE``; no other spelling of an override anywhere."""
    _, parsers = build_parser()
    assert set(CONFIG_COMMANDS) < set(parsers)
    for name, parser in parsers.items():
        options = _options(parser)
        if name in CONFIG_COMMANDS:
            assert options["--config"].metavar == "YAML", name
            override = options["--set"]
            assert isinstance(override, argparse._AppendAction) and override.dest == "overrides", name
            assert override.metavar == "KEY=VALUE", name
        else:
            assert "--config" not in options and "--set" not in options, name
        assert not any(a.metavar == "KEY=VALUE" for a in parser._actions if not a.option_strings), name
        assert not any("override" in flag for flag in options), name


def test_train_refuses_bare_overrides(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", "configs/train_demo.yaml", "frame.epochs=3"])
    assert stop.value.code == 2
    assert "unrecognized arguments: frame.epochs=3" in capsys.readouterr().err


def test_train_builds_its_config_from_yaml_then_each_set_then_resume(monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.setattr("pipeline.train.run_train", lambda config: seen.append(config) or "out/model.pt")
    path = tmp_path / "train.yaml"
    path.write_text("seed: 1\nframe:\n  epochs: 5\n  lr: 0.01\n")
    argv = ["train", "--config", str(path), "--set", "frame.epochs=2", "--set", "seed=7", "--set", "seed=8",
            "--set", "augment.blur_sigma=[0.5, 2]", "--resume", "state.pt"]
    assert main(argv) == 0
    (config,) = seen
    assert (config.frame.epochs, config.frame.lr, config.seed, config.resume) == (2, 0.01, 8, "state.pt")
    assert config.augment.blur_sigma == [0.5, 2.0]
    assert "checkpoint written to out/model.pt" in capsys.readouterr().out


@pytest.mark.parametrize("setting, message", [
    ("frame.epochs=0", "config key 'frame.epochs' must be positive"),
    ("augment.blur_p=2", "config section 'augment': blur_p must be in [0, 1]"),
    ("frame.epoch=3", "unknown config key 'frame.epoch'"),
])
def test_a_bad_training_setting_stops_in_one_line(setting, message, capsys):
    assert main(["train", "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepfake-scan: error: ") and message in err and "\n" not in err


def test_train_refuses_beam_options():
    with pytest.raises(SystemExit) as stop:
        main(["train", "--runner", "DirectRunner"])
    assert stop.value.code == 2


def test_samples_writes_the_small_archive_with_its_seed(sample_archive, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["samples", str(out), "--small", "--seed", "1"]) == 0
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert f"{len(rows)} samples written to {out}" in capsys.readouterr().out
    # The same archive as `generate_samples(small=True)` (conftest's, seed 0), drawn with seed 1.
    seed0_dir, seed0_items = sample_archive
    names = [r["uri"].rsplit("/", 1)[-1] for r in rows]
    assert names == [i.uri.rsplit("/", 1)[-1] for i in seed0_items]
    assert any((out / n).read_bytes() != (seed0_dir / n).read_bytes() for n in names)


def test_samples_hands_each_flag_to_its_generator(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr("pipeline.synthetic.trainset.generate_training_set",
                        lambda out, **kw: calls.append(("training", out, kw)) or [1, 2])
    monkeypatch.setattr("pipeline.synthetic.crossset.generate_cross_set",
                        lambda out, **kw: calls.append(("cross", out, kw)) or [1])
    out = str(tmp_path / "set")
    assert main(["samples", out, "--training-set", "--seed", "4", "--identities", "9", "--train-videos", "2"]) == 0
    assert main(["samples", out, "--cross-manipulation", "--seed", "4", "--identities", "9",
                 "--test-identities", "3"]) == 0
    assert calls == [
        ("training", out, {"seed": 4, "identities": 9, "train_videos": 2}),
        # the held-out identities are those the training set with the same --seed put in test
        ("cross", out, {"seed": 4, "max_identities": 3, "split_seed": 4, "lfw_identities": 9}),
    ]
    assert "2 samples written" in capsys.readouterr().out
    assert main(["samples", out, "--test-identities", "3"]) == 2
    assert "--test-identities needs --cross-manipulation" in capsys.readouterr().err
