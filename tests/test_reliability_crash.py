"""A real crash: `drmm train` processes killed with SIGKILL (docs/reliability.md).

1. Killed in the middle of an epoch, at a moment the test does not choose (it polls for a
   mid-epoch checkpoint, then sends SIGKILL); `drmm train --resume RUN_DIR` then finishes the
   run, and its parameters and metrics equal those of an uninterrupted run bit for bit.
2. Killed in the middle of writing a checkpoint: the previous checkpoint is intact, and the
   resumed run again equals the uninterrupted one.

The runs that get killed are subprocesses; the reference run and the resumed ones run in this
process (a new process costs seconds of imports). All use one CPU thread, so all do the same
arithmetic; 2 epochs of 16 steps.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_run, tiny_arrays, tiny_train, write_npz, write_yaml

from drmm.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
POLL_TIMEOUT_S = 600  # generous: the machine may be busy with other work

# Runs `drmm train` with one change: each step first sleeps argv[1] seconds, so that the parent
# has time to see a mid-epoch checkpoint and kill the process before the epoch ends.
SLOW_CHILD = """
import sys, time
from drmm.step import Objective
real = Objective.forward
def slow(*args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return real(*args, **kwargs)
Objective.forward = slow
from drmm.cli import main
sys.exit(main(sys.argv[2:]))
"""

# Runs `drmm train`, but the 3rd checkpoint write stops half-way: the process kills itself.
DYING_WRITE_CHILD = """
import io, os, signal, sys, torch
real, calls = torch.save, [0]
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:
        buf = io.BytesIO()
        real(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *args, **kwargs)
torch.save = save
from drmm.cli import main
sys.exit(main(sys.argv[1:]))
"""


def drmm(*argv: str) -> str:
    """`drmm ARGV` in this process; returns what it printed to stderr."""
    with contextlib.redirect_stderr(io.StringIO()) as err:
        rc = main(list(argv))
    assert rc == 0, err.getvalue()
    return err.getvalue()


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def setup(tmp_path_factory, request):
    """The data, the config file (its precision: each of fp32 and bf16 autocast), and an
    uninterrupted reference run."""
    d = tmp_path_factory.mktemp("crash")
    npz = write_npz(d / "d.npz", **tiny_arrays(n_train=160))  # 16 steps per epoch
    yaml = write_yaml(d)
    Path(yaml).write_text(Path(yaml).read_text().replace("fp32", request.param))
    drmm(*tiny_train(npz, d / "reference", yaml, "--labels", "8", "--checkpoint-every", "4"))
    return npz, yaml, d / "reference"


def read_position(path: Path):
    """(epoch, step) of the checkpoint at path, or None while there is none."""
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        return None
    return state["epoch"], state["step"]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(setup, tmp_path):
    npz, yaml, reference = setup
    out = tmp_path / "run"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, "0.1",
         *tiny_train(npz, out, yaml, "--labels", "8", "--checkpoint-every", "4")],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + POLL_TIMEOUT_S
    try:
        while True:  # wait for a checkpoint inside the 2nd epoch (so one epoch is in history)
            position = read_position(out / "checkpoint.pt")
            if position is not None and position[0] == 1 and position[1] > 0:
                break
            assert child.poll() is None, f"the run ended before it could be killed: {position}"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint appeared"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    epoch, step = read_position(out / "checkpoint.pt")
    assert epoch == 1 and 0 < step < 16  # the run died inside its 2nd epoch
    assert not (out / "metrics.json").exists()

    err = drmm("train", "--resume", str(out), "--quiet")  # no other flags: the run's own config
    assert f"from its checkpoint at the epoch 2, step {step} of 16" in err
    assert_same_run(reference, out)


def test_sigkill_while_writing_a_checkpoint(setup, tmp_path):
    npz, yaml, reference = setup
    out = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", DYING_WRITE_CHILD,
         *tiny_train(npz, out, yaml, "--labels", "8", "--checkpoint-every", "4")],
        env=ENV, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert read_position(out / "checkpoint.pt") == (0, 8)  # the 2nd checkpoint, intact
    partial = list(out.glob("checkpoint.pt.*.tmp"))
    assert len(partial) == 1  # the 3rd, half-written, never replaced it

    drmm("train", "--resume", str(out), "--quiet")
    assert not partial[0].exists()
    assert_same_run(reference, out)
