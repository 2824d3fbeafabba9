"""The GPU suite's part 1, CUDA correctness: training steps in fp32 and bf16 autocast,
evaluation, a checkpoint reloaded, a crashed run resumed against an uninterrupted one, and the
fast CPU tests on the machine's own Python."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import device_and_name, subset
from benchmarks.gpu.suite_base import finish, left, paper_schedule, record

# 29 tests, ~7 s on 1 CPU core
TESTS = ["tests/test_model.py", "tests/test_losses.py"]


class Interrupted(Exception):
    """Stands for a crash in the middle of a run."""


@contextlib.contextmanager
def wrapped_step_terms(wrap):
    """drmm.step.Objective.forward (the E-step and objective of each step) replaced by
    wrap(real forward) for the duration: the seam the reliability tests inject faults through."""
    import drmm.step

    real = drmm.step.Objective.forward
    drmm.step.Objective.forward = wrap(real)
    try:
        yield
    finally:
        drmm.step.Objective.forward = real


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest |a - b| over the floating tensors of two state dicts (inf if keys differ)."""
    if a.keys() != b.keys():
        return math.inf
    return max((float((a[k].float() - b[k].float()).abs().max()) for k in a
                if a[k].is_floating_point() and a[k].numel()), default=0.0)


def training_steps(cfg, device, one_batch) -> tuple[dict, object]:
    """Three training steps in fp32 and in bf16 autocast from the same initial weights
    (whether every loss was finite is recorded); their losses, and the fp32 model."""
    import torch

    from benchmarks.common import train_step
    from drmm.model import DRMM
    from drmm.optim import make_optimizer
    from drmm.step import Objective, step_weights

    weights = step_weights(cfg, 0, 1)
    steps, models = {}, {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = models[precision] = DRMM(cfg.model).to(device)
        opt, sched = make_optimizer(model, cfg, 1000)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        losses = [float(train_step(Objective(model, cfg), model, opt, sched, one_batch,
                                   weights, autocast)["loss"])
                  for _ in range(3)]
        steps[precision] = {"losses": losses, "finite": all(map(math.isfinite, losses))}
    return steps, models["fp32"]


def reload_diff(model, cfg, device, path: Path, x) -> float:
    """Checkpoint save + load: the largest logit difference between the model and its copy."""
    import torch

    from drmm.checkpoint import load_checkpoint, save_checkpoint
    from drmm.model import DRMM

    save_checkpoint(path, {"model": model.state_dict()})
    model2 = DRMM(cfg.model).to(device)
    model2.load_state_dict(load_checkpoint(path, map_location=device)["model"])
    model.eval()
    model2.eval()
    with torch.no_grad():
        return float((model(x) - model2(x)).abs().max())


def exact_resume(a, cfg, data, device, work: Path) -> dict:
    """2 epochs x 8 steps with a checkpoint every 3 steps; one run crashes in epoch 2 at step 5
    (its last checkpoint: epoch 2, step 3) and is resumed; it must end where an uninterrupted
    run ends. On CUDA some cuDNN kernels are not deterministic (atomics in the backward pass):
    the difference is reported, not failed on."""
    from drmm.checkpoint import load_checkpoint
    from drmm.train import train

    batch = 20 if a.smoke else 50
    tiny = subset(data, slice(0, 8 * batch // 2), 100 if a.smoke else 1000)
    rcfg = paper_schedule(cfg, device, batch)
    rcfg.train.epochs, rcfg.train.checkpoint_every, rcfg.train.labels = 2, 3, 20
    ref, crashed = work / "resume_reference", work / "resume_crashed"
    for d in (ref, crashed):
        shutil.rmtree(d, ignore_errors=True)
    m_ref = train(rcfg, ref, data=tiny, progress=False)
    calls = itertools.count(1)
    rec = {}

    def crash_at_step_13(real):
        def step_terms(*args, **kwargs):
            if next(calls) == 8 + 5:
                raise Interrupted
            return real(*args, **kwargs)
        return step_terms

    with wrapped_step_terms(crash_at_step_13):
        try:
            train(rcfg, crashed, data=tiny, progress=False)
            rec["resume_crash_injected"] = False  # cannot happen: 16 steps run
        except Interrupted:
            rec["resume_crash_injected"] = True
    m_res = train(rcfg, crashed, resume=True, data=tiny, progress=False)
    diff = max_abs_diff(load_checkpoint(ref)["model"], load_checkpoint(crashed)["model"])
    return rec | {"resume_weights_max_abs_diff": diff, "resume_exact": diff == 0.0,
                  "resume_test_error_curves": {
                      "uninterrupted": m_ref["test_error_percent_by_epoch"],
                      "resumed": m_res["test_error_percent_by_epoch"]}}


def part_correctness(a) -> None:
    import torch

    from drmm.config import preset
    from drmm.data import load_dataset
    from drmm.evaluate import test_error
    from drmm.step import Batch

    out, work = Path(a.out), Path(a.work)
    device, name = device_and_name(a.smoke)
    rec = {"status": "running", "device": name, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    with contextlib.suppress(Exception):  # where this torch says what fp32 convolutions run in
        rec["cudnn_conv_fp32_precision"] = torch.backends.cudnn.conv.fp32_precision
    data = load_dataset("mnist", a.mnist_dir)
    cfg = paper_schedule(preset("mnist"), device)
    b = 20 if a.smoke else 100  # bf16 is emulated on most CPUs: slow
    x = data.x_train[:b].to(device)  # (B, 1, 28, 28)
    y = data.y_train[:b // 2].to(device)  # (B/2,)
    steps, model = training_steps(cfg, device, Batch(x[:b // 2], y, x[b // 2:]))
    rec["steps"] = steps
    rec["bf16_over_fp32_first_loss"] = steps["bf16"]["losses"][0] / steps["fp32"]["losses"][0]
    # Evaluation, with the fp32 model just trained for 3 steps (near chance: it is a check
    # that evaluation runs and gives a fraction, not a result).
    n_test = 100 if a.smoke else 2000
    x_test, y_test = data.x_test[:n_test].to(device), data.y_test[:n_test].to(device)
    err = rec["test_error_after_3_steps"] = test_error(model, x_test, y_test)
    # The reloaded model must give the same logits.
    rec["checkpoint_reload_logit_max_abs_diff"] = reload_diff(
        model, cfg, device, work / "correctness_checkpoint.pt", x_test[:100])
    del model
    record(out, "correctness", rec)
    rec |= exact_resume(a, cfg, data, device, work)
    diff = rec["resume_weights_max_abs_diff"]
    record(out, "correctness", rec)
    rec["pytest"] = pytest_here(a)
    ok = all(s["finite"] for s in steps.values()) and 0 <= err <= 1 and rec["pytest"]["rc"] == 0
    rec["all_checks_passed"] = (ok and rec["checkpoint_reload_logit_max_abs_diff"] == 0.0
                                and rec["resume_crash_injected"])  # (its diff: reported only)
    finish(out, "correctness", rec,
           f"{'PASS' if rec['all_checks_passed'] else 'CHECK'}: steps finite fp32"
           f" {steps['fp32']['finite']} bf16 {steps['bf16']['finite']} (first loss bf16/fp32"
           f" {rec['bf16_over_fp32_first_loss']:.4f}), eval {err:.3f}, checkpoint reload"
           f" diff {rec['checkpoint_reload_logit_max_abs_diff']:.2g}, resume max|diff|"
           f" {diff:.2g} ({'exact' if diff == 0 else 'not bit-exact'}), pytest"
           f" {rec['pytest']['last_line']!r}")


def pytest_here(a) -> dict:
    """The fast CPU tests, on this machine's Python (pytest from .gpu_data/pytest.zip if it
    has none of its own); not run under --smoke, where pytest runs these tests itself (a
    second process would cost ~7 s of imports)."""
    if a.smoke:
        return {"files": [], "rc": 0, "last_line": "not run (SMOKE=1)"}
    env = dict(os.environ)
    if a.pytest_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), a.pytest_path]))
    return run_pytest(TESTS, env, max(5.0, left(a) - 3))


def run_pytest(tests: list[str], env: dict, budget: float) -> dict:
    """pytest on these files in a new process: its exit code and its counts line."""
    try:
        # addopts cleared: pyproject.toml's ask for pytest-xdist, which pytest.zip lacks
        proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-x",
                               "-p", "no:cacheprovider", *tests],
                              env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"files": tests, "rc": None, "last_line": f"timed out after {budget:.0f}s"}
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    counts = [line for line in lines if re.search(r"\d+ (passed|failed|error)", line)]
    if proc.returncode:
        print("\n".join(lines[-30:]), flush=True)
    return {"files": tests, "rc": proc.returncode,
            "last_line": (counts or lines or [""])[-1].strip("= ")}
