"""Loss benchmark: arrayrl ``loss.value_and_grad(batch)`` vs TorchRL ``loss(td)`` + ``backward()``.

DQNLoss, QMixerLoss (QMIX mixer) and IQLLoss, MLPs 64x64, float32, batch 256 and 4096, TD(0) targets. Each side runs
in its own subprocess (fresh interpreter, no shared allocator or thread state); sides are alternated over several
rounds, each round reports the median time of one call after warm-up; the table gives the median over rounds and the
ratio TorchRL / side (> 1: the side is faster than TorchRL).

Two protocols (``--modes``):

* ``default``: every side with its library's default thread settings (NumPy's OpenBLAS and torch's intra-op pool
  each use all cores; on a 2-core machine they compete with whatever else runs);
* ``single``: every side single-threaded (``OMP/OPENBLAS/MKL_NUM_THREADS=1`` and ``torch.set_num_threads(1)``).

arrayrl rows, by the process policy of :mod:`arrayrl.autodiff.tuning` they apply (stated in the table):

* ``arrayrl``: none (nothing is tuned; arrayrl never changes process state itself);
* ``arrayrl+malloc``: ``tune_allocator()`` only (OpenBLAS keeps its default threads);
* ``arrayrl+tuned``: ``tune_allocator()`` + ``set_blas_threads(1)`` (the policy recommended for CPU training loops).

    python benchmarks/losses.py                       # full table, written to benchmarks/results/losses-cpu.md
    python benchmarks/losses.py --quick               # one round, single-threaded protocol, no file
    python benchmarks/losses.py --worker arrayrl --policy tuned --loss dqn --batch 256   # one side, prints JSON
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
import warnings

LOSSES = ("dqn", "qmixer", "iql")
BATCHES = (256, 4096)
OBS, N_ACT, HIDDEN, N_AGENTS, STATE, EMBED, ACT_DIM = 8, 4, [64, 64], 4, 16, 32, 2


# ------------------------------------------------------------------------------------------------ data
def _data(batch: int, loss: str, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    f = np.float32
    term = rng.uniform(size=(batch, 1)) < 0.1
    if loss == "dqn":
        return {"observation": rng.normal(size=(batch, OBS)).astype(f), "action": rng.integers(0, N_ACT, batch),
                "next": {"observation": rng.normal(size=(batch, OBS)).astype(f),
                         "reward": rng.normal(size=(batch, 1)).astype(f), "done": term, "terminated": term}}
    if loss == "qmixer":
        obs = lambda: rng.normal(size=(batch, N_AGENTS, OBS)).astype(f)  # noqa: E731
        return {"agents": {"observation": obs(), "action": rng.integers(0, N_ACT, (batch, N_AGENTS))},
                "state": rng.normal(size=(batch, STATE)).astype(f),
                "next": {"agents": {"observation": obs()}, "state": rng.normal(size=(batch, STATE)).astype(f),
                         "reward": rng.normal(size=(batch, 1)).astype(f), "done": term, "terminated": term}}
    return {"observation": rng.normal(size=(batch, OBS)).astype(f),
            "action": rng.uniform(-0.9, 0.9, size=(batch, ACT_DIM)).astype(f),
            "next": {"observation": rng.normal(size=(batch, OBS)).astype(f),
                     "reward": rng.normal(size=(batch, 1)).astype(f), "done": term, "terminated": term}}


# ------------------------------------------------------------------------------------------------ arrayrl side
def _arrayrl_step(loss_name: str, batch: int):
    import numpy as np

    import arrayrl.objectives as O
    from arrayrl.distributions import TanhNormal
    from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, QValueActor, ValueOperator
    from arrayrl.nn.multiagent import QMixer

    kw = dict(num_cells=HIDDEN, activation_class="relu", dtype=np.float32)
    if loss_name == "dqn":
        loss = O.DQNLoss(QValueActor(MLP(in_features=OBS, out_features=N_ACT, **kw), action_space="categorical"),
                         action_space="categorical")
    elif loss_name == "qmixer":
        local = QValueActor(
            KeyedModule(MLP(in_features=OBS, out_features=N_ACT, **kw), in_keys=[("agents", "observation")],
                        out_keys=[("agents", "action_value")]),
            action_space="categorical", action_value_key=("agents", "action_value"), action_key=("agents", "action"),
            chosen_action_value_key=("agents", "chosen_action_value"))
        mixer = KeyedModule(QMixer((STATE,), EMBED, N_AGENTS, dtype=np.float32),
                            in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
        loss = O.QMixerLoss(local, mixer, action_space="categorical")
    else:
        net, ext = MLP(in_features=OBS, out_features=2 * ACT_DIM, **kw), NormalParamExtractor()
        module = KeyedModule(lambda p, o: ext.apply({}, net.apply(p, o)), params=net.params, in_keys=["observation"],
                             out_keys=["loc", "scale"])
        actor = ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal)
        q = ValueOperator(MLP(in_features=OBS + ACT_DIM, out_features=1, **kw), in_keys=["observation", "action"])
        v = ValueOperator(MLP(in_features=OBS, out_features=1, **kw), in_keys=["observation"])
        loss = O.IQLLoss(actor, q, v)
    loss.make_value_estimator(gamma=0.99)
    data = _data(batch, loss_name)

    def step():
        out, grads = loss.value_and_grad(data)
        return out

    return step


# ------------------------------------------------------------------------------------------------ TorchRL side
def _torchrl_step(loss_name: str, batch: int):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import NormalParamExtractor, TensorDictModule

    import torchrl.objectives as TO
    from torchrl.modules import MLP, ProbabilisticActor, QValueActor, QValueModule, SafeSequential, TanhNormal, ValueOperator
    from torchrl.modules.models.multiagent import QMixer
    from torchrl.objectives.multiagent import QMixerLoss

    kw = dict(num_cells=HIDDEN, activation_class=torch.nn.ReLU)
    if loss_name == "dqn":
        loss = TO.DQNLoss(QValueActor(MLP(in_features=OBS, out_features=N_ACT, **kw), in_keys=["observation"],
                                      action_space="categorical"), action_space="categorical")
        bs = [batch]
    elif loss_name == "qmixer":
        module = TensorDictModule(MLP(in_features=OBS, out_features=N_ACT, **kw), in_keys=[("agents", "observation")],
                                  out_keys=[("agents", "action_value")])
        vm = QValueModule(action_value_key=("agents", "action_value"), action_space="categorical",
                          out_keys=[("agents", "action"), ("agents", "action_value"), ("agents", "chosen_action_value")])
        mixer = TensorDictModule(QMixer(state_shape=(STATE,), mixing_embed_dim=EMBED, n_agents=N_AGENTS, device="cpu"),
                                 in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
        loss = QMixerLoss(SafeSequential(module, vm), mixer, action_space="categorical")
        bs = [batch]
    else:
        actor = ProbabilisticActor(
            TensorDictModule(torch.nn.Sequential(MLP(in_features=OBS, out_features=2 * ACT_DIM, **kw),
                                                 NormalParamExtractor()), ["observation"], ["loc", "scale"]),
            in_keys=["loc", "scale"], distribution_class=TanhNormal)
        q = ValueOperator(MLP(in_features=OBS + ACT_DIM, out_features=1, **kw), in_keys=["observation", "action"])
        v = ValueOperator(MLP(in_features=OBS, out_features=1, **kw), in_keys=["observation"])
        loss = TO.IQLLoss(actor, q, v)
        bs = [batch]
    loss.make_value_estimator(gamma=0.99)
    data = _data(batch, loss_name)

    def conv(d):
        return {k: conv(v) if isinstance(v, dict) else torch.as_tensor(v) for k, v in d.items()}

    td = TensorDict(conv(data), bs)
    params = [p for p in loss.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        out = loss(td)
        total = sum(v for k, v in out.items() if k.startswith("loss"))
        total.backward()
        return out

    return step


# ------------------------------------------------------------------------------------------------ driver
#: side -> (worker, arrayrl policy, what the table says about the policy)
SIDES = {
    "arrayrl": ("arrayrl", "none", "none (library defaults)"),
    "arrayrl+malloc": ("arrayrl", "malloc", "tune_allocator()"),
    "arrayrl+tuned": ("arrayrl", "tuned", "tune_allocator() + set_blas_threads(1)"),
    "torchrl": ("torchrl", "none", "torch defaults"),
}
MODES = {
    "default": "each side with its library's default threads (OpenBLAS and torch use every core)",
    "single": "every side single-threaded (OMP/OPENBLAS/MKL_NUM_THREADS=1, torch.set_num_threads(1))",
}


def _worker(side: str, loss: str, batch: int, reps: int, warmup: int, policy: str, single: bool) -> dict:
    warnings.filterwarnings("ignore")
    if side == "torchrl" and single:
        import torch

        torch.set_num_threads(1)
    if side == "arrayrl" and policy in ("malloc", "tuned"):
        from arrayrl.autodiff import set_blas_threads, tune_allocator

        assert tune_allocator(), "tune_allocator failed (not glibc?)"
        if policy == "tuned":
            assert set_blas_threads(1) is not None, "OpenBLAS not found"
    step = (_arrayrl_step if side == "arrayrl" else _torchrl_step)(loss, batch)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"side": side, "policy": policy, "loss": loss, "batch": batch, "median_s": statistics.median(times),
            "reps": reps}


def _run_side(side: str, loss: str, batch: int, reps: int, warmup: int, mode: str) -> float:
    worker, policy, _ = SIDES[side]
    cmd = [sys.executable, __file__, "--worker", worker, "--policy", policy, "--loss", loss, "--batch", str(batch),
           "--reps", str(reps), "--warmup", str(warmup)]
    env = dict(os.environ, RL_WARNINGS="False")
    if mode == "single":
        cmd.append("--single")
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])["median_s"]


def _run_mode(args, mode: str, rounds: int) -> list:
    rows = []
    for loss in args.losses:
        for batch in args.batches:
            reps = max(5, args.reps if batch <= 256 else args.reps // 6)
            t: dict = {side: [] for side in args.sides}
            for r in range(rounds):
                order = list(args.sides) if r % 2 == 0 else list(reversed(args.sides))
                for side in order:
                    t[side].append(_run_side(side, loss, batch, reps, args.warmup, mode))
            med = {side: statistics.median(v) for side, v in t.items()}
            ref = med.get("torchrl")
            for side in args.sides:
                ratio = ref / med[side] if ref else float("nan")
                rows.append((mode, loss, batch, side, med[side], ratio))
                print(f"[{mode}] {loss:7s} B={batch:5d} {side:14s} {med[side] * 1e3:8.3f} ms  TorchRL/side {ratio:5.2f}x",
                      flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["arrayrl", "torchrl"])
    ap.add_argument("--policy", choices=["none", "malloc", "tuned"], default="none")
    ap.add_argument("--single", action="store_true", help="(worker) torch.set_num_threads(1)")
    ap.add_argument("--loss", choices=LOSSES, default="dqn")
    ap.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    ap.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES))
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=["default", "single"])
    ap.add_argument("--reps", type=int, default=100, help="timed calls per run at batch 256 (a sixth at 4096)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "losses-cpu.md"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.loss, args.batch, args.reps, args.warmup, args.policy, args.single)))
        return
    if args.quick:
        args.modes, rounds = ["single"], 1
    else:
        rounds = args.rounds
    load0 = os.getloadavg()[0]
    rows = []
    for mode in args.modes:
        rows += _run_mode(args, mode, rounds)
    if args.quick:
        return
    import numpy
    import torch

    lines = [
        "# Loss benchmark (CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {numpy.__version__}, torch {torch.__version__}; load average {load0:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end. Command: `python benchmarks/losses.py {' '.join(sys.argv[1:])}`.",
        "",
        "`value_and_grad(batch)` of the arrayrl loss (NumPy backend, float32) vs TorchRL 0.14.1 `loss(td)` + `backward()`;",
        "MLPs 64x64 (ReLU), TD(0) targets; DQN: 8 obs, 4 actions, categorical; QMixer: 4 agents, QMIX mixer (state 16,",
        "embed 32); IQL: obs 8, action 2, TanhNormal actor, 2 critics. Each side in its own subprocess, alternated,",
        f"{rounds} rounds; per round the median of one call after warm-up; table: median over rounds.",
        "`TorchRL / side` > 1 means the side is faster than TorchRL. On CPU only the ratios are meaningful.",
    ]
    for mode in args.modes:
        lines += ["", f"## Protocol `{mode}`: {MODES[mode]}", "",
                  "| loss | batch | side | process policy | per call (ms) | TorchRL / side |", "|---|---:|---|---|---:|---:|"]
        lines += [f"| {l} | {b} | {sd} | {SIDES[sd][2]} | {t * 1e3:.3f} | {r:.2f}x |"
                  for m, l, b, sd, t, r in rows if m == mode]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
