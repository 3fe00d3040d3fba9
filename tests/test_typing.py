"""arrayrl is a typed package (``py.typed``) and ``python -m mypy arrayrl`` (configured in pyproject.toml) passes.

Files that still have mypy errors would be listed in :data:`KNOWN_ERRORS` (a shrinking baseline; empty now: the
whole package is clean). An error in any other file fails the test; a listed file that has become clean only warns,
so fixing one never breaks the suite (then delete its entry).
"""

from __future__ import annotations

import collections
import pathlib
import re
import subprocess
import sys
import tempfile
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: files with mypy errors when the check was introduced (to be fixed, then removed from here)
KNOWN_ERRORS: frozenset = frozenset()

_ERROR = re.compile(r"^(?P<path>[^:\s]+\.pyi?):\d+(?::\d+)?: error: ", re.M)


def test_package_is_marked_typed():
    assert (ROOT / "arrayrl" / "py.typed").is_file()


def test_mypy_passes():
    pytest.importorskip("mypy", reason="mypy is not installed (it is in the test extra)")
    cache = pathlib.Path(tempfile.gettempdir()) / "arrayrl-mypy-cache"  # incremental: later runs take ~1 s
    res = subprocess.run([sys.executable, "-m", "mypy", "arrayrl", "--cache-dir", str(cache)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    per_file = collections.Counter(m["path"].replace("\\", "/") for m in _ERROR.finditer(out))
    assert res.returncode in (0, 1) and (res.returncode == 0) == (not per_file), out  # 2: mypy itself failed
    new = sorted(set(per_file) - KNOWN_ERRORS)
    assert not new, "mypy errors in files outside the baseline:\n" + "\n".join(
        line for line in out.splitlines() if line.split(":", 1)[0] in new)
    fixed = sorted(KNOWN_ERRORS - set(per_file))
    if fixed:
        warnings.warn(f"mypy is clean on {fixed}: remove them from KNOWN_ERRORS in tests/test_typing.py", stacklevel=1)
