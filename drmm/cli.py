"""drmm: semi-supervised learning with the Deep Rendering Mixture Model (Nguyen et al., 2016).

The command line: train, eval, predict, and the paper's experiments (reproduce, render,
analyze, sample). User errors (bad paths, checksums, arguments) print one line and exit with
code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drmm import __version__, export, label, predict, report, reproduce, suggest
from drmm.analysis import cli as analysis_cli
from drmm.analysis import sample
from drmm.checkpoint import CHECKPOINT, load_run_state, load_trained_model
from drmm.config import Config, apply_overrides, load_yaml, preset
from drmm.config_args import add_config_args, config_overrides, given
from drmm.data import load_run_data
from drmm.errors import DRMMError, OneLineParser, require_device, tolerant_output
from drmm.evaluate import confusion, error_rate, worst_confusion
from drmm.files import require_dir
from drmm.records import describe_confusion, describe_error, describe_percent
from drmm.run_folder import resume_folder
from drmm.synthetic import cli as synthetic_cli
from drmm.train import train

# Further subcommands: each module defines register(subparsers), which adds one parser and sets
# its func.
COMMANDS = (predict, reproduce, synthetic_cli, analysis_cli, sample, export, suggest, report,
            label)


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="run folder for checkpoint, metrics, pictures (required unless"
                   " --resume RUN_DIR)")
    p.add_argument("--config", help="YAML file with model/loss/train sections")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in --out) from its checkpoint, with its"
                   " own config; flags given override it (only --epochs, --device and the like"
                   " may change without --force-resume)")
    p.add_argument("--force-resume", action="store_true",
                   help="with --resume: continue even though the settings changed (lists them)")
    p.add_argument("--no-kl", action="store_true", help="ablation: alpha_KL = 0")
    p.add_argument("--no-nn", action="store_true", help="ablation: alpha_NN = 0")
    p.add_argument("--no-rc", action="store_true", help="ablation: alpha_RC = 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(p)


def config_from_args(args, base=None):
    """Preset for the dataset (or `base`, a resumed run's config) < --config YAML < flags."""
    flags = config_overrides(args)
    dataset = flags.get("train", {}).get("dataset")
    data_dir = flags.get("train", {}).get("data_dir")
    if data_dir is not None:
        require_dir(data_dir, "--data-dir", "pass an existing folder")
    channels = flags.get("train", {}).get("channels")  # a folder's preset follows its images
    cfg = base if base is not None else preset(dataset or "digits", channels)
    if args.config:
        apply_overrides(cfg, load_yaml(args.config), source=args.config)
    apply_overrides(cfg, flags, source="command line")
    if given(args, "train.labeled_indices") and not given(args, "train.labels"):
        cfg.train.labels = None  # the file says how many; a preset's count does not apply
    for flag, key in (("no_kl", "alpha_kl"), ("no_nn", "alpha_nn"), ("no_rc", "alpha_rc")):
        if getattr(args, flag):
            setattr(cfg.loss, key, 0.0)
    return cfg


def cmd_train(args) -> int:
    out = args.out
    if isinstance(args.resume, str):  # --resume RUN_DIR
        if out is not None and Path(out).resolve() != Path(args.resume).resolve():
            raise DRMMError(f"--resume {args.resume} and --out {out} name different folders;"
                            " give --resume RUN_DIR alone")
        out = resume_folder(args.resume)  # RUN_DIR, or RUN_DIR/checkpoint.pt
    if out is None:
        raise DRMMError("no run folder: pass --out RUN_DIR (or --resume RUN_DIR to continue one)")
    if args.force_resume and not args.resume:
        raise DRMMError("--force-resume only applies with --resume RUN_DIR")
    base = None
    if args.resume:  # the run's own config; flags given on top are checked by train()
        base = Config.from_dict(load_run_state(Path(out) / CHECKPOINT)["config"])
    metrics = train(config_from_args(args, base), out, resume=bool(args.resume),
                    progress=not args.quiet, force_resume=args.force_resume)
    print(f"{describe_percent(metrics['test_error_percent'])} after {metrics['epochs']} epochs"
          f" ({metrics['labels']} labels, seed {metrics['seed']}); run saved in {out}")
    return 0


def cmd_eval(args) -> int:
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
    counts = confusion(model.to(args.device), data.x_test.to(args.device),
                       data.y_test.to(args.device))  # (K, K)
    print(f"{describe_error(error_rate(counts))} ({len(data.x_test)} test images)"
          f"{describe_confusion(worst_confusion(counts), data.class_names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="drmm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="semi-supervised training (hard EM)")
    add_train_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="print the test error of a trained run",
                       description="Print the test error (%) of a trained run on a data set's"
                                   " test images, with the BatchNorm running statistics, and"
                                   " how many test images it used.")
    p.add_argument("--checkpoint", required=True, help="a drmm run folder or its checkpoint.pt")
    p.add_argument("--dataset", help="defaults to the checkpoint's data set")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-verify", action="store_true",
                   help="do not md5-check cached data files when reading them")
    p.set_defaults(func=cmd_eval)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    tolerant_output()  # file names that are not UTF-8 print, escaped
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
