"""torchrun with 2 CPU processes (gloo) against single-process training on the same global batch.

Each rank takes its shard of both halves of the global batch, and DistributedDataParallel
averages the gradients, so the only difference from one process is BatchNorm: each rank
normalises its shard with its own batch statistics. The single-process reference below does
the same (the bottom-up pass of each shard separately, the losses averaged over shards), so the
parameters must agree to float32 round-off. With the graph prior, rank 0 alone spreads the
labels and broadcasts them; the reference spreads them itself (when the prior is on).
"""

import os
import subprocess
import sys

import pytest
import torch
from helpers import write_npz

from drmm.config import Config, preset
from drmm.data import load_dataset
from drmm.distributed import Dist
from drmm.graph_prior import propagate_labels
from drmm.model import DRMM
from drmm.optim import make_optimizer
from drmm.precision import step_autocast
from drmm.step import Objective, epoch_order, make_batch, step_weights
from drmm.train import prepare

WORLD = 2
ARGS = ["--arch", "conv_tiny", "--labels", "8", "--batch-size", "16", "--epochs", "1",
        "--seed", "3", "--lr", "0.05", "--lr-final", "0.01", "--quiet"]


def reference_parameters(npz: str, graph_prior: int, precision: str
                         ) -> dict[str, torch.Tensor]:
    """One process, the same global batches, BatchNorm statistics per rank-sized shard."""
    cfg = preset(f"npz:{npz}")
    cfg.model.arch = "conv_tiny"
    cfg.train.labels, cfg.train.batch_size, cfg.train.epochs, cfg.train.seed = 8, 16, 1, 3
    cfg.train.lr, cfg.train.lr_final = 0.05, 0.01
    data, labeled = prepare(cfg, load_dataset(cfg.train.dataset))
    torch.manual_seed(cfg.train.seed)
    model = DRMM(cfg.model)
    cfg.train.graph_prior = float(graph_prior)
    half, n = cfg.train.batch_size // 2, len(data.x_train)
    steps = n // half
    opt, sched = make_optimizer(model, cfg, steps)
    order = epoch_order(torch.from_numpy(labeled), n, torch.Generator().manual_seed(cfg.train.seed),
                        steps * half)
    graph = None
    if graph_prior:  # as rank 0 does: spread the labels only when the prior is on
        graph = propagate_labels(data.x_train, labeled, data.y_train[labeled].numpy(),
                                 cfg.model.num_classes)  # (N,), (N,)
    for step in range(steps):
        opt.zero_grad()
        weights = step_weights(cfg, step, steps)
        for r in range(WORLD):  # each rank's shard of the global batch, as training takes it
            batch = make_batch(cfg, data.x_train, data.y_train, order, step, weights, graph,
                               Dist(rank=r, world=WORLD))
            with step_autocast(precision, torch.device("cpu")):
                loss = Objective(model, cfg)(batch, weights)["loss"]  # ()
            (loss / WORLD).backward()
        opt.step()
        sched.step()
    return dict(model.named_parameters())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
@pytest.mark.parametrize("graph_prior, precision", [(0, "fp32"), (1, "fp32"), (0, "bf16")])
def test_torchrun_two_cpu_processes_match_one_process(tmp_path, graph_prior, precision):
    npz = write_npz(tmp_path / "data.npz")[len("npz:"):]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
         "--standalone", "-m", "drmm", "train", "--dataset", f"npz:{npz}",
         "--out", str(out), "--graph-prior", str(graph_prior), "--precision", precision,
         *ARGS],
        capture_output=True, text=True, env=env, timeout=300)
    # on a failure, the ranks' own lines (what a rank printed before it died) and the summary
    ranks = [line for line in proc.stderr.splitlines() if "torch/distributed/elastic" not in line]
    assert proc.returncode == 0, "\n".join(ranks[:40]) + "\n...\n" + proc.stderr[-1500:]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert Config.from_dict(state["config"]).train.batch_size == 16  # the global batch
    assert proc.stderr.count("graph prior: pseudo-labels") == graph_prior  # rank 0's alone
    expected = reference_parameters(npz, graph_prior, precision)
    for name, p in expected.items():
        assert torch.allclose(state["model"][name], p.detach(), rtol=1e-4, atol=1e-5), name
    assert (out / "metrics.json").is_file()
    assert not list(tmp_path.glob("ddp/*.tmp"))  # rank 0 alone wrote, atomically
