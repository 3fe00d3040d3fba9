"""Error bookkeeping shared by the ``arrayrl check`` providers.

Errors are maxima over the cases. Relative errors are normwise: ``max |a - b| / max(1, max |b|)``, so values near
zero are judged absolutely. A component passes when its worst relative error (values, gradients and, where there is
one, the reference) is at most the tolerance.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np

__all__ = ["TOLERANCE", "Errors", "torch_float64"]

#: default pass threshold on the normwise relative errors (float64 everywhere)
TOLERANCE = 1e-9


def _err(a: Any, b: Any, what: str) -> tuple[float, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {a.shape}, expected {b.shape}")
    if not a.size:
        return 0.0, 0.0
    err = float(np.max(np.abs(a - b)))
    if math.isnan(err) and not np.array_equal(np.isnan(a), np.isnan(b)):
        err = math.inf
    elif math.isnan(err):  # NaN at the same places: compare the rest
        err = float(np.nanmax(np.abs(a - b))) if np.any(~np.isnan(a)) else 0.0
    return err, err / max(1.0, float(np.nanmax(np.abs(b))) if np.any(~np.isnan(b)) else 1.0)


class Errors:
    """Running maxima of the value, gradient and reference errors of one component.

    ``label`` (set per case by the caller) names the case; the labels of the first cases above ``tolerance`` are
    kept and reported in the ``note`` of :meth:`result`.
    """

    def __init__(self, tolerance: float = TOLERANCE) -> None:
        self.tolerance = tolerance
        self.cases = 0
        self.value_abs = self.value_rel = self.grad_abs = self.grad_rel = 0.0
        self.ref_abs = float("nan")
        self.label = ""
        self.bad: list[str] = []

    def _flag(self, rel: float, what: str) -> None:
        if not rel <= self.tolerance and len(self.bad) < 3:
            self.bad.append(f"{what} {rel:.1e} in case {self.label}")

    def value(self, a: Any, b: Any, what: str = "value") -> None:
        """An output ``a`` against the expected ``b`` (same shape, else AssertionError)."""
        e, r = _err(a, b, what)
        self.value_abs, self.value_rel = max(self.value_abs, e), max(self.value_rel, r)
        self._flag(r, what)

    def grad(self, a: Any, b: Any, what: str = "grad") -> None:
        e, r = _err(a, b, what)
        self.grad_abs, self.grad_rel = max(self.grad_abs, e), max(self.grad_rel, r)
        self._flag(r, what)

    def grad_error(self, abs_err: float, rel_err: float, what: str = "grad") -> None:
        """An already computed gradient error (e.g. finite differences along a direction)."""
        self.grad_abs, self.grad_rel = max(self.grad_abs, abs_err), max(self.grad_rel, rel_err)
        self._flag(rel_err, what)

    def ref(self, a: Any, b: Any, what: str = "reference") -> None:
        """Normwise relative error of an output against ``reference/`` (shapes may differ by singleton axes)."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.size != b.size:
            raise AssertionError(f"{what}: {a.size} elements, the reference has {b.size}")
        _, r = _err(a.reshape(-1), b.reshape(-1), what)
        self.ref_abs = r if math.isnan(self.ref_abs) else max(self.ref_abs, r)
        self._flag(r, what)

    def result(self) -> dict:
        worst = max(self.value_rel, self.grad_rel, 0.0 if math.isnan(self.ref_abs) else self.ref_abs)
        out: dict[str, Any] = {"cases": self.cases, "value_abs": self.value_abs, "value_rel": self.value_rel,
                               "grad_abs": self.grad_abs, "grad_rel": self.grad_rel, "ref_abs": self.ref_abs,
                               "passed": worst <= self.tolerance}
        if self.bad:
            out["note"] = "; ".join(self.bad)
        return out


@contextlib.contextmanager
def torch_float64(seed: int | None = None) -> Iterator[Any]:
    """torch's default dtype float64 (TorchRL builds its networks and buffers in it) and, with ``seed``, a forked
    torch RNG seeded with it; both are restored on exit. Yields the torch module."""
    import torch

    old = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        torch.set_default_dtype(torch.float64)
        try:
            yield torch
        finally:
            torch.set_default_dtype(old)
