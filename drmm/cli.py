"""drmm: semi-supervised learning with the Deep Rendering Mixture Model (Nguyen et al., 2016).

The command line: train, eval, predict, and the paper's experiments (reproduce, render,
analyze, sample). User errors (bad paths, checksums, arguments) print one line and exit with
code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from drmm import __version__
from drmm.data.preprocess import PREPROCESS
from drmm.errors import DRMMError, require_device
from drmm.files import require_dir

# Further subcommands: each module defines register(subparsers), which adds one parser and sets
# its func; heavy imports stay inside the command functions so `drmm --help` is fast.
COMMAND_MODULES: list[str] = ["drmm.predict", "drmm.reproduce", "drmm.synthetic.cli",
                               "drmm.analysis.cli", "drmm.sample"]


def add_train_args(p: argparse.ArgumentParser) -> None:
    # Flags default to None so that only the ones given override the preset and --config.
    p.add_argument("--dataset",
                   help="digits (bundled, default), mnist, svhn, cifar10, npz:PATH (prepared"
                        " arrays) or folder:DIR (your images: DIR/labeled/<class>/,"
                        " DIR/unlabeled/, DIR/test/<class>/)")
    p.add_argument("--labels", type=int,
                   help="N_L: draw this many labeled images, class-balanced (a multiple of the"
                        " classes); default for npz: and folder: data: every labeled image")
    p.add_argument("--labeled-indices", metavar="FILE",
                   help=".npy or text file (one index a line): exactly these training images"
                        " are labeled")
    p.add_argument("--channels", type=int, choices=[1, 3],
                   help="folder:DIR: decode as grayscale (1) or RGB (3); default from the files")
    p.add_argument("--image-size", type=int, metavar="S",
                   help="folder:DIR: resize every image to S x S pixels")
    p.add_argument("--epochs", type=int, help="passes over the unlabeled set (preset default)")
    p.add_argument("--seed", type=int, help="seeds the split, init and data order (default 0)")
    p.add_argument("--data-dir", help="folder with local copies of the data / download target")
    p.add_argument("--out", help="run folder for checkpoint, metrics, pictures (required unless"
                   " --resume RUN_DIR)")
    p.add_argument("--device", help="cpu (default), cuda or cuda:N")
    p.add_argument("--config", help="YAML file with model/loss/train sections")
    p.add_argument("--arch", help="architecture: conv_small, conv_large, conv_tiny")
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, help="initial learning rate")
    p.add_argument("--lr-final", type=float, help="learning rate at the last step")
    p.add_argument("--schedule", choices=["exp", "cosine"], help="learning-rate decay")
    p.add_argument("--batch-size", type=int, help="images per step, half labeled (default 100)")
    p.add_argument("--kl-mode", choices=["entropy", "eq7"], help="sign of L_KL (default entropy)")
    p.add_argument("--unsup-on", choices=["unlabeled", "all"], help="images for RC/KL/NN")
    p.add_argument("--bn-mode", choices=["separate", "joint"], help="BN statistics per half?")
    p.add_argument("--preprocess", choices=PREPROCESS,
                   help="input transform fitted on the training images (docs/datasets.md)")
    p.add_argument("--supervised-only", action="store_true", help="DCN baseline, labels only")
    p.add_argument("--no-kl", action="store_true", help="ablation: alpha_KL = 0")
    p.add_argument("--no-nn", action="store_true", help="ablation: alpha_NN = 0")
    p.add_argument("--no-rc", action="store_true", help="ablation: alpha_RC = 0")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in --out) from its checkpoint, with its"
                   " own config; flags given override it (only --epochs, --device and the like"
                   " may change without --force-resume)")
    p.add_argument("--force-resume", action="store_true",
                   help="with --resume: continue even though the settings changed (lists them)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="bf16 autocast (CUDA)")
    p.add_argument("--sync-bn", action="store_true", help="torchrun: SyncBatchNorm (CUDA)")
    p.add_argument("--contiguous", action="store_true",
                   help="NCHW layout instead of the default channels_last")
    p.add_argument("--checkpoint-every", type=int, metavar="K",
                   help="also checkpoint every K steps inside an epoch (default: epoch ends)")
    p.add_argument("--skip-nonfinite", action="store_true",
                   help="skip (and count) batches with a NaN/inf loss instead of stopping")
    p.add_argument("--no-verify", action="store_true",
                   help="do not md5-check cached data files when reading them (downloads are"
                   " always checked)")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args, base=None):
    """Preset for the dataset (or `base`, a resumed run's config) < --config YAML < flags."""
    from drmm.config import apply_overrides, load_yaml, preset

    if args.data_dir is not None:
        require_dir(args.data_dir, "--data-dir", "pass an existing folder")
    cfg = base if base is not None else preset(args.dataset or "digits")
    if base is not None and args.dataset is not None:
        cfg.train.dataset = args.dataset
    if args.config:
        apply_overrides(cfg, load_yaml(args.config), source=args.config)
    flags = {
        "train": dict(labels=args.labels, labeled_indices=args.labeled_indices,
                      channels=args.channels, image_size=args.image_size,
                      epochs=args.epochs, seed=args.seed,
                      data_dir=args.data_dir, device=args.device, optimizer=args.optimizer,
                      lr=args.lr, lr_final=args.lr_final, schedule=args.schedule,
                      batch_size=args.batch_size,
                      bn_mode=args.bn_mode, preprocess=args.preprocess,
                      checkpoint_every=args.checkpoint_every, precision=args.precision),
        "loss": dict(kl_mode=args.kl_mode, unsup_on=args.unsup_on),
        "model": dict(arch=args.arch),
    }
    apply_overrides(cfg, {s: {k: v for k, v in d.items() if v is not None}
                          for s, d in flags.items()}, source="command line")
    if args.labeled_indices is not None and args.labels is None:
        cfg.train.labels = None  # the file says how many; a preset's count does not apply
    if args.supervised_only:
        cfg.train.supervised_only = True
    if args.sync_bn:
        cfg.train.sync_bn = True
    if args.contiguous:
        cfg.train.channels_last = False
    if args.skip_nonfinite:
        cfg.train.skip_nonfinite = True
    if args.no_verify:
        cfg.train.verify = False
    if args.no_tensorboard:
        cfg.train.tensorboard = False
    for flag, key in (("no_kl", "alpha_kl"), ("no_nn", "alpha_nn"), ("no_rc", "alpha_rc")):
        if getattr(args, flag):
            setattr(cfg.loss, key, 0.0)
    return cfg


def cmd_train(args) -> int:
    from drmm.config import Config
    from drmm.train import CHECKPOINT, load_run_state, train

    out = args.out
    if isinstance(args.resume, str):  # --resume RUN_DIR
        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            raise DRMMError(f"--resume {args.resume} and --out {out} name different folders;"
                            " give --resume RUN_DIR alone")
        out = args.resume
    if out is None:
        raise DRMMError("no run folder: pass --out RUN_DIR (or --resume RUN_DIR to continue one)")
    if args.force_resume and not args.resume:
        raise DRMMError("--force-resume only applies with --resume RUN_DIR")
    base = None
    if args.resume:  # the run's own config; flags given on top are checked by train()
        base = Config.from_dict(load_run_state(Path(out) / CHECKPOINT)["config"])
    metrics = train(config_from_args(args, base), out, resume=bool(args.resume),
                    progress=not args.quiet, force_resume=args.force_resume)
    from drmm.train import describe_error

    print(f"{describe_error(metrics['test_error'])} after {metrics['epochs']} epochs"
          f" ({metrics['labels']} labels, seed {metrics['seed']}); run saved in {out}")
    return 0


def cmd_eval(args) -> int:
    from drmm.checkpoint import load_trained_model
    from drmm.data import load_run_data
    from drmm.evaluate import test_error

    require_device(args.device)
    model, cfg, state = load_trained_model(args.checkpoint)
    data = load_run_data(cfg, state, args.dataset, args.data_dir, verify=not args.no_verify)
    if not data.has_test:
        raise DRMMError(f"data set {data.name} has no test set to evaluate on; give one (npz:"
                        " x_test / y_test, folder: DIR/test/<class>/)")
    try:
        model.check_input(data.x_test[:1])
    except ValueError as e:
        raise DRMMError(f"{args.checkpoint} was trained on {cfg.train.dataset}, and {data.name}"
                        f" does not fit it ({e}); pass the run's own --dataset") from e
    k = cfg.model.num_classes
    if data.num_classes != k:
        raise DRMMError(f"{args.checkpoint} is a {k}-class model and {data.name} has"
                        f" {data.num_classes} classes; evaluate on data with the run's classes")
    err = test_error(model.to(args.device), data.x_test.to(args.device),
                     data.y_test.to(args.device))
    print(f"test error {100 * err:.2f} % ({len(data.x_test)} test images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="drmm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="semi-supervised training (hard EM)")
    add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="print the test error of a trained run",
                       description="Print the test error (%%) of a trained run on a data set's"
                                   " test images, with the BatchNorm running statistics, and"
                                   " how many test images it used.")
    p.add_argument("--checkpoint", required=True, help="a drmm run folder or its checkpoint.pt")
    p.add_argument("--dataset", help="defaults to the checkpoint's data set")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-verify", action="store_true",
                   help="do not md5-check cached data files when reading them")
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
        print("drmm: interrupted; the last checkpoint is kept (continue with --resume RUN_DIR)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
