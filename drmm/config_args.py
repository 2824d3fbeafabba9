"""Command-line flags generated from the config dataclasses (drmm.config).

One flag per setting, named after its field (`train.lr_final` -> `--lr-final`), its help the
comment on the field's line, its choices those of drmm.config.CHOICES; a boolean is `--X` when
it is off by default and `--no-X` when it is on. Every flag defaults to None, so that only the
flags given override the preset and the --config file. Adding a setting to the config is all it
takes to have its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from drmm.config import CHOICES, LossConfig, ModelConfig, TrainConfig, field_help

# Config sections with command-line flags; the model's other fields are read off the data.
SECTIONS = {"train": TrainConfig, "loss": LossConfig, "model": ModelConfig}
MODEL_FLAGS = ("arch",)
DEST = "config:"  # prefix of the argparse destinations that hold config values
METAVARS = {int: "N", float: "X", str: "VALUE"}


def flag_fields() -> list[tuple[str, dataclasses.Field]]:
    """(section, field) of every setting that has a flag."""
    return [(section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if section != "model" or f.name in MODEL_FLAGS]


def base_type(hint) -> type:
    """int for `int | None`, and so on."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if union else [hint]
    return kinds[0]


def add_config_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "settings", "each overrides the data set's preset and the --config file; the defaults"
        " are in drmm/config.py, and the run's own in RUN_DIR/config.json")
    helps = {section: field_help(cls) for section, cls in SECTIONS.items()}  # reads the source
    hints = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}
    for section, f in flag_fields():
        comment = helps[section][f.name]
        kind = base_type(hints[section][f.name])
        name, dest = f.name.replace("_", "-"), f"{DEST}{section}.{f.name}"
        if kind is bool:
            on = f.default is True  # on by default: the flag turns it off
            group.add_argument(f"--no-{name}" if on else f"--{name}", dest=dest,
                               action="store_const", const=not on, default=None,
                               help=f"turn off: {comment}" if on else comment)
            continue
        choices = [c for c in CHOICES.get(f"{section}.{f.name}", ()) if c is not None]
        group.add_argument(f"--{name}", dest=dest, type=kind, choices=choices or None,
                           default=None, help=comment,
                           metavar=None if choices else METAVARS[kind])


def config_overrides(args: argparse.Namespace) -> dict[str, dict]:
    """{section: {field: value}} of the flags given."""
    out: dict[str, dict] = {}
    for dest, value in vars(args).items():
        if dest.startswith(DEST) and value is not None:
            section, key = dest[len(DEST):].split(".")
            out.setdefault(section, {})[key] = value
    return out


def given(args: argparse.Namespace, key: str) -> bool:
    """Whether the flag of setting `key` ("train.labels") was given."""
    return getattr(args, f"{DEST}{key}", None) is not None


__all__ = ["add_config_args", "config_overrides", "flag_fields", "given"]
