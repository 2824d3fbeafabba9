"""The `drmm` command line: train and eval.

User errors (bad paths, checksums, arguments) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from drmm.errors import DRMMError

# Further subcommands: each module defines register(subparsers), which adds one parser and sets
# its func; heavy imports stay inside the command functions so `drmm --help` is fast.
COMMAND_MODULES: list[str] = ["drmm.reproduce", "drmm.synthetic.cli", "drmm.analysis.cli",
                               "drmm.sample"]


def add_train_args(p: argparse.ArgumentParser) -> None:
    # Flags default to None so that only the ones given override the preset and --config.
    p.add_argument("--dataset", default="digits",
                   help="digits (bundled, default), mnist, svhn, cifar10, or npz:PATH"
                        " (prepared arrays)")
    p.add_argument("--labels", type=int, help="N_L, labeled images (multiple of the classes)")
    p.add_argument("--epochs", type=int, help="passes over the unlabeled set (preset default)")
    p.add_argument("--seed", type=int, help="seeds the split, init and data order (default 0)")
    p.add_argument("--data-dir", help="folder with local copies of the data / download target")
    p.add_argument("--out", required=True, help="run folder for checkpoint, metrics, pictures")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N")
    p.add_argument("--config", help="YAML file with model/loss/train sections")
    p.add_argument("--arch", help="architecture: conv_small, conv_large, conv_tiny")
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--lr-final", type=float, help="learning rate at the last step")
    p.add_argument("--batch-size", type=int, help="images per step, half labeled (default 100)")
    p.add_argument("--kl-mode", choices=["entropy", "eq7"], help="sign of L_KL (default entropy)")
    p.add_argument("--unsup-on", choices=["unlabeled", "all"], help="images for RC/KL/NN")
    p.add_argument("--bn-mode", choices=["separate", "joint"], help="BN statistics per half?")
    p.add_argument("--preprocess", choices=["none", "standardize", "zca"],
                   help="input transform fitted on the training images (docs/datasets.md)")
    p.add_argument("--supervised-only", action="store_true", help="DCN baseline, labels only")
    p.add_argument("--no-kl", action="store_true", help="ablation: alpha_KL = 0")
    p.add_argument("--no-nn", action="store_true", help="ablation: alpha_NN = 0")
    p.add_argument("--no-rc", action="store_true", help="ablation: alpha_RC = 0")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args):
    """Preset for the dataset < --config YAML < explicit flags."""
    from drmm.config import apply_overrides, load_yaml, preset

    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise DRMMError(f"--data-dir {args.data_dir} does not exist; pass an existing folder")
    cfg = preset(args.dataset)
    if args.config:
        apply_overrides(cfg, load_yaml(args.config), source=args.config)
    flags = {
        "train": dict(labels=args.labels, epochs=args.epochs, seed=args.seed,
                      data_dir=args.data_dir, device=args.device, optimizer=args.optimizer,
                      lr=args.lr, lr_final=args.lr_final, batch_size=args.batch_size,
                      bn_mode=args.bn_mode, preprocess=args.preprocess),
        "loss": dict(kl_mode=args.kl_mode, unsup_on=args.unsup_on),
        "model": dict(arch=args.arch),
    }
    apply_overrides(cfg, {s: {k: v for k, v in d.items() if v is not None}
                          for s, d in flags.items()}, source="command line")
    if args.supervised_only:
        cfg.train.supervised_only = True
    for flag, key in (("no_kl", "alpha_kl"), ("no_nn", "alpha_nn"), ("no_rc", "alpha_rc")):
        if getattr(args, flag):
            setattr(cfg.loss, key, 0.0)
    return cfg


def cmd_train(args) -> int:
    from drmm.train import train

    metrics = train(config_from_args(args), args.out, resume=args.resume, progress=not args.quiet)
    print(f"test error {100 * metrics['test_error']:.2f} % after {metrics['epochs']} epochs"
          f" ({metrics['labels']} labels, seed {metrics['seed']}); run saved in {args.out}")
    return 0


def cmd_eval(args) -> int:
    from drmm.checkpoint import load_checkpoint
    from drmm.config import Config
    from drmm.data import load_dataset
    from drmm.evaluate import test_error
    from drmm.model import DRMM

    state = load_checkpoint(args.checkpoint)
    cfg = Config.from_dict(state["config"])
    # The model was trained on inputs transformed this way (statistics of the training images).
    data = load_dataset(args.dataset or cfg.train.dataset, args.data_dir,
                        preprocess=cfg.train.preprocess)
    model = DRMM(cfg.model)
    model.load_state_dict(state["model"])
    model.check_input(data.x_test[:1])
    err = test_error(model.to(args.device), data.x_test.to(args.device),
                     data.y_test.to(args.device))
    print(f"test error {100 * err:.2f} % ({len(data.x_test)} test images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drmm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="semi-supervised training (hard EM)")
    add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="test error of a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", help="defaults to the checkpoint's data set")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_eval)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DRMMError as e:
        print(f"drmm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("drmm: interrupted; the last checkpoint is kept (resume with --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
