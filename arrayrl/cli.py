"""The ``arrayrl`` command (also ``python -m arrayrl``).

Subcommands
-----------
Each subcommand is one :class:`Command` in :data:`COMMANDS`: a name, a help line, ``configure(parser)`` that adds
its arguments and ``run(args) -> exit status``. To add one (``arrayrl train``, say), write those two functions
(import heavy dependencies inside ``run``, so ``arrayrl --help`` stays fast and works without them) and append a
``Command`` to :data:`COMMANDS`. :func:`main` returns the exit status instead of raising ``SystemExit`` (argparse's
errors, ``--help`` and ``--version`` included).

``arrayrl check``
-----------------
Cross-validates arrayrl against the installed TorchRL (and the float64 oracle ``reference/`` where present, see
:mod:`arrayrl.check._oracle`) on random float64 cases and prints a header (the versions of arrayrl, NumPy, torch,
tensordict and TorchRL; cases, seed and whether the oracle is used) and one row per component: cases, max abs/rel
error of the values and of the gradients (arrayrl's tape vs ``torch.autograd``), the error against the oracle where
one exists, and pass/fail. ``--json`` prints a machine-readable report instead (:func:`json_report`). The exit status
is 0 when every component passes, 1 when one fails, 2 for a usage error, when torch/torchrl is missing or when no
check matches.

Progress goes to stderr: a ``rich`` progress bar when stdout and stderr are terminals, else (logs, CI, or ``rich``
not installed) one plain line per finished component; ``--quiet`` prints none.

Registry of checks
------------------
Checks come from *provider modules* listed in :data:`CHECK_PROVIDERS` (the package :mod:`arrayrl.check`: value
estimators, losses and the losses' self-consistency checks). A provider exposes ``CHECKS``, a dict
``{component name: fn}`` with ``fn(n_cases, rng, tick) -> dict`` where ``rng`` is a ``numpy.random.Generator``,
``tick()`` is called once per finished case (progress bar), and the dict holds ``cases``, ``value_abs``,
``value_rel``, ``grad_abs``, ``grad_rel``, ``passed`` and optionally ``ref_abs`` (normwise relative error against
``reference/``) and ``note``. A provider imports torch/torchrl inside its functions, so listing it costs nothing.
To add components (losses...), write a provider module and append its dotted name to :data:`CHECK_PROVIDERS`
(nothing imports this module, so providers cannot register themselves here).

Usage::

    arrayrl --version
    arrayrl check                      # every component, 20 cases each
    arrayrl check --cases 100 --seed 3
    arrayrl check --only gae vtrace    # components whose name contains one of the words
    arrayrl check --only loss.         # the losses
    arrayrl check --json > report.json # for another library's CI
    arrayrl check --reference ~/src/arrayrl/reference   # the oracle of a checkout, next to an installed wheel
    arrayrl check --list
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import IO, Any, Callable, Protocol, Sequence

from . import __version__

__all__ = [
    "main", "Command", "COMMANDS", "CHECK_PROVIDERS", "collect_checks", "run_checks", "versions", "make_progress",
    "format_table", "json_report",
]

#: dotted names of modules exposing ``CHECKS = {name: fn}`` (append yours)
CHECK_PROVIDERS: list[str] = [
    "arrayrl.check.value",
    "arrayrl.check.losses",
]

_REQUIRED = ("torch", "torchrl", "tensordict")
#: the distributions whose versions head the report (arrayrl's own comes from ``arrayrl.__version__``)
_VERSIONED = ("numpy", "torch", "tensordict", "torchrl")
#: version of the ``--json`` document layout (bump when a field changes meaning or disappears)
JSON_SCHEMA = 1

CheckFn = Callable[[int, Any, Callable[[], None]], dict]


# ------------------------------------------------------------------------------------------------- subcommands
@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure(parser)`` adds its arguments, ``run(args)`` returns the exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    """argparse ``type=``: an integer ``>= low``, else an error naming the option, expected and actual value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


# ---------------------------------------------------------------------------------------------- arrayrl check
def collect_checks(providers: Sequence[str] | None = None) -> dict[str, CheckFn]:
    """``{component name: check function}`` from every provider module (in order)."""
    out: dict[str, CheckFn] = {}
    for mod in providers if providers is not None else CHECK_PROVIDERS:
        checks = getattr(importlib.import_module(mod), "CHECKS")
        for name, fn in checks.items():
            if name in out:
                raise ValueError(f"check {name!r} is registered twice (by {mod})")
            out[name] = fn
    return out


def versions() -> dict[str, str]:
    """``{distribution: version}`` of arrayrl and of :data:`_VERSIONED` ("not installed" when absent), read from the
    installed metadata: nothing is imported."""
    out = {"arrayrl": __version__}
    for name in _VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class Progress(Protocol):
    """What :func:`run_checks` reports to: the run begins (how many components, cases each), a component starts,
    a case finishes, a component finishes, the run ends."""

    def begin(self, n_components: int, cases: int) -> None: ...

    def start(self, name: str) -> None: ...

    def tick(self) -> None: ...

    def finish(self, row: dict) -> None: ...

    def close(self) -> None: ...


class _PlainProgress:
    """One line per finished component (``[3/14] value.GAE: pass (20 cases, 0.41 s)``), flushed at once: for logs."""

    def __init__(self, stream: IO[str]) -> None:
        self.n, self.i, self.stream = 0, 0, stream

    def begin(self, n_components: int, cases: int) -> None:
        self.n, self.i = n_components, 0

    def start(self, name: str) -> None:
        pass

    def tick(self) -> None:
        pass

    def finish(self, row: dict) -> None:
        self.i += 1
        result = "pass" if row.get("passed") else "FAIL"
        self.stream.write(f"[{self.i}/{self.n}] {row['name']}: {result} ({row.get('cases', 0)} cases, "
                          f"{row['seconds']:.2f} s)\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class _RichProgress:
    """A ``rich`` progress bar over all the cases, labelled with the running component; it vanishes at the end."""

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=Console(file=stream), transient=True)
        self.task = self.bar.add_task("", total=1)

    def begin(self, n_components: int, cases: int) -> None:
        self.bar.update(self.task, total=max(1, n_components * cases), completed=0)
        self.bar.start()

    def start(self, name: str) -> None:
        self.bar.update(self.task, description=name)

    def tick(self) -> None:
        self.bar.advance(self.task)

    def finish(self, row: dict) -> None:
        pass

    def close(self) -> None:
        self.bar.refresh()
        self.bar.stop()


def make_progress(quiet: bool, stream: IO[str] | None = None) -> Progress | None:
    """None when ``quiet``; a :class:`_RichProgress` on ``stream`` (default stderr) when stdout and ``stream`` are
    terminals and ``rich`` imports; else a :class:`_PlainProgress`."""
    if quiet:
        return None
    stream = stream if stream is not None else sys.stderr
    interactive = all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, stream))
    if interactive:
        try:
            return _RichProgress(stream)
        except ImportError:
            pass
    return _PlainProgress(stream)


def run_checks(checks: dict[str, CheckFn], cases: int, seed: int, progress: Progress | None = None) -> list[dict]:
    """Run every check; a check that raises is reported as failed with the exception as note."""
    import numpy as np

    def tick() -> None:
        if progress is not None:
            progress.tick()

    rows = []
    if progress is not None:
        progress.begin(len(checks), cases)
    try:
        for i, (name, fn) in enumerate(checks.items()):
            if progress is not None:
                progress.start(name)
            rng = np.random.default_rng([seed, i])
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():  # TorchRL's own deprecation chatter
                    warnings.filterwarnings("ignore", module=r"(torchrl|tensordict|torch)(\..*)?$")
                    res = dict(fn(cases, rng, tick))
            except Exception as err:  # noqa: BLE001 - a crashing check is a failing check, reported in the table
                res = {"cases": 0, "passed": False, "note": f"{type(err).__name__}: {err}"}
            res["name"] = name
            res["seconds"] = time.perf_counter() - t0
            rows.append(res)
            if progress is not None:
                progress.finish(res)
    finally:
        if progress is not None:
            progress.close()
    return rows


def _number(v: Any) -> float | None:
    """A measured error as a JSON number; None where not measured, NaN or infinite."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _fmt(v: Any) -> str:
    """A table cell: ``1.2e-16``, ``inf``, or ``-`` where not measured (None or NaN)."""
    return f"{v:.1e}" if isinstance(v, (int, float)) and not math.isnan(v) else "-"


def format_table(rows: list[dict]) -> str:
    """The report's table: one row per component, then the notes."""
    head = ["component", "cases", "value abs", "value rel", "grad abs", "grad rel", "vs reference", "result"]
    body = [[r["name"], str(r.get("cases", 0)), _fmt(r.get("value_abs")), _fmt(r.get("value_rel")),
             _fmt(r.get("grad_abs")), _fmt(r.get("grad_rel")), _fmt(r.get("ref_abs")),
             "pass" if r.get("passed") else "FAIL"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body]
    for r in rows:
        if r.get("note"):
            out.append(f"  {r['name']}: {r['note']}")
    return "\n".join(out)


def _oracle_json() -> dict:
    from .check import _oracle

    found = _oracle.load()
    if found.module is not None:
        return {"status": "used", "path": str(found.directory)}
    return {"status": "skipped", "reason": found.reason}


def json_report(rows: list[dict] | None, *, cases: int, seed: int, error: str | None = None) -> dict:
    """The ``--json`` document.

    ``schema`` (:data:`JSON_SCHEMA`), ``tool``, ``versions`` (:func:`versions`), ``cases``, ``seed``,
    ``reference`` (``{"status": "used", "path"}`` or ``{"status": "skipped", "reason"}``), ``components`` (one
    object per component: ``name``, ``status`` ``"pass"``/``"fail"``, ``cases``, ``value_abs``, ``value_rel``,
    ``grad_abs``, ``grad_rel``, ``reference_rel`` (normwise relative error against the oracle), ``seconds``,
    ``note``; errors are null where not measured or not finite), ``summary`` (``passed``, ``failed``) and
    ``status``: ``"pass"``, ``"fail"`` or ``"error"`` (then ``error`` says why and ``components`` is empty).
    """
    components = [{
        "name": r["name"], "status": "pass" if r.get("passed") else "fail", "cases": int(r.get("cases", 0)),
        "value_abs": _number(r.get("value_abs")), "value_rel": _number(r.get("value_rel")),
        "grad_abs": _number(r.get("grad_abs")), "grad_rel": _number(r.get("grad_rel")),
        "reference_rel": _number(r.get("ref_abs")), "seconds": _number(r.get("seconds")), "note": r.get("note"),
    } for r in rows or []]
    failed = sum(c["status"] == "fail" for c in components)
    out: dict[str, Any] = {"schema": JSON_SCHEMA, "tool": "arrayrl check", "versions": versions(), "cases": cases,
                           "seed": seed, "reference": _oracle_json(), "components": components,
                           "summary": {"passed": len(components) - failed, "failed": failed}}
    out["status"] = "error" if error is not None else ("fail" if failed else "pass")
    if error is not None:
        out["error"] = error
    return out


def _missing() -> list[str]:
    return [m for m in _REQUIRED if importlib.util.find_spec(m) is None]


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=_int_at_least(1, "a positive integer"), default=20,
                   help="random cases per component (default 20)")
    p.add_argument("--seed", type=_int_at_least(0, "a non-negative integer"), default=0)
    p.add_argument("--only", nargs="+", metavar="WORD", help="only components whose name contains a WORD")
    p.add_argument("--list", action="store_true", help="list the components and exit (needs no torch)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    p.add_argument("--reference", metavar="DIR",
                   help="the float64 oracle directory (default: reference/ of the source checkout, if any)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def cmd_check(args: argparse.Namespace) -> int:
    """``arrayrl check`` (see the module docstring)."""
    from .check import _oracle

    def fail(message: str) -> int:
        if args.json:
            print(json.dumps(json_report(None, cases=args.cases, seed=args.seed, error=message), indent=2))
        else:
            print(message, file=sys.stderr)
        return 2

    checks = collect_checks()
    if args.list:
        print(json.dumps(list(checks)) if args.json else "\n".join(checks))
        return 0
    missing = _missing()
    if missing:
        return fail(f"arrayrl check cross-validates against TorchRL, but {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not installed.\n"
                    "Install the test extras: pip install 'arrayrl[test]' (torch, tensordict, torchrl 0.14.1).")
    if args.only:
        checks = {n: f for n, f in checks.items() if any(w.lower() in n.lower() for w in args.only)}
        if not checks:
            return fail(f"no check matches {args.only}; see `arrayrl check --list`")
    if args.reference is not None:
        try:
            _oracle.use(args.reference)
        except ValueError as err:
            return fail(str(err))
    try:
        return _report(args, checks, _oracle.status())
    finally:
        if args.reference is not None:
            _oracle.use(None)


def _report(args: argparse.Namespace, checks: dict[str, CheckFn], oracle_status: str) -> int:
    if not args.json:
        print("arrayrl check: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
        print(f"{args.cases} cases per component, seed {args.seed}; reference oracle: {oracle_status}\n", flush=True)
    rows = run_checks(checks, args.cases, args.seed, make_progress(args.quiet))
    failed = [r["name"] for r in rows if not r.get("passed")]
    if args.json:
        print(json.dumps(json_report(rows, cases=args.cases, seed=args.seed), indent=2))
    else:
        print(format_table(rows))
        print(f"\n{len(rows) - len(failed)}/{len(rows)} components pass"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _configure_train(parser: argparse.ArgumentParser) -> None:
    from .recipes.cli import add_train_arguments  # (imports neither gymnasium nor matplotlib)

    add_train_arguments(parser)


def cmd_train(args: argparse.Namespace) -> int:
    """``arrayrl train RECIPE``: see :mod:`arrayrl.recipes`."""
    from .recipes.cli import run_train

    return run_train(args)


#: the subcommands, in ``--help`` order (append yours)
COMMANDS: list[Command] = [
    Command("check", "cross-validate arrayrl against the installed TorchRL and the float64 oracle",
            _configure_check, cmd_check),
    Command("train", "train an agent with a recipe on gymnasium (needs the 'train' extra)", _configure_train,
            cmd_train),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``arrayrl`` parser with ``--version`` and one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="arrayrl", description="arrayrl command-line tools")
    parser.add_argument("--version", action="version", version=f"arrayrl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``arrayrl`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # usage errors (2), --help and --version (0)
        return done.code if isinstance(done.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    if not sys.stdout.isatty():  # logs see each line when it is written
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    try:
        return int(args._run(args))
    except BrokenPipeError:  # `arrayrl check --json | head`: the reader left; exit quietly, not with a traceback
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
