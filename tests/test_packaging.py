"""The built wheel: only the ``arrayrl`` package (no top-level ``reference``), typed, licensed (SPDX ``MIT``), the
``arrayrl`` script, and the extras the README documents; installed from it, ``arrayrl check`` has no oracle and says
so."""

from __future__ import annotations

import email.parser
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import arrayrl

ROOT = pathlib.Path(__file__).resolve().parents[1]

pytest.importorskip("setuptools", minversion="77", reason="building the wheel needs setuptools>=77 (test extra)")
from packaging.requirements import Requirement  # noqa: E402  (pytest depends on packaging)


#: what the build reads; reference/ is copied too, to show it is left out although present
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "arrayrl", "reference")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """The wheel built from a copy of the sources (setuptools builds in-tree: a shared build/ could hold stale
    files, and parallel builds would race)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (path,) = out.glob("arrayrl-*.whl")
    return path


@pytest.fixture(scope="module")
def metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(z.read(name).decode())


def _names(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_only_arrayrl_is_installed(wheel):
    names = _names(wheel)
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"arrayrl", f"arrayrl-{arrayrl.__version__}.dist-info"}, sorted(top)
    assert not [n for n in names if n.startswith("reference/")]
    assert {"arrayrl/py.typed", "arrayrl/__main__.py", "arrayrl/cli.py", "arrayrl/check/_oracle.py"} <= set(names)


def test_license_and_entry_point(wheel, metadata):
    assert metadata["License-Expression"] == "MIT" and metadata["License-File"] == "LICENSE"
    assert metadata["Version"] == arrayrl.__version__
    with zipfile.ZipFile(wheel) as z:
        info = f"arrayrl-{arrayrl.__version__}.dist-info"
        assert z.read(f"{info}/licenses/LICENSE").decode() == (ROOT / "LICENSE").read_text()
        assert "arrayrl = arrayrl.cli:main" in z.read(f"{info}/entry_points.txt").decode()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def _extra(metadata, extra: str) -> set[str]:
    """The distribution names an extra pulls in, following self-references (``arrayrl[fast,train]``)."""
    reqs = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    out: set[str] = set()
    for r in reqs:
        if r.marker is None:
            continue
        if r.marker.evaluate({"extra": extra}):
            if r.name == "arrayrl":
                for sub in r.extras:
                    out |= _extra(metadata, sub)
            else:
                out.add(r.name)
    return out


def test_dependencies_and_extras(metadata):
    core = {Requirement(r).name for r in metadata.get_all("Requires-Dist") if Requirement(r).marker is None}
    assert core == {"numpy", "array-api-compat", "rich"}
    assert set(metadata.get_all("Provides-Extra")) >= {"test", "fast", "train", "gpu", "gpu-cuda12", "gpu-cuda13"}
    assert _extra(metadata, "fast") == {"numba"}
    assert _extra(metadata, "train") == {"gymnasium", "matplotlib", "rich"}
    assert _extra(metadata, "gpu") == _extra(metadata, "gpu-cuda12") == {"cupy-cuda12x"}
    assert _extra(metadata, "gpu-cuda13") == {"cupy-cuda13x"}
    assert _extra(metadata, "test") >= {"pytest", "hypothesis", "torch", "torchrl", "tensordict", "array-api-strict",
                                        "mypy", "numba", "gymnasium", "matplotlib"}


def test_installed_wheel_has_no_oracle(wheel, tmp_path):
    """Unpacked like pip installs it (a pure wheel): arrayrl imports from there, finds no reference/ and says why."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "import arrayrl; from arrayrl.check import _oracle\n"
            "assert arrayrl.__file__.startswith(sys.argv[1]), arrayrl.__file__\n"
            "print(_oracle.status())\n")
    res = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("skipped: the float64 oracle reference/ ships with the source checkout only")


def test_ci_runs_exactly_the_readme_test_command():
    """`.ci/run` ends with the README's test command, character for character, and the README's two commands are
    the ones documented (install + train, install + test)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Two commands on a fresh machine", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    train_cmd, test_cmd = (line.split("#", 1)[0].strip() for line in block.strip().splitlines())
    assert train_cmd == 'python -m pip install -e ".[train]" && arrayrl train dqn-cartpole'
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert ci_lines[-1] == test_cmd
    assert f"```bash\n{test_cmd}\n```" in readme  # the "Running the tests" section says the same
