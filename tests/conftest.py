"""Shared fixtures: the ``xp`` backend fixture and Hypothesis profiles.

``xp`` runs a test once per backend present:

* ``numpy``
* ``array_api_strict`` (default device, float64)
* ``array_api_strict-f32`` (its ``no_float64`` device: float32 only)
* ``torch`` (CPU, through array-api-compat)
* ``cupy`` (only where a GPU is present)
* ``taped-numpy`` (the autodiff tape's namespace over NumPy), and ``taped-cupy`` where a GPU is present

The fixture value is a :class:`Backend`: it forwards attribute access to the namespace (``xp.exp``,
``xp.float64``...) and adds ``from_numpy``/``to_numpy``, ``float_dtype`` (float64 where the backend has it),
``device``, ``name`` and ``rtol``/``atol`` scaled to ``float_dtype``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from arrayrl._backend import to_numpy as _to_numpy

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
    derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=400,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


HAS_TORCH = has_module("torch")
HAS_TORCHRL = HAS_TORCH and has_module("torchrl") and has_module("tensordict")


def _has_gpu_cupy() -> bool:
    if not has_module("cupy"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any CUDA failure means "no GPU"
        return False


@dataclass
class Backend:
    """One backend under test. Attribute access falls through to the namespace."""

    name: str
    ns: Any
    device: Any
    float_dtype: Any
    wrap: Callable[[Any], Any] | None = None  # applied after conversion (the taped backend wraps in Tensor)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.ns, item)

    @property
    def is_float64(self) -> bool:
        return "float64" in str(self.float_dtype)

    @property
    def rtol(self) -> float:
        return 1e-10 if self.is_float64 else 2e-4

    @property
    def atol(self) -> float:
        return 1e-10 if self.is_float64 else 2e-5

    def from_numpy(self, a: Any, dtype: Any = None) -> Any:
        """Convert a NumPy array (or scalar) to this backend; floating arrays get ``float_dtype`` by default."""
        a = np.asarray(a)
        if dtype is None:
            if a.dtype.kind == "f":
                dtype = self.float_dtype
            elif a.dtype.kind == "b":
                dtype = self.ns.bool
            elif a.dtype.kind in "iu":
                dtype = self.ns.int64 if "no_x64" not in str(self.device) else self.ns.int32
        base = getattr(self.ns, "_arrayrl_base", self.ns)
        out = base.asarray(a, dtype=dtype, device=self.device) if self.device is not None else base.asarray(a, dtype=dtype)
        return self.wrap(out) if self.wrap is not None else out

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return _to_numpy(x)

    def __repr__(self) -> str:
        return f"Backend({self.name})"


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        return Backend("numpy", np, None, np.float64)
    if name == "array_api_strict":
        import array_api_strict as s

        return Backend(name, s, s.Device("CPU_DEVICE"), s.float64)
    if name == "array_api_strict-f32":
        import array_api_strict as s

        return Backend(name, s, s.Device("no_float64"), s.float32)
    if name == "torch":
        import array_api_compat.torch as t

        return Backend(name, t, "cpu", t.float64)
    if name == "cupy":
        import array_api_compat.cupy as c

        return Backend(name, c, None, c.float64)
    if name == "taped-numpy":
        from arrayrl.autodiff import Tensor

        ns = Tensor(np.zeros(())).__array_namespace__()
        return Backend(name, ns, None, np.float64, wrap=Tensor)
    if name == "taped-cupy":
        import cupy

        from arrayrl.autodiff import Tensor

        ns = Tensor(cupy.zeros(())).__array_namespace__()
        return Backend(name, ns, None, cupy.float64, wrap=Tensor)
    raise ValueError(name)


BACKENDS = ["numpy", "array_api_strict", "array_api_strict-f32"]
if HAS_TORCH:
    BACKENDS.append("torch")
if _has_gpu_cupy():
    BACKENDS.append("cupy")
if has_module("arrayrl.autodiff"):
    BACKENDS.append("taped-numpy")
    if _has_gpu_cupy():
        BACKENDS.append("taped-cupy")


@pytest.fixture(params=BACKENDS)
def xp(request) -> Backend:
    """Every backend present (see module docstring)."""
    try:
        return _make_backend(request.param)
    except ImportError as err:  # pragma: no cover - optional backend not installed
        pytest.skip(f"{request.param} unavailable: {err}")


@pytest.fixture(params=[b for b in BACKENDS if not b.startswith("taped")])
def raw_xp(request) -> Backend:
    """Every backend present except the taped namespace (for tests that build tapes themselves)."""
    return _make_backend(request.param)


def pytest_collection_modifyitems(config, items):
    """Skip TorchRL cross-validation cleanly when torch/torchrl are missing."""
    if HAS_TORCHRL:
        return
    skip = pytest.mark.skip(reason="torch/torchrl/tensordict not installed")
    for item in items:
        if "torchrl" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fresh_pool():
    """An empty, enabled buffer pool (``arrayrl._pool``) at the default cap for one test; the previous state is
    restored after it (the pool tests use it through ``pytestmark``)."""
    from arrayrl import _pool

    old = _pool.set_buffer_pool(True, max_bytes=_pool.DEFAULT_MAX_BYTES)
    _pool.clear_buffer_pool()
    yield
    _pool.set_buffer_pool(old, max_bytes=_pool.DEFAULT_MAX_BYTES)
    _pool.clear_buffer_pool()
