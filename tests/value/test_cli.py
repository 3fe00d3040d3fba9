"""``arrayrl check``: the table, the exit status, the registry of providers, the missing-TorchRL message, argument
validation, ``--version``/``python -m arrayrl``, ``--json``, the progress reporters and the absent oracle."""

from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

import arrayrl
from arrayrl import cli
from arrayrl.check import _oracle

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _provider(monkeypatch, name, checks):
    mod = types.ModuleType(name)
    mod.CHECKS = checks
    monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(cli, "CHECK_PROVIDERS", [name])


def _ok(n, rng, tick):
    for _ in range(n):
        tick()
    return {"cases": n, "value_abs": 1e-16, "value_rel": 1e-16, "grad_abs": 0.0, "grad_rel": 0.0, "passed": True}


def _bad(n, rng, tick):
    return {"cases": n, "value_abs": 0.5, "value_rel": 0.1, "grad_abs": 0.0, "grad_rel": 0.0, "passed": False}


def _crash(n, rng, tick):
    raise RuntimeError("boom")


@pytest.fixture
def fake_torchrl(monkeypatch):
    """Pretend torch/torchrl/tensordict are installed (the fake providers do not use them)."""
    monkeypatch.setattr(cli, "_missing", lambda: [])


def _run(*argv, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env=dict(os.environ, **(env or {})))


def test_registry_table_and_exit_status(fake_torchrl, monkeypatch, capsys):
    _provider(monkeypatch, "fake_checks_ok", {"loss.ok": _ok, "loss.other": _ok})
    assert cli.main(["check", "--cases", "3"]) == 0
    out, err = capsys.readouterr()
    assert "loss.ok" in out and "loss.other" in out and "2/2 components pass" in out
    # not a terminal: one plain line per finished component, no progress bar
    assert "[1/2] loss.ok: pass (3 cases" in err and "[2/2] loss.other: pass" in err and "#" not in err
    _provider(monkeypatch, "fake_checks_bad", {"loss.ok": _ok, "loss.bad": _bad, "loss.crash": _crash})
    assert cli.main(["check", "--cases", "2", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "FAIL" in out and "loss.crash: RuntimeError: boom" in out and "failed: loss.bad, loss.crash" in out
    assert err == ""
    assert cli.main(["check", "--only", "ok", "--quiet"]) == 0
    assert cli.main(["check", "--only", "nothing-matches"]) == 2
    assert cli.main(["check", "--list"]) == 0
    assert "loss.bad" in capsys.readouterr().out


def test_duplicate_names_are_refused(monkeypatch):
    for name in ("fake_a", "fake_b"):
        mod = types.ModuleType(name)
        mod.CHECKS = {"x": _ok}
        monkeypatch.setitem(sys.modules, name, mod)
    with pytest.raises(ValueError, match="registered twice"):
        cli.collect_checks(["fake_a", "fake_b"])


def test_clear_message_without_torchrl(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_missing", lambda: ["torchrl"])
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert "torchrl is not installed" in err and "pip install" in err


def test_no_subcommand_prints_help(capsys):
    assert cli.main([]) == 2
    assert "check" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--cases", "0"], "--cases: expected a positive integer, got 0"),
    (["--cases", "-3"], "--cases: expected a positive integer, got -3"),
    (["--cases", "two"], "--cases: expected a positive integer, got 'two'"),
    (["--seed", "-1"], "--seed: expected a non-negative integer, got -1"),
])
def test_bad_arguments_are_errors(fake_torchrl, monkeypatch, capsys, argv, message):
    _provider(monkeypatch, "fake_checks_ok", {"loss.ok": _ok})
    assert cli.main(["check", *argv]) == 2
    out, err = capsys.readouterr()
    assert message in err and "components pass" not in out


def test_bad_reference_directory_is_an_error(fake_torchrl, monkeypatch, capsys, tmp_path):
    _provider(monkeypatch, "fake_checks_ok", {"loss.ok": _ok})
    assert cli.main(["check", "--reference", str(tmp_path), "--quiet"]) == 2
    assert f"reference: expected a directory holding the oracle package (with __init__.py), got {str(tmp_path)!r}" \
        in capsys.readouterr().err


def test_version_and_python_dash_m():
    assert cli.main(["--version"]) == 0
    res = _run("-m", "arrayrl", "--version")
    assert res.returncode == 0 and res.stdout.strip() == f"arrayrl {arrayrl.__version__}", res
    res = _run("-m", "arrayrl")
    assert res.returncode == 2 and "usage: arrayrl" in res.stdout and "check" in res.stdout


def test_subcommands_come_from_one_registry(monkeypatch, capsys):
    """Adding a subcommand is one entry in COMMANDS (``arrayrl train`` will be one)."""
    def configure(p):
        p.add_argument("--steps", type=int, default=1)

    extra = cli.Command("hello", "say hello", configure, lambda args: print(f"hello {args.steps}") or 0)
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, extra])
    assert cli.main(["hello", "--steps", "3"]) == 0
    assert capsys.readouterr().out == "hello 3\n"


def test_header_names_the_versions(fake_torchrl, monkeypatch, capsys):
    _provider(monkeypatch, "fake_checks_ok", {"loss.ok": _ok})
    monkeypatch.setattr(cli, "versions", lambda: {"arrayrl": "0.1.0", "numpy": "2.4", "torch": "2.13.0",
                                                  "tensordict": "0.14.3", "torchrl": "0.14.1"})
    assert cli.main(["check", "--cases", "1", "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "arrayrl check: arrayrl 0.1.0, numpy 2.4, torch 2.13.0, tensordict 0.14.3, torchrl 0.14.1"
    real = cli.versions()
    assert real["arrayrl"] == arrayrl.__version__ and real["numpy"] and real["torchrl"]


def test_json_report(fake_torchrl, monkeypatch, capsys):
    _provider(monkeypatch, "fake_checks_bad", {"loss.ok": _ok, "loss.bad": _bad, "loss.crash": _crash})
    assert cli.main(["check", "--cases", "2", "--json", "--seed", "4"]) == 1
    out, err = capsys.readouterr()
    report = json.loads(out)  # stdout is the JSON document alone; progress went to stderr
    assert report["status"] == "fail" and report["cases"] == 2 and report["seed"] == 4
    assert set(report["versions"]) >= {"arrayrl", "numpy", "torch", "torchrl"}
    assert report["reference"]["status"] in ("used", "skipped")
    by_name = {c["name"]: c for c in report["components"]}
    assert list(by_name) == ["loss.ok", "loss.bad", "loss.crash"]
    ok = by_name["loss.ok"]
    assert ok["status"] == "pass" and ok["cases"] == 2 and ok["value_abs"] == 1e-16 and ok["grad_rel"] == 0.0
    assert ok["reference_rel"] is None  # not measured: null, never NaN (invalid JSON)
    assert by_name["loss.bad"]["status"] == "fail" and by_name["loss.bad"]["value_rel"] == 0.1
    assert by_name["loss.crash"]["note"] == "RuntimeError: boom"
    assert report["summary"] == {"passed": 1, "failed": 2}
    _provider(monkeypatch, "fake_checks_ok", {"loss.ok": _ok})
    assert cli.main(["check", "--cases", "1", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "pass"


def test_json_error_without_torchrl(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_missing", lambda: ["torch", "torchrl"])
    assert cli.main(["check", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "error" and "torch, torchrl are not installed" in report["error"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_rich_on_a_terminal(monkeypatch):
    pytest.importorskip("rich")
    stream = _Terminal()
    monkeypatch.setattr(sys, "stdout", _Terminal())
    progress = cli.make_progress(quiet=False, stream=stream)
    assert type(progress).__name__ == "_RichProgress"
    rows = cli.run_checks({"loss.ok": _ok}, 3, 0, progress)
    assert rows[0]["passed"] and "loss.ok" in stream.getvalue() and "3/3" in stream.getvalue()


def test_progress_falls_back_to_plain_lines(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _Terminal())
    monkeypatch.setitem(sys.modules, "rich", None)  # rich missing
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    stream = _Terminal()
    progress = cli.make_progress(quiet=False, stream=stream)
    assert type(progress).__name__ == "_PlainProgress"
    cli.run_checks({"loss.ok": _ok, "loss.bad": _bad}, 2, 0, progress)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("[1/2] loss.ok: pass (2 cases") and lines[1].startswith("[2/2] loss.bad: FAIL (2 cases")
    assert cli.make_progress(quiet=True, stream=stream) is None


def test_list_works_without_torch():
    code = ("import sys\n"
            "for m in ('torch', 'torchrl', 'tensordict'):\n"
            "    sys.modules[m] = None  # unimportable\n"
            "from arrayrl.cli import main\n"
            "code = main(['check', '--list'])\n"
            "assert not any(m.startswith('torch') for m in sys.modules if sys.modules[m] is not None)\n"
            "sys.exit(code)\n")
    res = _run("-c", code)
    assert res.returncode == 0, res.stderr
    names = res.stdout.split()
    assert "value.GAE" in names and "loss.DQNLoss" in names


def test_oracle_found_in_the_source_checkout():
    assert _oracle.default_directory() == ROOT / "reference"
    assert _oracle.load().module is not None and _oracle.status() == f"used ({ROOT / 'reference'})"


@pytest.fixture
def no_oracle(monkeypatch):
    """arrayrl as installed from the wheel: no reference/ beside the package."""
    monkeypatch.setattr(_oracle, "default_directory", lambda: None)
    _oracle.use(None)
    yield
    monkeypatch.undo()
    _oracle.use(None)


@pytest.mark.torchrl
def test_without_the_oracle_the_reference_comparison_is_skipped(no_oracle, capsys):
    assert cli.main(["check", "--only", "td0_return_estimate", "--cases", "1", "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"] == {"status": "skipped", "reason": _oracle.load().reason}
    assert "ships with the source checkout only" in report["reference"]["reason"]
    (comp,) = report["components"]
    assert comp["status"] == "pass" and comp["reference_rel"] is None and comp["value_rel"] < 1e-12
    # pointing at the oracle explicitly brings the comparison back
    assert cli.main(["check", "--only", "td0_return_estimate", "--cases", "1", "--quiet", "--json",
                     "--reference", str(ROOT / "reference")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"]["status"] == "used" and report["components"][0]["reference_rel"] < 1e-12


@pytest.mark.torchrl
def test_value_components_pass_against_torchrl(capsys):
    assert cli.main(["check", "--cases", "2", "--quiet", "--seed", "5", "--only", "value."]) == 0
    out = capsys.readouterr().out
    for name in ("value.functional.generalized_advantage_estimate", "value.GAE", "value.MultiAgentGAE",
                 "value.VTrace", "value.functional.reward2go"):
        assert name in out
    assert "FAIL" not in out and "reference oracle: used" in out


@pytest.mark.torchrl
def test_loss_components_pass_against_torchrl(capsys):
    assert cli.main(["check", "--only", "DQN", "--cases", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "loss.DQNLoss" in out and "loss.DistributionalDQNLoss" in out
    assert "FAIL" not in out and "2/2 components pass" in out


@pytest.mark.torchrl
def test_broken_loss_fails_the_check(monkeypatch, capsys):
    """A DQN whose chosen action value is 0.1% off: its row fails and the exit status is 1."""
    import arrayrl.objectives.functional as F

    orig = F.chosen_action_value
    monkeypatch.setattr(F, "chosen_action_value", lambda *a, **k: orig(*a, **k) * 1.001)
    assert cli.main(["check", "--only", "loss.DQNLoss", "--cases", "2", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "failed: loss.DQNLoss" in out and "in case DQNLoss(" in out
