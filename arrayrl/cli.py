"""The ``arrayrl`` command.

``arrayrl check`` cross-validates arrayrl against the installed TorchRL (and ``reference/``) on random float64
cases and prints one row per component: cases, max abs/rel error of the values and of the gradients (arrayrl's
tape vs ``torch.autograd``), the error against the float64 loop oracle where one exists, and pass/fail. The exit
status is 0 when every component passes, 1 when one fails, 2 when torch/torchrl is missing (or no check matches).

Registry
--------
Checks come from *provider modules* listed in :data:`CHECK_PROVIDERS` (the package :mod:`arrayrl.check`: value
estimators, losses and the losses' self-consistency checks). A provider exposes ``CHECKS``, a dict
``{component name: fn}`` with ``fn(n_cases, rng, tick) -> dict`` where ``rng`` is a ``numpy.random.Generator``,
``tick()`` is called once per finished case (progress bar), and the dict holds ``cases``, ``value_abs``,
``value_rel``, ``grad_abs``, ``grad_rel``, ``passed`` and optionally ``ref_abs`` (error against ``reference/``) and
``note``. A provider imports torch/torchrl inside its functions, so listing it costs nothing. To add components
(losses...), write a provider module and append its dotted name to :data:`CHECK_PROVIDERS` (nothing imports this
module, so providers cannot register themselves here).

Usage::

    arrayrl check                      # every component, 20 cases each
    arrayrl check --cases 100 --seed 3
    arrayrl check --only gae vtrace    # components whose name contains one of the words
    arrayrl check --only loss.         # the losses
    arrayrl check --list
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import sys
import time
import warnings
from typing import Callable, Sequence

__all__ = ["main", "CHECK_PROVIDERS", "collect_checks", "run_checks"]

#: dotted names of modules exposing ``CHECKS = {name: fn}`` (append yours)
CHECK_PROVIDERS: list[str] = [
    "arrayrl.check.value",
    "arrayrl.check.losses",
]

_REQUIRED = ("torch", "torchrl", "tensordict")


def collect_checks(providers: Sequence[str] | None = None) -> dict[str, Callable]:
    """``{component name: check function}`` from every provider module (in order)."""
    out: dict[str, Callable] = {}
    for mod in providers if providers is not None else CHECK_PROVIDERS:
        checks = getattr(importlib.import_module(mod), "CHECKS")
        for name, fn in checks.items():
            if name in out:
                raise ValueError(f"check {name!r} is registered twice (by {mod})")
            out[name] = fn
    return out


class _Progress:
    """A plain-text progress bar on stderr: ``[#####.....]  52/240  value.GAE``."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.done, self.width = max(1, total), 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.label = ""
        self.interactive = getattr(self.stream, "isatty", lambda: False)()
        self._last = -1

    def set(self, label: str) -> None:
        self.label = label
        self._draw(force=True)

    def tick(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self, force: bool = False) -> None:
        filled = int(self.width * self.done / self.total)
        if not self.interactive:  # logs: one line per 10% and per component
            step = int(10 * self.done / self.total)
            if not force and step == self._last:
                return
            self._last = step
        bar = "#" * filled + "." * (self.width - filled)
        end = "" if self.interactive else "\n"
        self.stream.write(f"\r[{bar}] {self.done:4d}/{self.total:<4d} {self.label:<48}{end}")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


def run_checks(checks: dict[str, Callable], cases: int, seed: int, progress: _Progress | None = None) -> list[dict]:
    """Run every check; a check that raises is reported as failed with the exception as note."""
    import numpy as np

    rows = []
    for i, (name, fn) in enumerate(checks.items()):
        if progress is not None:
            progress.set(name)
        rng = np.random.default_rng([seed, i])
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # TorchRL's own deprecation chatter
                warnings.filterwarnings("ignore", module=r"(torchrl|tensordict|torch)(\..*)?$")
                res = dict(fn(cases, rng, progress.tick if progress is not None else (lambda: None)))
        except Exception as err:  # noqa: BLE001 - a crashing check is a failing check, reported in the table
            res = {"cases": 0, "passed": False, "note": f"{type(err).__name__}: {err}"}
        res["name"] = name
        res["seconds"] = time.perf_counter() - t0
        rows.append(res)
    if progress is not None:
        progress.close()
    return rows


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.1e}"


def format_table(rows: list[dict]) -> str:
    head = ["component", "cases", "value abs", "value rel", "grad abs", "grad rel", "vs reference", "result"]
    body = [[r["name"], str(r.get("cases", 0)), _fmt(r.get("value_abs")), _fmt(r.get("value_rel")),
             _fmt(r.get("grad_abs")), _fmt(r.get("grad_rel")), _fmt(r.get("ref_abs")),
             "pass" if r.get("passed") else "FAIL"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body]
    for r in rows:
        if r.get("note"):
            out.append(f"  {r['name']}: {r['note']}")
    return "\n".join(out)


def _missing() -> list[str]:
    return [m for m in _REQUIRED if importlib.util.find_spec(m) is None]


def cmd_check(args: argparse.Namespace) -> int:
    missing = _missing()
    if missing:
        print(
            f"arrayrl check cross-validates against TorchRL, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed.\n"
            "Install the test extras: pip install 'arrayrl[test]' (torch, tensordict, torchrl 0.14.1).",
            file=sys.stderr,
        )
        return 2
    checks = collect_checks()
    if args.list:
        print("\n".join(checks))
        return 0
    if args.only:
        checks = {n: f for n, f in checks.items() if any(w.lower() in n.lower() for w in args.only)}
        if not checks:
            print(f"no check matches {args.only}; see `arrayrl check --list`", file=sys.stderr)
            return 2
    progress = None if args.quiet else _Progress(args.cases * len(checks))
    rows = run_checks(checks, args.cases, args.seed, progress)
    print(format_table(rows))
    failed = [r["name"] for r in rows if not r.get("passed")]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} components pass" + (f"; failed: {', '.join(failed)}" if failed
                                                                          else ""))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arrayrl", description="arrayrl command-line tools")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("check", help="cross-validate arrayrl against the installed TorchRL and reference/")
    p.add_argument("--cases", type=int, default=20, help="random cases per component (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", metavar="WORD", help="only components whose name contains a WORD")
    p.add_argument("--list", action="store_true", help="list the components and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
