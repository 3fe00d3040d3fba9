"""Backend names for the recipes' ``--backend`` option: ``numpy``, ``torch``, ``cupy`` -> (namespace, device)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterator

import numpy as np

from .._backend import namespace_of

__all__ = ["BACKENDS", "resolve_backend", "cpu_threads", "run_on_backend"]

BACKENDS = ("numpy", "torch", "cupy")


def resolve_backend(name: str, device: Any = None) -> tuple[Any, Any]:
    """``(xp, device)`` for a backend name: NumPy (CPU), torch through array-api-compat (``device`` default
    ``"cpu"``), CuPy (the current GPU unless ``device`` names one). ``xp`` is what :func:`arrayrl.namespace_of`
    returns for that backend's arrays."""
    if name == "numpy":
        return np, None
    if name == "torch":
        import torch

        dev = torch.device("cpu" if device is None else device)
        return namespace_of(torch.zeros(1, device=dev)), dev
    if name == "cupy":
        import cupy

        dev = cupy.cuda.Device(0 if device is None else int(device))
        with dev:
            return namespace_of(cupy.zeros(1)), dev
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Limit NumPy's OpenBLAS and torch's intra-op pool to ``n`` threads inside the block (``None``: unchanged).

    The recipes' layers are small and the loop is sequential: extra threads only busy-wait, the more so when the
    cores are shared."""
    if n is None:
        yield
        return
    from ..autodiff import blas_threads

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(int(n))
    try:
        with blas_threads(int(n)):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(old)


def run_on_backend(opts: Any, train_fn: Any) -> Any:
    """``train_fn(opts, xp, device)`` on ``opts.backend`` / ``opts.device`` with ``opts.threads`` CPU threads (the
    backend is resolved first: it imports torch/cupy, whose thread count :func:`cpu_threads` then sets)."""
    xp, device = resolve_backend(opts.backend, opts.device)
    with cpu_threads(opts.threads):
        return train_fn(opts, xp, device)
