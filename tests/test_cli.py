"""The command-line contract: `drmm train` / `drmm eval` and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest
import torch

from drmm.cli import build_parser, main
from drmm.data.preprocess import PREPROCESS


def test_train_digits_writes_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--labels", "50", "--epochs", "1", "--seed", "0",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_error", "epochs", "labels", "seed"} <= set(metrics)
    assert (metrics["epochs"], metrics["labels"], metrics["seed"]) == (1, 50, 0)
    assert 0.0 <= metrics["test_error"] <= 1.0
    for name in ("labeled_indices.npy", "checkpoint.pt", "reconstructions.png", "metrics.jsonl"):
        assert (out / name).is_file(), name
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt")]) == 0
    printed = capsys.readouterr().out
    assert f"test error {100 * metrics['test_error']:.2f} %" in printed


@pytest.mark.parametrize("args,msg", [
    (["--labels", "55"], "not divisible"),
    (["--labels", "5000"], "more than"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--data-dir", "/no/such/dir"], "does not exist"),
    (["--batch-size", "99"], "even"),
    (["--config", "/no/such.yaml"], "does not exist"),
])
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args, msg):
    proc = subprocess.run([sys.executable, "-m", "drmm", "train", "--out", str(tmp_path / "r"),
                           "--epochs", "1", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], proc.stderr


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lerning_rate: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "drmm", "train", "--out", str(tmp_path / "r"),
                           "--config", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown key train.lerning_rate" in proc.stderr


@pytest.mark.parametrize("mode", PREPROCESS)
def test_every_preprocess_mode_is_offered_on_the_command_line(mode):
    parser = build_parser()
    assert parser.parse_args(["train", "--out", "x", "--preprocess", mode]).preprocess == mode
    args = parser.parse_args(["reproduce", "table1", "--out", "x", "--preprocess", mode])
    assert args.preprocess == mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_clear_error():
    from drmm.errors import DRMMError, require_device

    require_device("cpu")
    with pytest.raises(DRMMError, match="no CUDA device is available; use --device cpu"):
        require_device("cuda:0")
