"""`drmm analyze`: the linear decoding analysis of section 5.4 for one or more checkpoints.

    drmm analyze --checkpoint runs/syn-drmm/checkpoint.pt runs/syn-dcn/checkpoint.pt \
        --data data/synthetic.npz --out results/

writes results/decoding.csv (columns model, layer, latent, error, chance, layer_name; layer 0
is the input image) and results/decoding.png (Figure 4's layout). Each line is named after its
checkpoint ("DCN" for a --supervised-only run, else "DRMM") unless --names is given.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from drmm.analysis.decoding import SOURCES, DecodingConfig, decode_model
from drmm.analysis.plot import plot_decoding
from drmm.checkpoint import load_trained_model
from drmm.data import load_arrays, load_dataset
from drmm.errors import DRMMError, require_device
from drmm.files import atomic_write, check_out_dir

COLUMNS = ("model", "layer", "latent", "error", "chance", "layer_name")


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="linear decoding of the latents per layer (5.4)")
    p.add_argument("--checkpoint", nargs="+", required=True, help="one or more checkpoint.pt")
    p.add_argument("--data", required=True, help="FILE.npz from `drmm render` (needs z_test)")
    p.add_argument("--out", required=True, help="folder for decoding.csv and decoding.png")
    p.add_argument("--names", nargs="+", help="a plot name per checkpoint (default DRMM / DCN)")
    p.add_argument("--max-images", type=int, default=4000,
                   help="test images used, half to fit, half held out (default 4000; 0 = all)")
    p.add_argument("--seed", type=int, default=0, help="subset, split and PCA seed (default 0)")
    p.add_argument("--source", choices=SOURCES, default="bottom_up",
                   help="features decoded per layer: the bottom-up activations (the paper),"
                        " the top-down templates z(l), or the switches a and t")
    p.add_argument("--components", type=int, default=10,
                   help="principal components per layer (the paper: 10; 0: every feature)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_analyze)


def default_names(configs) -> list[str]:
    """DCN / DRMM from each run's config; duplicates get N_L, then a counter."""
    names = ["DCN" if c.train.supervised_only else "DRMM" for c in configs]
    if len(set(names)) < len(names):
        names = [f"{n} N_L={c.train.labels}" for n, c in zip(names, configs, strict=True)]
    if len(set(names)) < len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    return names


def load_model(path: str, device: str):
    model, cfg, _ = load_trained_model(path)
    return model.to(device), cfg


def load_latents(data: str):
    """The npz's test latents and their names; a clear error if it has none."""
    arrays = load_arrays(f"npz:{data}")
    if "z_test" not in arrays or "z_names" not in arrays:
        raise DRMMError(f"{data} has no z_test / z_names latents; make it with `drmm render`")
    z, names = arrays["z_test"], [str(s) for s in arrays["z_names"]]
    if z.ndim != 2 or z.shape != (len(arrays["x_test"]), len(names)):
        raise DRMMError(f"{data}: z_test has shape {z.shape}; expected"
                        f" ({len(arrays['x_test'])}, {len(names)}), one column per z_names entry")
    return z.astype("float64"), names


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "error": f"{r['error']:.4f}", "chance": f"{r['chance']:.4f}"})
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a decoding.csv written by write_csv, with numbers as numbers."""
    path = Path(path)
    if not path.is_file():
        raise DRMMError(f"{path} not found; make it with `drmm analyze --out {path.parent}`")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or list(rows[0]) != list(COLUMNS):
        raise DRMMError(f"{path} is not a decoding.csv: expected the columns {', '.join(COLUMNS)}")
    return [{**r, "layer": int(r["layer"]), "error": float(r["error"]),
             "chance": float(r["chance"])} for r in rows]


def cmd_analyze(args) -> int:
    if args.names and len(args.names) != len(args.checkpoint):
        raise DRMMError(f"--names has {len(args.names)} entries for {len(args.checkpoint)}"
                        " checkpoints; give one name per checkpoint")
    if args.max_images < 0 or 0 < args.max_images < 40:
        raise DRMMError(f"--max-images {args.max_images}: use 0 (all) or at least 40")
    if args.components < 0:
        raise DRMMError(f"--components {args.components}: use 0 (no PCA) or more")
    require_device(args.device)
    check_out_dir(args.out)
    z, z_names = load_latents(args.data)
    loaded = [load_model(p, args.device) for p in args.checkpoint]
    names = args.names or default_names([c for _, c in loaded])
    cfg = DecodingConfig(source=args.source, n_components=args.components,
                         max_images=args.max_images, seed=args.seed)
    rows = []
    for path, (model, run_cfg), name in zip(args.checkpoint, loaded, names, strict=True):
        # The inputs as this model was trained on them (its preprocessing, fitted on x_train).
        data = load_dataset(f"npz:{args.data}", preprocess=run_cfg.train.preprocess)
        x = data.x_test.to(args.device)  # (M, C, H, W)
        try:
            model.check_input(x[:1])
        except ValueError as e:
            raise DRMMError(f"{path} does not fit {args.data}: {e}") from e
        rows += decode_model(model, x, z, z_names, name, cfg,
                             progress=None if args.quiet else print)
    out = Path(args.out)
    write_csv(rows, out / "decoding.csv")
    reduced = f"{cfg.n_components} PCs" if cfg.n_components else "every feature"
    plot_decoding(rows, out / "decoding.png", title=f"Linear decoding of the latents from each"
                  f" layer ({cfg.source.replace('_', '-')}, {reduced}, {cfg.n_bins} bins)")
    for name in names:
        by_layer = {}
        for r in rows:
            if r["model"] == name:
                by_layer.setdefault(r["layer_name"], []).append(r["error"])
        print(f"{name}: mean error over latents per layer: "
              + ", ".join(f"{k} {100 * sum(v) / len(v):.1f} %" for k, v in by_layer.items()))
    print(f"wrote {out / 'decoding.csv'} and {out / 'decoding.png'}")
    return 0
