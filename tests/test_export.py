"""`drmm export`: the ONNX graph gives drmm's own predictions (preprocessing folded in), its batch
axis is free, it names its classes, and bad inputs get one-line errors with nothing written."""

import json
import sys

import numpy as np
import pytest
import torch
from helpers import one_line_error, tiny_arrays, tiny_train, write_npz, write_yaml

import drmm
import drmm.export
from drmm.cli import main
from drmm.data.preprocess import Preprocessor
from drmm.errors import DRMMError
from drmm.predictor import Predictor

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

NAMES = ["cat", "dog", "eel", "fox"]


def rgb(x: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 -> (N, H, W, 3) uint8 whose channels differ in mean and spread."""
    x = x.astype(np.float32)
    return np.stack([x, 40 + 0.6 * x, 0.5 * (255 - x)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    """2 epochs of conv_tiny on tiny grayscale 8x8 arrays, no preprocessing, unnamed classes."""
    tmp = tmp_path_factory.mktemp("gray")
    assert main(tiny_train(write_npz(tmp / "d.npz"), tmp / "run", write_yaml(tmp),
                           "--labels", "8")) == 0
    return tmp / "run", tiny_arrays()["x_test"]  # (24, 8, 8) uint8


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    """The same on RGB images with --preprocess standardize and named classes."""
    tmp = tmp_path_factory.mktemp("rgb")
    a = tiny_arrays()
    dataset = write_npz(tmp / "d.npz", x_train=rgb(a["x_train"]), x_test=rgb(a["x_test"]),
                        class_names=np.array(NAMES))
    assert main(tiny_train(dataset, tmp / "run", write_yaml(tmp), "--labels", "8",
                           "--preprocess", "standardize")) == 0
    return tmp / "run", rgb(a["x_test"])  # (24, 8, 8, 3) uint8


def as_input(x: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) -> the graph's input, float32 (N, C, H, W) in [0, 1]."""
    x = x.astype(np.float32) / 255
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2).copy()


def export_and_compare(run, x_test, out) -> tuple:
    """Export run to out; onnxruntime's and Predictor.predict's probabilities for 1 and 5
    images agree to 1e-5. Returns (runtime, predictor)."""
    assert main(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
    runtime = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    predictor = drmm.load(run)
    (inp,), (outp,) = runtime.get_inputs(), runtime.get_outputs()
    assert (inp.name, outp.name) == ("images", "probabilities")
    assert isinstance(inp.shape[0], str)  # a named, free batch axis
    assert list(inp.shape[1:]) == list(predictor.image_shape)
    for n in (1, 5):
        got = runtime.run(["probabilities"], {"images": as_input(x_test[:n])})[0]  # (n, K)
        want = predictor.predict(x_test[:n]).probabilities.numpy()  # (n, K)
        assert got.shape == want.shape == (n, len(predictor.class_names))
        assert np.abs(got - want).max() < 1e-5
    assert not list(out.parent.glob(f"{out.name}.*.tmp"))  # no temporary left behind
    return runtime, predictor


def test_grayscale_run(gray_run, tmp_path, capsys):
    run, x_test = gray_run
    out = tmp_path / "model.onnx"
    runtime, predictor = export_and_compare(run, x_test, out)
    assert "no preprocessing" in capsys.readouterr().out
    meta = runtime.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == ["0", "1", "2", "3"]
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["class_names"] == ["0", "1", "2", "3"]
    assert info["input"]["shape"] == ["N", 1, 8, 8] and info["channels"] == 1
    assert info["image_size"] == [8, 8] and info["preprocess"] == "none"
    assert "[0, 1]" in info["input"]["range"]
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert {o.domain: o.version for o in model.opset_import}[""] == drmm.export.OPSET


def test_rgb_run_with_standardize_folded_in(rgb_run, tmp_path):
    run, x_test = rgb_run
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["preprocess"]["mode"] == "standardize"
    assert not torch.allclose(state["preprocess"]["std"], torch.ones(3), atol=0.1)
    out = tmp_path / "m.onnx"
    runtime, predictor = export_and_compare(run, x_test, out)
    assert predictor.class_names == NAMES
    assert json.loads(runtime.get_modelmeta().custom_metadata_map["class_names"]) == NAMES
    info = json.loads((tmp_path / "m.onnx.json").read_text())
    assert info["preprocess"] == "standardize" and info["preprocess_folded"] is True
    assert info["input"]["shape"] == ["N", 3, 8, 8] and info["class_names"] == NAMES
    # the statistics matter: the bare network on raw pixels gives other probabilities
    x = as_input(x_test[:5])
    raw = predictor.model(torch.from_numpy(x)).softmax(dim=1).detach().numpy()
    assert np.abs(runtime.run(None, {"images": x})[0] - raw).max() > 1e-3


@pytest.mark.parametrize("mode", ["gcn", "zca"])
def test_per_image_preprocessing_is_folded_in(mode):
    """gcn and zca (fitted here on random images, no training) give the predictor's output."""
    model = drmm.DRMM(drmm.ModelConfig(arch="conv_tiny", in_channels=3, image_size=8,
                                       num_classes=3)).eval()
    g = torch.Generator().manual_seed(0)
    pre = Preprocessor.fit(mode, torch.rand(60, 3, 8, 8, generator=g))
    predictor = Predictor(model, ["a", "b", "c"], pre)
    runtime = ort.InferenceSession(drmm.export.to_onnx(predictor).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.rand(n, 3, 8, 8, generator=g)
        got = runtime.run(None, {"images": x.numpy()})[0]
        assert np.abs(got - predictor.predict(x).probabilities.numpy()).max() < 1e-5


@pytest.mark.parametrize("checkpoint, out, message", [
    ("nowhere", "m.onnx", "does not exist"),
    ("junk.pt", "m.onnx", "it is corrupt"),
    ("other.pt", "m.onnx", "is not a drmm checkpoint"),
    ("RUN", "m.onnx.zip", "must end in .onnx"),
    ("RUN", "a_file/m.onnx", "which is a file"),
])
def test_one_line_errors(gray_run, tmp_path, capsys, checkpoint, out, message):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    (tmp_path / "a_file").write_text("x")
    checkpoint = str(gray_run[0]) if checkpoint == "RUN" else str(tmp_path / checkpoint)
    assert main(["export", "--checkpoint", checkpoint, "--out", str(tmp_path / out)]) == 2
    line = one_line_error(capsys)
    assert line.startswith("drmm: error:") and message in line
    assert not list(tmp_path.glob("m.onnx*"))


def test_missing_packages_name_the_extra(gray_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript: ImportError
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(gray_run[0]), "--out", str(out)]) == 2
    line = one_line_error(capsys)
    assert "onnxscript" in line and "pip install 'drmm[export]'" in line
    assert not out.exists()


def test_failed_export_writes_nothing(gray_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous model")

    def fails(*args):
        raise DRMMError("the exported graph differs from drmm's predictor")

    monkeypatch.setattr(drmm.export, "check_against_predictor", fails)
    assert main(["export", "--checkpoint", str(gray_run[0]), "--out", str(out)]) == 2
    assert "differs" in one_line_error(capsys)
    assert out.read_bytes() == b"the previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
