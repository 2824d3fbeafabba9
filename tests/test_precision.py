"""--precision auto: bf16 autocast where the CPU computes it natively, fp32 elsewhere; the
objective in float32 either way; the run's records say which precision it used and why."""

import json

import pytest
import torch
from helpers import fabricated, tiny_config

import drmm.precision
import drmm.train
from drmm.evaluate import confusion
from drmm.losses import StepContext, drmm_objective
from drmm.precision import cpu_has_native_bf16, resolve_precision, step_autocast
from drmm.train import train

CPU = torch.device("cpu")


def test_native_bf16_is_read_off_the_cpu_flags():
    assert not cpu_has_native_bf16("flags : fpu sse avx2 fma")
    assert cpu_has_native_bf16("flags : fpu avx512f avx512_bf16 amx_tile")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32"), (None, "fp32")])
def test_auto_follows_the_cpu(monkeypatch, native, expected):
    monkeypatch.setattr(drmm.precision, "cpu_has_native_bf16", lambda: native)
    precision, why = resolve_precision("auto", CPU)
    assert precision == expected and why.startswith("auto: ")


def test_auto_on_cuda_is_fp32_and_a_given_precision_is_kept(monkeypatch):
    monkeypatch.setattr(drmm.precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cuda"))[0] == "fp32"
    for given in ("fp32", "bf16"):
        assert resolve_precision(given, CPU) == (given, f"--precision {given}")


def test_the_objective_is_float32_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g, requires_grad=True)  # (B, K)
    images = torch.rand(6, 1, 4, 4, generator=g)  # (B, C, H, W)
    with step_autocast("bf16", CPU):
        rendered = torch.nn.functional.conv2d(images, torch.ones(1, 1, 1, 1))  # bf16 (B, 1, 4, 4)
        ctx = StepContext(logits @ torch.eye(3), torch.tensor([0, 1, 2, 0, 1, 2]),
                          logits_unsup=logits @ torch.eye(3), images=images, rendered=rendered,
                          templates=[rendered], loss_cfg=drmm.losses.LossConfig())
        assert ctx.logits_lab.dtype == torch.bfloat16 and rendered.dtype == torch.bfloat16
        terms = drmm_objective(ctx, {"ce": 1.0, "rc": 1.0, "kl": 1.0, "nn": 1.0})
    assert {k: v.dtype for k, v in terms.items()} == dict.fromkeys(terms, torch.float32)
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_records_say_which_precision_and_why(tmp_path, monkeypatch, native, expected):
    monkeypatch.setattr(drmm.precision, "cpu_has_native_bf16", lambda: native)
    metrics = train(tiny_config(precision="auto", epochs=1), tmp_path, data=fabricated(),
                    progress=False)
    assert metrics["precision"] == expected and metrics["precision_reason"].startswith("auto")
    assert json.loads((tmp_path / "metrics.json").read_text())["precision"] == expected
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["precision"] == expected
    assert json.loads((tmp_path / "config.json").read_text())["train"]["precision"] == "auto"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_epochs_before_the_last_are_evaluated_in_the_steps_precision(tmp_path, monkeypatch,
                                                                     precision):
    """The last epoch's test error, the run's result, is float32's, as `drmm eval` computes it."""
    autocast_on = []  # per evaluation: whether it ran under bf16 autocast

    def spy(*args, **kwargs):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return confusion(*args, **kwargs)

    monkeypatch.setattr(drmm.train, "confusion", spy)
    train(tiny_config(precision=precision, epochs=3), tmp_path, data=fabricated(), progress=False)
    assert autocast_on == [precision == "bf16"] * 2 + [False]
