"""``arrayrl check``: the table, the exit status, the registry of providers, the missing-TorchRL message."""

from __future__ import annotations

import sys
import types

import pytest

from arrayrl import cli


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


def test_registry_table_and_exit_status(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_missing", lambda: [])
    _provider(monkeypatch, "fake_checks_ok", {"loss.ok": _ok, "loss.other": _ok})
    assert cli.main(["check", "--cases", "3"]) == 0
    out, err = capsys.readouterr()
    assert "loss.ok" in out and "loss.other" in out and "2/2 components pass" in out
    assert "[" in err and "6/6" in err.replace(" ", "")  # the progress bar reached the end
    _provider(monkeypatch, "fake_checks_bad", {"loss.ok": _ok, "loss.bad": _bad, "loss.crash": _crash})
    assert cli.main(["check", "--cases", "2", "--quiet"]) == 1
    out, _ = capsys.readouterr()
    assert "FAIL" in out and "loss.crash: RuntimeError: boom" in out and "failed: loss.bad, loss.crash" in out
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


@pytest.mark.torchrl
def test_value_components_pass_against_torchrl(capsys):
    assert cli.main(["check", "--cases", "2", "--quiet", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    for name in ("value.functional.generalized_advantage_estimate", "value.GAE", "value.MultiAgentGAE",
                 "value.VTrace", "value.functional.reward2go"):
        assert name in out
    assert "FAIL" not in out


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
