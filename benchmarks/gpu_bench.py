"""GPU benchmarks (CuPy): estimators vs the HBM copy bound and TorchRL, loss steps vs plain torch on CUDA.

Tables (markdown, written to ``--out``):

* ``estimators-gpu.md``: GAE and TD(lambda) (float32, scalar gamma/lmbda, done/terminated masks) at several
  ``[B, T]`` shapes, batch-major ``[B, T, 1]`` and time-major ``[T, B]``: arrayrl's fused CuPy kernel
  (:mod:`arrayrl._cupy_kernels`), arrayrl's generic array-API code on CuPy, TorchRL's
  ``vec_generalized_advantage_estimate`` / ``vec_td_lambda_return_estimate`` on CUDA (when installed), and the
  copy bound: the bytes the fused pass must move (inputs read once, outputs written once) at the device-to-device
  copy bandwidth measured here with CuPy.
* ``losses-gpu.md``: forward + backward steps of a DQN loss (MLP 8-256-256-4, Huber TD error), a PPO clipped
  objective (Gaussian policy MLP, value MLP) and a SAC actor loss (TanhNormal rsample with given noise, Q MLP), with
  arrayrl's tape on CuPy against the same formulas in plain torch autograd on CUDA (same weights; the loss values
  are compared).

Protocol: warm-up, then the median of ``--repeats`` timings of ``--calls`` calls each, the device synchronised
before and after every timing. Sides alternate per repeat. Needs neither torchrl nor gymnasium; torch is optional.

``--dry-run`` runs everything on NumPy (and torch on CPU if present) at tiny sizes to check the script itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

GAMMA, LMBDA = 0.99, 0.95


# ----------------------------------------------------------------------------------------------------- devices


class Device:
    """The array module under test (CuPy, or NumPy for ``--dry-run``) and its torch counterpart."""

    def __init__(self, dry_run: bool):
        self.dry = dry_run
        if dry_run:
            self.xp = np
        else:
            import cupy

            self.xp = cupy
        try:
            import torch

            self.torch = torch
            self.tdev = "cuda" if (not dry_run and torch.cuda.is_available()) else ("cpu" if dry_run else None)
        except ImportError:
            self.torch, self.tdev = None, None

    def sync(self) -> None:
        if not self.dry:
            self.xp.cuda.Device().synchronize()
        if self.tdev == "cuda":
            self.torch.cuda.synchronize()

    def name(self) -> str:
        if self.dry:
            return f"NumPy (dry run) on {platform.machine()}"
        props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def put(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def tput(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.tdev)


def timeit(dev: Device, fn: Callable, calls: int, warmup: int = 3) -> float:
    """Seconds per call of ``fn`` (one timing of ``calls`` calls, the device synchronised around it)."""
    for _ in range(warmup):
        fn()
    dev.sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    dev.sync()
    return (time.perf_counter() - t0) / calls


def alternate(dev: Device, sides: dict, calls: int, repeats: int) -> dict:
    """``{side: median seconds per call}``; the sides alternate within each repeat."""
    times: dict = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            times[k].append(timeit(dev, fn, calls))
    return {k: statistics.median(v) for k, v in times.items()}


def copy_bandwidth(dev: Device, nbytes: int, repeats: int) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of a ``nbytes`` buffer."""
    xp = dev.xp
    src = xp.ones((nbytes // 4,), dtype=xp.float32)
    dst = xp.empty_like(src)
    t = statistics.median(timeit(dev, lambda: xp.copyto(dst, src), 10) for _ in range(repeats))
    return 2 * src.nbytes / t


# -------------------------------------------------------------------------------------------------- estimators


def estimator_table(dev: Device, shapes: list, calls: int, repeats: int) -> list[str]:
    from arrayrl import _cupy_kernels as K
    from arrayrl.value import functional as F

    bw = copy_bandwidth(dev, 1 << 20 if dev.dry else 1 << 30, repeats)
    lines = [f"Copy bandwidth (device to device, read + write): {bw / 1e9:.1f} GB/s.", "",
             "| estimator | shape [B, T] | layout | side | per call (us) | copy bound (us) | bound / side |",
             "|---|---|---|---|---:|---:|---:|"]
    rng = np.random.default_rng(0)
    tfun = _torchrl_functions(dev)
    for B, T in shapes:
        for layout in ("batch-major", "time-major"):
            shape, axis = ((B, T, 1), 1) if layout == "batch-major" else ((T, B), 0)
            v, nv, r = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
            done = rng.random(size=shape) < 0.02
            term = done & (rng.random(size=shape) < 0.5)
            dv, dnv, dr, dd, dt = map(dev.put, (v, nv, r, done, term))
            n = v.size
            for est in ("gae", "td_lambda"):
                nbytes = n * ((3 if est == "gae" else 2) * 4 + 2 + (2 if est == "gae" else 1) * 4)
                sides = {}
                if est == "gae":
                    sides["arrayrl kernel"] = lambda: K.try_gae(GAMMA, LMBDA, dv, dnv, dr, dd, dt, axis)

                    def generic():
                        with K.generic_path():
                            return F.generalized_advantage_estimate(GAMMA, LMBDA, dv, dnv, dr, dd, dt, time_dim=axis)
                else:
                    sides["arrayrl kernel"] = lambda: K.try_td_lambda(GAMMA, LMBDA, dnv, dr, dd, dt, axis)

                    def generic():
                        with K.generic_path():
                            return F.td_lambda_return_estimate(GAMMA, LMBDA, dnv, dr, dd, dt, time_dim=axis)
                sides["arrayrl generic"] = generic
                if dev.dry:
                    sides.pop("arrayrl kernel")  # NumPy: the CuPy kernel does not apply
                if tfun is not None and layout == "batch-major":
                    sides["torchrl"] = _torchrl_side(dev, tfun, est, v, nv, r, done, term)
                med = alternate(dev, sides, calls, repeats)
                bound = nbytes / bw
                for side, t in med.items():
                    lines.append(f"| {est} | [{B}, {T}] | {layout} | {side} | {t * 1e6:.1f} | {bound * 1e6:.1f} | "
                                 f"{bound / t:.2f} |")
    return lines


def _torchrl_functions(dev: Device) -> Any:
    if dev.torch is None or dev.tdev is None:
        return None
    try:
        from torchrl.objectives.value import functional as TF
    except ImportError:
        return None
    return TF


def _torchrl_side(dev: Device, TF: Any, est: str, v, nv, r, done, term) -> Callable:
    tv, tnv, tr, td, tt = (dev.tput(a) for a in (v, nv, r, done, term))
    if est == "gae":
        return lambda: TF.vec_generalized_advantage_estimate(GAMMA, LMBDA, tv, tnv, tr, td, tt, time_dim=-2)
    return lambda: TF.vec_td_lambda_return_estimate(GAMMA, LMBDA, tnv, tr, td, tt, time_dim=-2)


# ------------------------------------------------------------------------------------------------------ losses


def _mlp_params(rng, sizes: list) -> dict:
    """torch.nn.Linear's init, weights [out, in] (the layout of arrayrl.ops.linear and torch)."""
    p = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(n_in)
        p[f"w{i}"] = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32)
        p[f"b{i}"] = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
    return p


def _mlp(p: dict, x, linear) -> Any:
    n = len(p) // 2
    for i in range(n):
        x = linear(x, p[f"w{i}"], p[f"b{i}"], "relu" if i < n - 1 else None)
    return x


def _torch_linear(x, w, b, act):
    import torch

    y = torch.nn.functional.linear(x, w, b)
    return torch.relu(y) if act == "relu" else y


def _loss_problems(batch: int, hidden: int, rng) -> dict:
    """Each problem: ``(numpy params, numpy data, arrayrl loss(params, data), torch loss(params, data))``."""
    from arrayrl import namespace_of, ops

    obs, act_n, act_dim, f = 8, 4, 2, np.float32
    h = [hidden, hidden]

    def dqn(p, d):
        xp = namespace_of(p["q"]["w0"], d["obs"])
        q = xp.take_along_axis(_mlp(p["q"], d["obs"], ops.linear), d["action"], axis=-1)
        nq = xp.max(_mlp(d["target"], d["next_obs"], ops.linear), axis=-1, keepdims=True)
        y = d["reward"] + 0.99 * (1.0 - xp.astype(d["done"], nq.dtype)) * nq
        return xp.mean(ops.smooth_l1(q - y))

    def dqn_t(p, d):
        import torch

        q = _mlp(p["q"], d["obs"], _torch_linear).gather(-1, d["action"])
        with torch.no_grad():
            nq = _mlp(d["target"], d["next_obs"], _torch_linear).max(-1, keepdim=True).values
            y = d["reward"] + 0.99 * (1.0 - d["done"].float()) * nq
        return torch.nn.functional.smooth_l1_loss(q, y)

    def ppo(p, d, torch_side=False):
        if torch_side:
            import torch as xp

            lin = _torch_linear
        else:
            xp = namespace_of(p["pi"]["w0"], d["obs"])
            lin = ops.linear
        mu = _mlp(p["pi"], d["obs"], lin)
        log_std = p["log_std"]
        z = (d["action"] - mu) / xp.exp(log_std)
        lp = xp.sum(-0.5 * z * z - log_std - 0.9189385332046727, axis=-1, keepdims=True)
        ratio = xp.exp(lp - d["old_lp"])
        adv = d["adv"]
        obj = xp.minimum(ratio * adv, xp.clip(ratio, min=0.8, max=1.2) * adv)
        v = _mlp(p["v"], d["obs"], lin)
        return -xp.mean(obj) + 0.5 * xp.mean((v - d["ret"]) ** 2)

    def sac(p, d, torch_side=False):
        if torch_side:
            import torch as xp

            lin, softplus = _torch_linear, xp.nn.functional.softplus
        else:
            xp = namespace_of(p["pi"]["w0"], d["obs"])
            lin, softplus = ops.linear, ops.softplus
        out = _mlp(p["pi"], d["obs"], lin)
        mu, log_std = out[:, :act_dim], xp.clip(out[:, act_dim:], min=-5.0, max=2.0)
        std = xp.exp(log_std)
        u = mu + std * d["eps"]
        a = xp.tanh(u)
        logp = xp.sum(-0.5 * d["eps"] ** 2 - log_std - 0.9189385332046727
                      - 2.0 * (0.6931471805599453 - u - softplus(-2.0 * u)), axis=-1, keepdims=True)
        q = _mlp(d["qnet"], xp.concat([d["obs"], a], axis=-1) if not torch_side else xp.cat([d["obs"], a], dim=-1),
                 lin)
        return xp.mean(0.2 * logp - q)

    B = batch
    common = {"obs": rng.normal(size=(B, obs)).astype(f)}
    problems = {
        "DQN": ({"q": _mlp_params(rng, [obs, *h, act_n])},
                dict(common, action=rng.integers(0, act_n, (B, 1)), next_obs=rng.normal(size=(B, obs)).astype(f),
                     reward=rng.normal(size=(B, 1)).astype(f), done=rng.random((B, 1)) < 0.1,
                     target=_mlp_params(rng, [obs, *h, act_n])),
                dqn, dqn_t),
        "PPO": ({"pi": _mlp_params(rng, [obs, *h, act_dim]), "v": _mlp_params(rng, [obs, *h, 1]),
                 "log_std": np.full((act_dim,), -0.5, f)},
                dict(common, action=rng.normal(size=(B, act_dim)).astype(f), old_lp=rng.normal(size=(B, 1)).astype(f),
                     adv=rng.normal(size=(B, 1)).astype(f), ret=rng.normal(size=(B, 1)).astype(f)),
                ppo, lambda p, d: ppo(p, d, torch_side=True)),
        "SAC actor": ({"pi": _mlp_params(rng, [obs, *h, 2 * act_dim])},
                      dict(common, eps=rng.normal(size=(B, act_dim)).astype(f),
                           qnet=_mlp_params(rng, [obs + act_dim, *h, 1])),
                      sac, lambda p, d: sac(p, d, torch_side=True)),
    }
    return problems


def _tree(tree: Any, fn: Callable) -> Any:
    return {k: _tree(v, fn) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


def loss_table(dev: Device, batches: list, hidden: int, calls: int, repeats: int) -> list[str]:
    from arrayrl.autodiff import value_and_grad

    lines = ["| loss | batch | arrayrl (CuPy tape) us | torch us | torch / arrayrl | losses agree |",
             "|---|---:|---:|---:|---:|---|"]
    for batch in batches:
        for name, (params, data, fn, tfn) in _loss_problems(batch, hidden, np.random.default_rng(1)).items():
            p, d = _tree(params, dev.put), _tree(data, dev.put)
            vg = value_and_grad(fn)
            sides = {"arrayrl": lambda: vg(p, d)}
            if dev.tdev is not None:
                torch = dev.torch
                tp = _tree(params, lambda a: dev.tput(a).requires_grad_(True))
                td = _tree(data, lambda a: dev.tput(a.astype(np.int64) if a.dtype.kind == "i" else a))
                leaves = [leaf for sub in tp.values() for leaf in (sub.values() if isinstance(sub, dict) else [sub])]

                def torch_step(tp=tp, td=td, leaves=leaves, tfn=tfn):
                    loss = tfn(tp, td)
                    grads = torch.autograd.grad(loss, leaves)
                    return loss, grads

                sides["torch"] = torch_step
            med = alternate(dev, sides, calls, repeats)
            value = float(vg(p, d)[0])
            if "torch" in med:
                tval = float(sides["torch"]()[0].detach())
                agree = "yes" if abs(value - tval) <= 1e-4 * max(1.0, abs(tval)) else f"NO ({value} vs {tval})"
                tcol, ratio = f"{med['torch'] * 1e6:.1f}", f"{med['torch'] / med['arrayrl']:.2f}x"
            else:
                tcol, ratio, agree = "-", "-", "-"
            lines.append(f"| {name} | {batch} | {med['arrayrl'] * 1e6:.1f} | {tcol} | {ratio} | {agree} |")
    return lines


# ------------------------------------------------------------------------------------------------------ driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the markdown tables")
    ap.add_argument("--dry-run", action="store_true", help="NumPy (and torch CPU) at tiny sizes: checks the script")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--only", choices=["estimators", "losses"], default=None)
    args = ap.parse_args()
    dev = Device(args.dry_run)
    if args.dry_run:
        shapes, batches, hidden, args.repeats, args.calls = [(4, 16)], [32], 8, 1, 1
    else:
        shapes, batches, hidden = [(4096, 1024), (1024, 4096), (16, 65536), (1, 1_000_000)], [256, 4096, 65536], 256
    os.makedirs(args.out, exist_ok=True)
    head = [f"Device: {dev.name()}; torch: {getattr(dev.torch, '__version__', 'absent')} on {dev.tdev}; "
            f"Python {platform.python_version()}; command: `python benchmarks/gpu_bench.py {' '.join(sys.argv[1:])}`.",
            f"Median of {args.repeats} timings of {args.calls} calls each, sides alternated, device synchronised.", ""]
    jobs = {"estimators": ("estimators-gpu.md", "GAE / TD(lambda) on the GPU, float32",
                           lambda: estimator_table(dev, shapes, args.calls, args.repeats)),
            "losses": ("losses-gpu.md", "Loss steps (forward + backward) on the GPU, float32",
                       lambda: loss_table(dev, batches, hidden, args.calls, args.repeats))}
    for key, (fname, title, run) in jobs.items():
        if args.only not in (None, key):
            continue
        lines = [f"# {title}", "", *head, *run()]
        path = os.path.join(args.out, fname)
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print("\n".join(lines), f"\nwrote {path}", flush=True)


if __name__ == "__main__":
    main()
