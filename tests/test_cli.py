"""The command-line contract: `drmm train` / `drmm eval` and one-line errors with exit code 2."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from drmm.cli import build_parser, config_from_args, main
from drmm.config import CHOICES, TrainConfig
from drmm.config_args import flag_fields
from drmm.data.preprocess import PREPROCESS


def test_train_digits_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--labels", "50", "--epochs", "1", "--seed", "0",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_error_percent", "epochs", "labels", "seed"} <= set(metrics)
    assert (metrics["epochs"], metrics["labels"], metrics["seed"]) == (1, 50, 0)
    assert 0.0 <= metrics["test_error_percent"] <= 100.0
    for name in ("labeled_indices.npy", "checkpoint.pt", "reconstructions.png", "metrics.jsonl"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt")]) == 0
    printed = capsys.readouterr().out
    assert f"test error {metrics['test_error_percent']:.2f} %" in printed


@pytest.mark.parametrize("args,msg", [
    (["--labels", "55"], "not divisible"),
    (["--labels", "5000"], "more than"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--data-dir", "/no/such/dir"], "does not exist"),
    (["--batch-size", "99"], "even"),
    (["--config", "/no/such.yaml"], "does not exist"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys, args, msg):
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], lines


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    """The real entry point (`python -m drmm`, a new process): exit code 2, one line."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lerning_rate: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "drmm", "train", "--out", str(tmp_path / "r"),
                           "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key train.lerning_rate" in lines[0], proc.stderr


def test_every_setting_has_a_flag_with_its_choices_and_help():
    """The flags are the config: one per field, documented by the field's comment."""
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items()
                 if a[0] == "train")[1]
    by_dest = {a.dest: a for a in train._actions}
    for section, f in flag_fields():
        action = by_dest[f"config:{section}.{f.name}"]
        assert action.help, f.name
        allowed = [c for c in CHOICES.get(f"{section}.{f.name}", ()) if c is not None]
        assert list(action.choices or []) == allowed, f.name
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= {
        f.name for s, f in flag_fields() if s == "train"}


@pytest.mark.parametrize("mode", PREPROCESS)
def test_every_preprocess_mode_is_offered_on_the_command_line(mode):
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "x", "--preprocess", mode])
    assert config_from_args(args).train.preprocess == mode
    args = parser.parse_args(["reproduce", "table1", "--out", "x", "--preprocess", mode])
    assert args.preprocess == mode


def test_flags_override_the_preset_and_booleans_have_no_forms():
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(
        ["train", "--dataset", "mnist", "--decay", "exp", "--lr", "0.3", "--no-tensorboard",
         "--supervised-only", "--no-channels-last", "--alpha-rc", "0.5", "--arch", "conv_large"]))
    assert (cfg.train.dataset, cfg.train.decay, cfg.train.lr) == ("mnist", "exp", 0.3)
    assert cfg.train.optimizer == "adam"  # the mnist preset's, not overridden
    assert not cfg.train.tensorboard and cfg.train.supervised_only and not cfg.train.channels_last
    assert (cfg.loss.alpha_rc, cfg.model.arch) == (0.5, "conv_large")
    untouched = config_from_args(parser.parse_args(["train", "--dataset", "mnist"]))
    assert untouched.train.tensorboard and untouched.train.decay == "cosine"


def test_a_renamed_yaml_key_says_its_new_name(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train:\n  schedule: exp\n")
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "renamed train.decay" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_clear_error():
    from drmm.errors import DRMMError, require_device

    require_device("cpu")
    with pytest.raises(DRMMError, match="no CUDA device is available; use --device cpu"):
        require_device("cuda:0")
