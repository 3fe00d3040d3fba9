"""The ``train`` command: ``arrayrl train RECIPE [--total-steps N] [--seed S] [--backend B] [--out DIR] [--set K=V]``.

:func:`add_train_parser` registers it on an ``argparse`` sub-parser set, :func:`run_train` runs it. ``--set`` overrides
any field of the recipe's ``Options`` (``--set learning_starts=100 --set hidden_sizes=64,64``), parsed with the
field's type. ``python -m arrayrl.recipes RECIPE ...`` is the same command on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .backends import BACKENDS
from .registry import RECIPES, get_recipe

__all__ = ["add_train_parser", "add_train_arguments", "run_train", "main", "parse_overrides"]


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("recipe", choices=sorted(RECIPES), help="the recipe to run")
    parser.add_argument("--total-steps", type=int, default=None, help="environment steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's, 1)")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="array backend (default numpy)")
    parser.add_argument("--device", default=None, help="torch device (default cpu) or CuPy GPU index")
    parser.add_argument("--out", default=None, help="output directory (default runs/<recipe>-seed<S>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe option, e.g. --set learning_starts=100 (repeatable)")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="force the progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="plain progress lines")
    return parser


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command to ``subparsers`` (from ``parser.add_subparsers()``); dispatch to
    :func:`run_train` via ``args.func``."""
    parser = subparsers.add_parser("train", help="train an agent with a recipe (needs the 'train' extra)",
                                   description=__doc__.split("\n\n")[0])
    add_train_arguments(parser)
    parser.set_defaults(func=run_train)
    return parser


def _convert(value: str, default: Any, annotation: Any) -> Any:
    """``value`` parsed as the type of the field (from its default, or its annotation string)."""
    text = str(annotation)
    if isinstance(default, bool) or text.startswith("bool"):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if value.lower() == "none" and ("None" in text or default is None):
        return None
    if isinstance(default, tuple):
        return tuple(type(default[0])(v) for v in value.split(",") if v) if default else tuple(value.split(","))
    if isinstance(default, int):
        return int(float(value)) if "e" in value.lower() else int(value)  # 5e5 is accepted
    if isinstance(default, float):
        return float(value)
    return value


def parse_overrides(options_cls: type, items: list[str]) -> dict:
    """``["k=v", ...]`` -> ``{field: typed value}`` for the dataclass ``options_cls`` (unknown keys raise)."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else None
        try:
            out[key] = _convert(value.strip(), default, f.type)
        except ValueError as e:
            raise ValueError(f"--set {item!r}: {e}") from None
    return out


def run_train(args: argparse.Namespace) -> int:
    """Run ``args.recipe`` with the command-line options; returns the exit status."""
    recipe = get_recipe(args.recipe)
    try:
        kwargs = parse_overrides(recipe.Options, args.overrides)
    except ValueError as e:
        print(f"arrayrl train: {e}", file=sys.stderr)
        return 2
    for flag, field in (("total_steps", "total_timesteps"), ("seed", "seed"), ("backend", "backend"),
                        ("device", "device"), ("out", "out"), ("progress", "progress")):
        value = getattr(args, flag, None)
        if value is not None:
            kwargs[field] = value
    summary = recipe.train(recipe.Options(**kwargs))
    if not summary.losses_finite:
        print(f"arrayrl train: non-finite loss in {args.recipe}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m arrayrl.recipes RECIPE ...``."""
    parser = add_train_arguments(argparse.ArgumentParser(prog="python -m arrayrl.recipes",
                                                         description=__doc__.split("\n\n")[0]))
    return run_train(parser.parse_args(argv))
