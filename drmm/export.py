"""`drmm export`: a trained run as an ONNX model, for inference without drmm or PyTorch.

    drmm export --checkpoint runs/mine --out model.onnx

What is exported: the bottom-up pass (section 4.1) in eval mode, BatchNorm's running statistics
folded in, with the run's preprocessing (none, standardize, gcn or zca, its statistics stored in
the checkpoint) inside the graph and a softmax at the end: what `drmm.load(run).predict` computes.

- input `images`: float32 (N, C, H, W), raw pixels in [0, 1] (uint8 / 255), grayscale or RGB in
  that channel order, at the run's size; N, the batch axis, is free. Resizing (the run's
  --image-size / --resize) is not in the graph: give images of the run's size.
- output `probabilities`: float32 (N, K), q(c|I) for the K classes, rows summing to 1.
- the class names (in output order) are in the model's metadata_props (`class_names`, a JSON
  list), beside the input, output and preprocessing; model.onnx.json holds the same description.

Before the file is written, onnxruntime runs the graph on random images and its probabilities are
checked against drmm's own predictor; both files are written atomically (nothing half-written).
ONNX opset 18 (onnxruntime >= 1.14). Needs `pip install 'drmm[export]'` (onnx, onnxruntime,
onnxscript: the torch.export-based exporter of torch >= 2.5). With onnxruntime alone (an RGB run:
`.convert("RGB")` and `.transpose(2, 0, 1)[None]` in place of `[None, None]`):

    import json, numpy as np, onnxruntime as ort, PIL.Image
    runtime = ort.InferenceSession("model.onnx")
    x = np.asarray(PIL.Image.open("cat.png").convert("L"), np.float32)[None, None] / 255
    probs = runtime.run(["probabilities"], {"images": x})[0]  # (1, K); names[probs[0].argmax()]
    names = json.loads(runtime.get_modelmeta().custom_metadata_map["class_names"])  # K names
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from drmm import __version__
from drmm.data.preprocess import GCN_SCALE, Preprocessor
from drmm.errors import DRMMError
from drmm.files import atomic_write, check_out_file
from drmm.model import DRMM
from drmm.predictor import Predictor, load

EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # the `export` extra
OPSET = 18  # onnxruntime >= 1.14 runs it; the exporter converts its default opset down to it
INPUT, OUTPUT = "images", "probabilities"
INPUT_RANGE = "raw pixels in [0, 1] (uint8 / 255), not preprocessed"
TOLERANCE = 1e-4  # largest difference to drmm's predictor that the export may show
CHECK_IMAGES = 5  # random images the check runs through both


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a trained run as an ONNX model",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a drmm run folder or its checkpoint.pt")
    p.add_argument("--out", required=True,
                   help="the .onnx file to write (its description goes to OUT.json beside it)")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    out = check_out_file(args.out, suffix=".onnx")  # before any loading
    info = export_onnx(args.checkpoint, out)
    shape = ", ".join(map(str, info["input"]["shape"]))
    pre = info["preprocess"]
    print(f"wrote {out} and {description_path(out).name}: {INPUT} float32 ({shape}) in [0, 1]"
          f" -> {OUTPUT} (N, {len(info['class_names'])});"
          f" {'no preprocessing' if pre == 'none' else f'preprocessing {pre} in the graph'};"
          f" matches drmm predict to {info['check']['max_abs_difference']:.1e}")
    return 0


def description_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")  # model.onnx -> model.onnx.json


# ----------------------------------------------------------------------------------------------
# The graph: preprocessing, the bottom-up pass, softmax


class ExportedModel(nn.Module):
    """Raw images (N, C, H, W) in [0, 1] -> class probabilities (N, K): what Predictor.predict
    computes, written without in-place operations or loops over the batch (its axis stays free
    in the graph)."""

    def __init__(self, model: DRMM, pre: Preprocessor):
        super().__init__()
        self.model = model
        self.mode = pre.mode
        if pre.mode == "standardize":  # (1, C, 1, 1): per channel
            self.register_buffer("mean", pre.mean.float().reshape(1, -1, 1, 1))
            self.register_buffer("std", pre.std.float().reshape(1, -1, 1, 1))
        elif pre.mode == "zca":
            self.register_buffer("mean", pre.mean.float().reshape(1, -1))  # (1, D)
            self.register_buffer("whitening", pre.whitening.float())  # (D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "standardize":
            x = (x - self.mean) / self.std  # drmm.data.preprocess.standardize
        elif self.mode in ("gcn", "zca"):
            flat = x.reshape(x.shape[0], -1)  # (N, D): preprocess.contrast_normalize
            flat = flat - flat.mean(dim=1, keepdim=True)
            norms = flat.norm(dim=1, keepdim=True) / GCN_SCALE  # (N, 1)
            flat = flat / torch.where(norms > 1e-8, norms, torch.ones_like(norms))
            if self.mode == "zca":
                flat = (flat - self.mean) @ self.whitening  # preprocess.whiten
            x = flat.reshape(x.shape)
        return self.model(x).float().softmax(dim=1)  # (N, K)


# ----------------------------------------------------------------------------------------------
# Export


def require_export_packages() -> dict:
    """The export extra's modules by name; a DRMMError naming the missing ones and the fix."""
    modules, missing = {}, []
    for name in EXPORT_PACKAGES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DRMMError(f"drmm export needs {', '.join(EXPORT_PACKAGES)} ({', '.join(missing)}"
                        " not installed); pip install 'drmm[export]'")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise DRMMError(f"drmm export needs torch >= 2.5 (its torch.export-based ONNX exporter);"
                        f" this is torch {torch.__version__}: pip install -U torch")
    return modules


@contextmanager
def quiet_exporter():
    """The exporter's own notices (deprecations inside torch, skipped torchvision ops) say
    nothing about the model: keep them off the user's terminal."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        logger.setLevel(level)


def to_onnx(predictor: Predictor):
    """The predictor's model, preprocessing and softmax as an onnx.ModelProto, batch axis free."""
    model = copy.deepcopy(predictor.model).cpu()  # the predictor's own stays where it is
    wrapped = ExportedModel(model, predictor.preprocessor).eval()
    example = torch.rand(2, *predictor.image_shape, generator=torch.Generator().manual_seed(0))
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapped, (example,), dynamo=True, verbose=False, opset_version=OPSET,
                input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},))
    except ImportError as e:  # an onnxscript older than this torch's exporter needs
        raise DRMMError(f"the ONNX exporter of torch {torch.__version__} cannot import what it"
                        f" needs ({e}); pip install -U 'drmm[export]'") from e
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; one line says which
        first = (str(e).strip().splitlines() or [""])[0]
        raise DRMMError(f"the ONNX exporter failed ({type(e).__name__}: {first}); please report"
                        f" it with torch {torch.__version__} and the run's config.json") from e
    return program.model_proto


def describe(predictor: Predictor, checkpoint: str | Path) -> dict:
    """What model.onnx.json (and the model's metadata) say about the exported graph."""
    c, h, w = predictor.image_shape
    return {
        "format": "drmm ONNX export 1",
        "drmm_version": __version__,
        "checkpoint": str(checkpoint),
        "class_names": predictor.class_names,
        "channels": c,
        "color": "grayscale" if c == 1 else "RGB",
        "image_size": [h, w],
        "input": {"name": INPUT, "dtype": "float32", "shape": ["N", c, h, w],
                  "range": INPUT_RANGE},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["N", len(predictor.class_names)],
                   "meaning": "class probabilities q(c|I), softmax of the class scores, in"
                              " class_names order"},
        "preprocess": predictor.preprocessor.mode,
        "preprocess_folded": True,
        "resize": None if predictor.resize is None else {
            "size": predictor.resize, "mode": predictor.resize_mode,
            "note": "not in the graph: resize images to image_size as the run did first"},
        "opset": OPSET,
    }


def add_metadata(proto, info: dict) -> None:
    """The description as the model's metadata_props (strings; lists as JSON)."""
    props = {
        "class_names": json.dumps(info["class_names"]),
        "input": f"{INPUT}: float32 (N, {', '.join(map(str, info['input']['shape'][1:]))}),"
                 f" {INPUT_RANGE}",
        "output": f"{OUTPUT}: float32 (N, {len(info['class_names'])}), class probabilities in"
                  " class_names order",
        "channels": str(info["channels"]),
        "image_size": json.dumps(info["image_size"]),
        "preprocess": f"{info['preprocess']} (folded into the graph)",
        "drmm_version": info["drmm_version"],
    }
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"drmm {info['drmm_version']}: {INPUT} -> {OUTPUT}; class names in"
                        " metadata_props['class_names']")


def check_against_predictor(ort, model_bytes: bytes, predictor: Predictor) -> float:
    """Largest difference between onnxruntime's and the predictor's probabilities on random
    images; a DRMMError if it exceeds TOLERANCE."""
    x = torch.rand(CHECK_IMAGES, *predictor.image_shape,
                   generator=torch.Generator().manual_seed(1))  # (n, C, H, W) in [0, 1]
    runtime = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(runtime.run([OUTPUT], {INPUT: x.numpy()})[0])  # (n, K)
    want = predictor.predict(x).probabilities  # (n, K)
    if got.shape != want.shape:
        raise DRMMError(f"the exported graph gives {tuple(got.shape)} for {tuple(want.shape)};"
                        " nothing written, please report it")
    diff = (got - want).abs().max().item()
    if not diff <= TOLERANCE:  # also catches NaN
        raise DRMMError(f"the exported graph differs from drmm's predictor by {diff:.2e} (more"
                        f" than {TOLERANCE:.0e}); nothing written, please report it")
    return diff


def export_onnx(checkpoint: str | Path, out: str | Path) -> dict:
    """Export the run at checkpoint (a run folder or checkpoint file) to out (.onnx) and its
    description to out.json; returns the description."""
    out = Path(out)
    modules = require_export_packages()
    predictor = load(checkpoint)  # DRMMErrors of a missing or damaged checkpoint
    proto = to_onnx(predictor)
    info = describe(predictor, checkpoint)
    add_metadata(proto, info)
    try:
        modules["onnx"].checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001 - onnx's ValidationError and shape-inference errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DRMMError(f"the exported graph is not valid ONNX ({first});"
                        " nothing written, please report it") from e
    model_bytes = proto.SerializeToString()
    info["check"] = {"images": CHECK_IMAGES, "max_abs_difference":
                     check_against_predictor(modules["onnxruntime"], model_bytes, predictor)}
    atomic_write(out, lambda f: f.write(model_bytes))
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(description_path(out), lambda f: f.write(text.encode("utf-8")))
    return info

