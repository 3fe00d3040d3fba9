"""The reference must never import arrayrl (directly or indirectly) and uses only numpy/math/stdlib typing."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import reference

ROOT = pathlib.Path(reference.__file__).parent
ALLOWED_TOP_LEVEL = {"numpy", "math", "__future__", "typing"}


def test_no_forbidden_imports_in_source():
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:  # relative import inside reference/
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_TOP_LEVEL, f"{path.name}: imports {name}"


def test_importing_reference_does_not_load_arrayrl():
    code = (
        "import sys, reference, reference.value, reference.distributions, reference.gradcheck, reference.losses\n"
        "from reference.losses import dqn, distributional, qmixer, iql, ppo, a2c, sac, ddpg_td3, redq_crossq_tqc, cql_bc, dt_rnd, gail, dreamer, common\n"
        "bad = sorted(m for m in sys.modules if m == 'arrayrl' or m.startswith('arrayrl.') or m == 'torch')\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_arrayrl_check_loads_the_oracle_without_claiming_the_name(tmp_path):
    """``arrayrl check`` finds the oracle beside the package (source checkout), not through ``import reference``: it
    is loaded under a private name, so an unrelated ``reference`` module is neither used nor shadowed."""
    (tmp_path / "reference.py").write_text("raise AssertionError('an unrelated module called reference')\n")
    code = (
        "import sys\n"
        "from arrayrl.check import _oracle, value\n"
        "value._functional_specs()\n"
        "assert 'reference' not in sys.modules, sys.modules['reference']\n"
        "assert _oracle.MODULE_NAME + '.value' in sys.modules\n"
        "assert _oracle.submodule('losses.dqn').__name__ == _oracle.MODULE_NAME + '.losses.dqn'\n"
        "print(_oracle.status())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"used ({ROOT})"
