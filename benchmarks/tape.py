"""Tape benchmark: forward + backward of a DQN loss, arrayrl's tape on NumPy vs plain torch vs TorchRL's DQNLoss.

Loss (all sides identical, float32): MLP 4 -> 64 -> 64 -> 2 with ReLU; ``Q(s, a)`` gathered with the taken action;
TD target ``r + gamma (1 - done) max_a Q_target(s', a)`` from a separate target network (no gradient); Huber
(smooth L1, beta = 1) averaged over the batch; gradient w.r.t. the online network's parameters.

Sides (each one runs in its OWN subprocess with default thread settings; sides alternate A, B, C, A, B, C ... for
several rounds; the table reports the median over rounds of each subprocess's median per-call time):

* ``arrayrl``: :func:`arrayrl.autodiff.value_and_grad` on NumPy arrays (``arrayrl.nn.MLP``: one fused
  linear + ReLU node per layer), library defaults (the buffer pool of :mod:`arrayrl._pool` on), no process tuning;
* ``arrayrl-nopool``: ``set_buffer_pool(False)`` (every temporary freshly allocated, the former default);
* ``arrayrl+malloc``: pool off, after :func:`arrayrl.autodiff.tune_allocator` (glibc mmap/trim thresholds);
* ``arrayrl+1thread``: after :func:`arrayrl.autodiff.set_blas_threads` ``(1)``;
* ``arrayrl+tuned``: pool off, ``tune_allocator()`` + ``set_blas_threads(1)``;
* ``SIDE@NAME`` (with ``--tree NAME=PATH``): an arrayrl side (``arrayrl@before``, ``plain@before``) run on another
  copy of the library (``PYTHONPATH=PATH``), e.g. the tree before a change, for before/after tables.

* ``torch``: ``torch.nn`` + autograd, hand-written loss;
* ``torchrl``: ``DQNLoss(QValueActor(MLP), loss_function="smooth_l1", delay_value=True)`` forward + backward on a
  TensorDict.

User code written with plain array-API ops (no fused library paths), the same loss (:func:`plain_dqn_loss`):
ReLU as ``xp.maximum(x @ w + b, 0.0)``, ``take_along_axis``, ``max`` over actions, a ``where``-based Huber:

* ``plain``: :func:`plain_dqn_loss` under :func:`arrayrl.autodiff.value_and_grad` on NumPy, library defaults;
* ``torch-plain``: the same function written with torch ops (``torch.maximum``, ``take_along_dim``, ``where``,
  ``amax``) under ``torch.autograd.grad``, torch defaults;
* ``numpy-manual``: the floor: the same forward pass and its backward pass written by hand in NumPy (no tape).

Every side also reports the minor page faults per call of its process (``resource.getrusage().ru_minflt`` over
the timed calls). The target network of the plain sides runs on raw arrays in the user's code (NumPy's own
products and allocations, not arrayrl's).

The "Reading the numbers" section of benchmarks/results/tape-cpu.md is written by hand after a run (a new run
rewrites the tables only and drops it).

Usage::

    python benchmarks/tape.py                     # full run, writes benchmarks/results/tape-cpu.md
    python benchmarks/tape.py --rounds 3 --batches 256
    python benchmarks/tape.py --side arrayrl --batch 256   # one subprocess (used by the driver)
    python benchmarks/tape.py --sides arrayrl@before arrayrl arrayrl+malloc --tree before=/tmp/old --modes default
    python benchmarks/tape.py --sides plain@before plain torch-plain numpy-manual --tree before=/tmp/old --modes single
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

OBS, HIDDEN, ACTIONS, GAMMA = 4, 64, 2, 0.99
SIDES = ["arrayrl", "arrayrl-nopool", "arrayrl+malloc", "arrayrl+1thread", "arrayrl+tuned", "torch", "torchrl",
         "plain", "torch-plain", "numpy-manual"]
# arrayrl variants: (tune_allocator, set_blas_threads, buffer pool on)
POLICIES = {
    "arrayrl": (False, None, True),
    "arrayrl-nopool": (False, None, False),
    "arrayrl+malloc": (True, None, False),
    "arrayrl+1thread": (False, 1, True),
    "arrayrl+tuned": (True, 1, False),
}
#: what the table says about each side's process policy
POLICY_TEXT = {
    "arrayrl": "none (library defaults: buffer pool)",
    "arrayrl-nopool": "set_buffer_pool(False)",
    "arrayrl+malloc": "tune_allocator(), no pool",
    "arrayrl+1thread": "set_blas_threads(1)",
    "arrayrl+tuned": "tune_allocator() + set_blas_threads(1), no pool",
    "torch": "torch defaults",
    "torchrl": "torch defaults",
    "plain": "none (library defaults), plain array-API ops",
    "torch-plain": "torch defaults, torch.autograd.grad",
    "numpy-manual": "hand-written NumPy backward (floor)",
}


# --------------------------------------------------------------------------------------------------------- data


def make_batch(batch: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(batch, OBS)).astype(np.float32),
        "action": rng.integers(0, ACTIONS, size=(batch, 1)).astype(np.int64),
        "next_obs": rng.normal(size=(batch, OBS)).astype(np.float32),
        "reward": rng.normal(size=(batch, 1)).astype(np.float32),
        "done": (rng.random(size=(batch, 1)) < 0.1),
    }


def make_params(seed: int = 1):
    """PyTorch-style uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) init, weights stored (in, out)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = [OBS, HIDDEN, HIDDEN, ACTIONS]
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(n_in)
        params[f"w{i}"] = rng.uniform(-bound, bound, size=(n_in, n_out)).astype(np.float32)
        params[f"b{i}"] = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
    return params


# --------------------------------------------------------------------------------------------------------- sides


def arrayrl_step_fn(batch_np, params_np, tuned: bool, blas_threads: int | None, pool: bool = True):
    """The loss on arrayrl's tape: ``arrayrl.nn.MLP`` (fused linear + ReLU nodes) and array-API calls."""
    from arrayrl import namespace_of, ops
    from arrayrl.autodiff import set_blas_threads, tune_allocator, value_and_grad
    from arrayrl.nn import MLP

    if not pool:
        from arrayrl._pool import set_buffer_pool

        set_buffer_pool(False)
    if tuned:
        assert tune_allocator(), "tune_allocator failed (not glibc?)"
    if blas_threads:
        assert set_blas_threads(blas_threads) is not None, "OpenBLAS not found"

    mlp = MLP(in_features=OBS, out_features=ACTIONS, num_cells=[HIDDEN, HIDDEN], activation_class="relu")
    # torch's layout ([out, in] weights), keyed by the nn.Sequential index as TorchRL's MLP
    params = {k: {"weight": params_np[f"w{i}"].T.copy(), "bias": params_np[f"b{i}"]} for i, k in enumerate(("0", "2", "4"))}
    target_params = {k: {n: v.copy() for n, v in layer.items()} for k, layer in params.items()}

    def dqn_loss(params, target_params, b):
        q = mlp.apply(params, b["obs"])
        xp = namespace_of(q)
        q_sa = xp.take_along_axis(q, b["action"], axis=-1)
        next_q = xp.max(mlp.apply(target_params, b["next_obs"]), axis=-1, keepdims=True)  # raw: no tape
        not_done = 1.0 - xp.astype(b["done"], next_q.dtype)
        target = b["reward"] + (GAMMA * not_done) * next_q
        return xp.mean(ops.smooth_l1(q_sa - target))

    vg = value_and_grad(dqn_loss)

    def step():
        return vg(params, target_params, batch_np)

    return step


def plain_dqn_loss(params, target_params, b):
    """The DQN loss written with plain array-API ops, as a user would (weights stored ``(in, out)``).

    ``q = relu(relu(x W0 + b0) W1 + b1) W2 + b2`` with ``relu(z) = maximum(z, 0.0)``; ``d = Q(s, a) - (r + gamma
    (1 - done) max_a Q_target(s', a))``; ``mean(where(|d| < 1, 0.5 d^2, |d| - 0.5))``.
    """
    from arrayrl import namespace_of

    xp = namespace_of(params["w0"])

    def q_net(p, x):
        h = xp.maximum(x @ p["w0"] + p["b0"], 0.0)
        h = xp.maximum(h @ p["w1"] + p["b1"], 0.0)
        return h @ p["w2"] + p["b2"]

    q_sa = xp.take_along_axis(q_net(params, b["obs"]), b["action"], axis=-1)
    next_q = xp.max(q_net(target_params, b["next_obs"]), axis=-1, keepdims=True)
    not_done = 1.0 - xp.astype(b["done"], next_q.dtype)
    d = q_sa - (b["reward"] + (GAMMA * not_done) * next_q)
    ad = xp.abs(d)
    return xp.mean(xp.where(ad < 1.0, 0.5 * d * d, ad - 0.5))


def plain_step_fn(batch_np, params_np):
    from arrayrl.autodiff import value_and_grad

    target_np = {k: v.copy() for k, v in params_np.items()}
    vg = value_and_grad(plain_dqn_loss)

    def step():
        return vg(params_np, target_np, batch_np)

    return step


def torch_plain_step_fn(batch_np, params_np):
    """:func:`plain_dqn_loss` with torch ops, differentiated by ``torch.autograd.grad``."""
    import torch

    params = {k: torch.from_numpy(v.copy()).requires_grad_(True) for k, v in params_np.items()}
    target = {k: torch.from_numpy(v.copy()) for k, v in params_np.items()}
    b = {k: torch.from_numpy(v) for k, v in batch_np.items()}
    zero = torch.zeros((), dtype=torch.float32)
    leaves = list(params.values())

    def q_net(p, x):
        h = torch.maximum(x @ p["w0"] + p["b0"], zero)
        h = torch.maximum(h @ p["w1"] + p["b1"], zero)
        return h @ p["w2"] + p["b2"]

    def loss_fn(p, tp):
        q_sa = torch.take_along_dim(q_net(p, b["obs"]), b["action"], dim=-1)
        next_q = torch.amax(q_net(tp, b["next_obs"]), dim=-1, keepdim=True)
        not_done = 1.0 - b["done"].to(next_q.dtype)
        d = q_sa - (b["reward"] + (GAMMA * not_done) * next_q)
        ad = torch.abs(d)
        return torch.mean(torch.where(ad < 1.0, 0.5 * d * d, ad - 0.5))

    def step():
        loss = loss_fn(params, target)
        grads = torch.autograd.grad(loss, leaves)
        return loss, grads

    return step


def numpy_manual_step_fn(batch_np, params_np):
    """The floor: :func:`plain_dqn_loss`'s forward pass and its backward pass by hand in NumPy (no tape)."""
    import numpy as np

    p = params_np
    tp = {k: v.copy() for k, v in params_np.items()}
    obs, nobs, act = batch_np["obs"], batch_np["next_obs"], batch_np["action"]
    rows = np.arange(obs.shape[0])
    not_done = 1.0 - batch_np["done"].astype(np.float32)
    n = obs.shape[0]

    def step():
        z0 = obs @ p["w0"] + p["b0"]
        h0 = np.maximum(z0, 0.0)
        z1 = h0 @ p["w1"] + p["b1"]
        h1 = np.maximum(z1, 0.0)
        q = h1 @ p["w2"] + p["b2"]
        t0 = np.maximum(nobs @ tp["w0"] + tp["b0"], 0.0)
        t1 = np.maximum(t0 @ tp["w1"] + tp["b1"], 0.0)
        next_q = np.max(t1 @ tp["w2"] + tp["b2"], axis=-1, keepdims=True)
        d = q[rows, act[:, 0]][:, None] - (batch_np["reward"] + (GAMMA * not_done) * next_q)
        ad = np.abs(d)
        loss = np.mean(np.where(ad < 1.0, 0.5 * d * d, ad - 0.5))
        gd = np.clip(d, -1.0, 1.0) * np.float32(1.0 / n)
        gq = np.zeros_like(q)
        gq[rows, act[:, 0]] = gd[:, 0]
        g = {"w2": h1.T @ gq, "b2": gq.sum(0)}
        gz1 = np.where(z1 > 0, gq @ p["w2"].T, 0.0)
        g["w1"], g["b1"] = h0.T @ gz1, gz1.sum(0)
        gz0 = np.where(z0 > 0, gz1 @ p["w1"].T, 0.0)
        g["w0"], g["b0"] = obs.T @ gz0, gz0.sum(0)
        return loss, g

    return step


def torch_step_fn(batch_np, params_np):
    import torch
    import torch.nn.functional as F

    net = _torch_mlp(params_np)
    target = _torch_mlp(params_np)
    for p in target.parameters():
        p.requires_grad_(False)
    b = {k: torch.from_numpy(v) for k, v in batch_np.items()}

    def step():
        q_sa = net(b["obs"]).gather(-1, b["action"])
        with torch.no_grad():
            next_q = target(b["next_obs"]).max(-1, keepdim=True).values
            tgt = b["reward"] + GAMMA * (~b["done"]).float() * next_q
        loss = F.smooth_l1_loss(q_sa, tgt)
        net.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    return step


def _torch_mlp(params_np):
    import torch
    from torch import nn

    net = nn.Sequential(nn.Linear(OBS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, ACTIONS))
    with torch.no_grad():
        for i, j in enumerate((0, 2, 4)):
            net[j].weight.copy_(torch.from_numpy(params_np[f"w{i}"].T.copy()))
            net[j].bias.copy_(torch.from_numpy(params_np[f"b{i}"]))
    return net


def torchrl_step_fn(batch_np, params_np):
    import torch
    from tensordict import TensorDict
    from torch import nn
    from torchrl.modules import MLP, QValueActor
    from torchrl.objectives import DQNLoss

    mlp = MLP(in_features=OBS, out_features=ACTIONS, num_cells=[HIDDEN, HIDDEN], activation_class=nn.ReLU)
    with torch.no_grad():
        linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(params_np[f"w{i}"].T.copy()))
            lin.bias.copy_(torch.from_numpy(params_np[f"b{i}"]))
    actor = QValueActor(mlp, in_keys=["observation"], action_space="categorical")
    loss_mod = DQNLoss(actor, loss_function="smooth_l1", delay_value=True, action_space="categorical")
    loss_mod.make_value_estimator(gamma=GAMMA)
    B = batch_np["obs"].shape[0]
    done = torch.from_numpy(batch_np["done"])
    td = TensorDict(
        {
            "observation": torch.from_numpy(batch_np["obs"]),
            "action": torch.from_numpy(batch_np["action"][:, 0]),
            "next": {
                "observation": torch.from_numpy(batch_np["next_obs"]),
                "reward": torch.from_numpy(batch_np["reward"]),
                "done": done,
                "terminated": done.clone(),
            },
        },
        batch_size=[B],
    )
    params = list(loss_mod.parameters())

    def step():
        out = loss_mod(td)
        for p in params:
            p.grad = None
        out["loss"].backward()
        return out["loss"]

    return step


def run_side(side: str, batch: int, min_time: float) -> dict:
    import resource

    batch_np, params_np = make_batch(batch), make_params()
    side = side.split("@", 1)[0]  # SIDE@NAME: another library tree, found through PYTHONPATH (set by the driver)
    if side in POLICIES:
        malloc, threads, pool = POLICIES[side]
        step = arrayrl_step_fn(batch_np, params_np, tuned=malloc, blas_threads=threads, pool=pool)
    elif side == "torch":
        step = torch_step_fn(batch_np, params_np)
    elif side == "torchrl":
        step = torchrl_step_fn(batch_np, params_np)
    elif side in _PLAIN_SIDES:
        step = _PLAIN_SIDES[side](batch_np, params_np)
    else:
        raise ValueError(side)
    out = step()
    value = float(out[0].detach() if side == "torch-plain" else out[0] if isinstance(out, tuple) else out.detach())
    t_end = time.perf_counter() + min_time * 0.3  # warm-up
    while time.perf_counter() < t_end:
        step()
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t_end = time.perf_counter() + min_time
    while time.perf_counter() < t_end or len(times) < 20:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / len(times)
    return {"side": side, "batch": batch, "median_s": statistics.median(times), "n": len(times), "loss": value,
            "faults": faults}


_PLAIN_SIDES = {"plain": plain_step_fn, "torch-plain": torch_plain_step_fn, "numpy-manual": numpy_manual_step_fn}


# --------------------------------------------------------------------------------------------------------- driver


def drive(args) -> None:
    lines = [
        "# Tape benchmark (CPU): DQN loss forward + backward",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()}-core CPU, possibly shared with other jobs while measured (load "
        f"average {os.getloadavg()[0]:.2f} at the start), so absolute times are noisy; ratios are the meaningful numbers. "
        f"Python {platform.python_version()}. Command: `python benchmarks/tape.py {' '.join(sys.argv[1:])}`.",
        "",
        "MLP 4->64->64->2 ReLU, Q(s,a) by take_along_axis/gather, TD target with a separate target network (no grad), "
        "smooth L1 mean, float32, gradient w.r.t. the online parameters (`plain`, `torch-plain`, `numpy-manual`: the same "
        "loss written with plain ops, `maximum(x @ w + b, 0.0)` ReLU and a `where` Huber; see the script's docstring). "
        "Each side runs in its own subprocess, sides "
        f"alternate, {args.rounds} rounds; per-call time = median over rounds of each run's median. `TorchRL / side` > 1 "
        "means the side is faster than TorchRL's DQNLoss, `torch-plain / side` > 1 that it is faster than the plain-ops "
        "loss under torch.autograd. `losses agree`: same loss value as plain torch (1e-5). Page faults: minor faults "
        "per call (`getrusage`) of each side's process.",
    ]
    for mode in args.modes:
        lines += ["", *_run_mode(args, mode)]
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.2f}."]
    print("\n".join(lines))
    if args.write:
        os.makedirs(os.path.dirname(args.write), exist_ok=True)
        with open(args.write, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"wrote {args.write}")


def _run_mode(args, mode: str) -> list[str]:
    results: dict[tuple, list] = {}
    faults: dict[tuple, list] = {}
    losses: dict[tuple, float] = {}
    trees = dict(t.split("=", 1) for t in args.tree)
    env = dict(os.environ, RL_WARNINGS="False")
    if mode == "single":
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for r in range(args.rounds):
        for batch in args.batches:
            for side in args.sides:
                cmd = [sys.executable, __file__, "--side", side, "--batch", str(batch), "--min-time", str(args.min_time)]
                side_env = env
                if "@" in side:
                    path = trees[side.split("@", 1)[1]]
                    side_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")])))
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=side_env)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((side, batch), []).append(res["median_s"])
                faults.setdefault((side, batch), []).append(res.get("faults"))
                losses[(side, batch)] = res["loss"]
                print(
                    f"[{mode}] round {r} batch {batch:5d} {side:16s} {res['median_s'] * 1e6:9.1f} us ({res['n']} calls, "
                    f"{res.get('faults', 0):.0f} faults/call)",
                    flush=True,
                )
    med = {k: statistics.median(v) for k, v in results.items()}
    title = {
        "default": "## Default thread settings (each library's own: NumPy's OpenBLAS and torch use both cores)",
        "single": "## Every side with one thread (OMP/OPENBLAS/MKL_NUM_THREADS=1): tape overhead without threading",
    }[mode]
    lines = [title, "", "| batch | side | process policy | per call (us) | page faults / call | TorchRL / side | "
             "torch-plain / side | losses agree |", "|---:|---|---|---:|---:|---:|---:|---|"]
    for batch in args.batches:
        ref = med.get(("torchrl", batch))
        ref_plain = med.get(("torch-plain", batch))
        l0 = losses.get(("torch", batch), losses.get(("torch-plain", batch)))
        for side in args.sides:
            t = med[(side, batch)]
            ratio = f"{ref / t:.2f}x" if ref else "-"
            ratio_plain = f"{ref_plain / t:.2f}x" if ref_plain else "-"
            agree = "yes" if l0 is None or abs(losses[(side, batch)] - l0) <= 1e-5 * max(1.0, abs(l0)) else "NO"
            fl = [f for f in faults[(side, batch)] if f is not None]
            fl_text = f"{statistics.median(fl):.0f}" if fl else "-"
            base = side.split("@")[0]
            policy = POLICY_TEXT[base] if "@" not in side else f"{POLICY_TEXT[base]}, PYTHONPATH={trees[side.split('@')[1]]}"
            lines.append(f"| {batch} | {side} | {policy} | {t * 1e6:.1f} | {fl_text} | {ratio} | {ratio_plain} | {agree} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--sides", nargs="+", default=SIDES, help=f"of {SIDES} and SIDE@NAME (see --tree)")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="side SIDE@NAME runs an arrayrl side with PYTHONPATH=PATH (another copy of the library)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.5)
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["default", "single"],
        choices=["default", "single"],
        help="default: each side's own thread settings; single: OMP/OPENBLAS/MKL_NUM_THREADS=1 for every side",
    )
    ap.add_argument(
        "--write", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "tape-cpu.md")
    )
    args = ap.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args.batch, args.min_time)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
