"""The GPU suite (benchmarks/gpu/gpu_suite.sh) runs end to end on the CPU (SMOKE=1), and
benchmarks/gpu/gpu_data.py packs its data within the byte budget."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import ROOT
from benchmarks.gpu import gpu_data
from drmm.data import load_dataset


def test_smoke_run_of_every_part(shared_data, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "OUT_DIR": str(out), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "gpu_suite.sh")], env=env,
                          capture_output=True, text=True, timeout=1200)  # a hang, not a slow CI
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_suite.json").read_text())
    assert list(results) == ["correctness", "throughput", "mnist", "cifar10"]
    assert all(r["status"] == "ok" for r in results.values()), results
    c = results["correctness"]
    assert c["all_checks_passed"] and c["resume_crash_injected"]
    assert c["resume_exact"]  # on the CPU a resumed run equals an uninterrupted one exactly
    assert [g["arch"] for g in results["throughput"]["groups"]] == ["conv_tiny", "conv_tiny"]
    for part in ("mnist", "cifar10"):
        assert results[part]["epochs"] == 1 and len(results[part]["test_error_curve"]) == 1
        assert (out / f"{part}_metrics.jsonl").is_file()
    assert results["cifar10"]["augmentation"] is True
    assert len(list(out.iterdir())) <= 6  # the device tool sends back few files
    summary = proc.stdout[proc.stdout.index("gpu_suite: summary"):].splitlines()
    assert len(summary) == 5 and all("[ok]" in line for line in summary[1:])


def fake_shared(root: Path) -> Path:
    """A stand-in for ../shared/data: four (fake) MNIST .gz files and a small random CIFAR."""
    (root / "mnist").mkdir(parents=True)
    for name in gpu_data.MNIST_FILES:
        with gzip.open(root / "mnist" / name, "wb") as f:
            f.write(b"not really mnist")
    (root / "cifar10").mkdir()
    rng = np.random.default_rng(0)
    np.savez(root / "cifar10" / "cifar10.npz",
             x_train=rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
             y_train=(np.arange(1000) % 10).astype(np.uint8),
             x_test=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8),
             y_test=(np.arange(300) % 10).astype(np.uint8))
    return root


def test_gpu_data_fits_the_budget(tmp_path):
    out = tmp_path / "gpu_data"
    budget_mib = 1.5
    kept = gpu_data.main(["--shared", str(fake_shared(tmp_path / "shared")), "--out", str(out),
                          "--budget-mib", str(budget_mib), "--labels", "100",
                          "--test-images", "105", "--no-pytest"])
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert total == kept["total_bytes"] <= budget_mib * 2**20
    assert 0 < kept["cifar_unlabeled"] < 900  # random pixels do not compress: not all fit
    assert kept["cifar_test"] == 100  # rounded down to whole classes
    data = load_dataset(f"npz:{out / gpu_data.CIFAR_NAME}")
    y = data.y_train.numpy()
    assert (y == -1).sum() == kept["cifar_unlabeled"]
    assert np.bincount(y[y >= 0]).tolist() == [10] * 10  # the class-balanced N_L split
    assert np.bincount(data.y_test.numpy()).tolist() == [10] * 10
    with np.load(out / gpu_data.CIFAR_NAME) as f:  # the original indices, in their order
        assert (np.diff(f["train_index"]) > 0).all()
    assert sorted(p.name for p in (out / "mnist").iterdir()) == sorted(gpu_data.MNIST_FILES)
    assert f"{kept['cifar_unlabeled']} other training images" in (out / "README.txt").read_text()


def test_cifar_parts_join_to_the_same_arrays(tmp_path):
    from benchmarks.gpu import gpu_cifar10_full as full

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 50).astype(np.uint8),
              "x_test": rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 20).astype(np.uint8)}
    manifest = full.split(arrays, tmp_path / "parts", part_bytes=60_000)
    assert len(manifest["parts"]) == 4  # 215,210 bytes in parts of at most 60,000
    assert all(p["bytes"] <= 60_000 for p in manifest["parts"])
    joined = full.join(tmp_path / "parts")
    assert all(np.array_equal(joined[k], arrays[k]) and joined[k].dtype == arrays[k].dtype
               for k in arrays)
    (tmp_path / "parts" / "part2.bin").write_bytes(b"damaged")
    with pytest.raises(SystemExit, match="part2.bin does not match its sha256"):
        full.join(tmp_path / "parts")
    (tmp_path / "parts" / "part2.bin").unlink()
    with pytest.raises(SystemExit, match="part2.bin is missing; carry it"):
        full.join(tmp_path / "parts")


def test_gpu_cifar10_full_smoke_on_real_cifar(shared_data, tmp_path):
    from benchmarks.gpu import gpu_cifar10_full as full

    parts = tmp_path / "parts"
    manifest = full.main(["split", "--shared", str(shared_data), "--parts", str(parts)])
    assert len(manifest["parts"]) == 4  # 184 MB in parts of 48 MiB: one device call each
    assert all(p["bytes"] <= 48 * 2**20 for p in manifest["parts"])
    report = full.main(["train", "--smoke", "--parts", str(parts), "--work",
                        str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    assert report["epochs"] == 1 and report["labels"] == 200 and report["train_images"] == 400
    assert 0 <= report["test_error_end"] <= 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json", "gpu_cifar10_full.json", "metrics.json", "metrics.jsonl"]
