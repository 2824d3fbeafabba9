import os
from pathlib import Path

import pytest
import torch

# The tests' models are tiny: a second thread gains nothing, and with two pytest-xdist workers
# on two cores, two threads each would fight over them. One thread, here and in subprocesses.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # Benchmarks called in-process set their own thread count: reset it, or a test that compares
    # a run in this process with one in a one-thread subprocess sees another summation order.
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """No test reads or fills the user's ~/.cache/drmm: each has its own cache folder."""
    monkeypatch.setenv("DRMM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def shared_data() -> Path:
    """The real data copies beside the repository; tests that need them skip without them."""
    if not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
