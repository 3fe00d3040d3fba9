"""Loss benchmark: arrayrl ``loss.value_and_grad(batch)`` vs TorchRL ``loss(td)`` + ``backward()``.

Cases (:mod:`_loss_cases`, float32): DQNLoss, QMixerLoss, IQLLoss (MLPs 64x64, batch 256 and 4096); ClipPPOLoss and
A2CLoss (64x64 tanh actor and critic, IndependentNormal; flat minibatch of 256 / 4096 with the advantage
precomputed, and a [64 envs, 128 steps] rollout with GAE computed inside the loss; one ClipPPO row with TanhNormal);
SACLoss v2, TD3Loss and (when ``arrayrl.objectives.redq`` exists) REDQLoss with 10 critics, MLPs 256x256 (CleanRL)
and 64x64, batch 256 and 4096; CQLLoss (2 critics, num_random 10, TanhNormal actor; 256x256 as CleanRL's / TorchRL's
CQL examples, and 64x64; batch 256 and 4096); GAILLoss with the WGAN-GP gradient penalty (gp_lambda 10;
discriminator MLP 64x64 tanh with a sigmoid output on obs 8 + action 2; batch 256 and 4096); DreamerV3ActorLoss
(RSSMPriorV3 64/64/4x16, reward, value and DreamerActor MLPs 1x64, TanhNormal, horizon 15, TDLambda; 256 and 1024
start states).

Protocol: every side runs in its own subprocess (fresh interpreter; no shared allocator or thread state), with its
library's defaults (arrayrl's default BLAS policy, torch's default intra-op threads). One subprocess per side and
round runs every case in turn (the torch import alone takes seconds on a loaded machine); sides alternate their
order and the cases reverse theirs every round, so cross-case state (heap growth, caches) is not always on one side.
Per case: build, warm-up calls, then timed calls for about ``--budget`` seconds (at least ``--min-reps``); the
round's figure is the median call. The table gives the median over rounds and ``TorchRL / arrayrl`` (> 1: arrayrl
faster). ``torchrl-1t`` (``torch.set_num_threads(1)``, not a library default) is a reference column only: on a
loaded 2-core machine torch's default pool can spin against the other processes.

Optional arrayrl sides (``--sides``): ``arrayrl-1t`` (``set_blas_threads(1)``), ``arrayrl+malloc``
(``tune_allocator()``) and ``arrayrl+tuned`` (``tune_allocator()`` + ``set_blas_threads(1)``); not library defaults,
never in the main column (``meets target`` is judged on ``arrayrl``). ``arrayrl-before`` (with ``--baseline DIR``):
library defaults, arrayrl imported from ``DIR`` (a copy of the package before a change, ``DIR/arrayrl``), in its own
alternated subprocesses like every side; the table then adds ``before / after`` (> 1: the change made it faster).

    python benchmarks/losses.py                           # full table -> benchmarks/results/losses-cpu.md
    python benchmarks/losses.py --quick                   # one round, no file
    python benchmarks/losses.py --cases ppo-256 sac-256-h256 --rounds 5
    python benchmarks/losses.py --worker arrayrl --cases ppo-256    # one side, prints JSON
    python benchmarks/losses.py --baseline /tmp/before --sides arrayrl arrayrl-before torchrl --cases dqn-256
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _loss_cases as C  # noqa: E402

#: side -> (library, process policy, what the table says about it)
SIDES = {
    "arrayrl": ("arrayrl", "none", "library defaults"),
    "arrayrl+malloc": ("arrayrl", "malloc", "tune_allocator()"),
    "arrayrl+tuned": ("arrayrl", "tuned", "tune_allocator() + set_blas_threads(1)"),
    "arrayrl-1t": ("arrayrl", "blas1", "set_blas_threads(1)"),
    "arrayrl-before": ("arrayrl", "none", "library defaults, arrayrl from --baseline"),
    "torchrl": ("torchrl", "none", "torch defaults"),
    "torchrl-1t": ("torchrl", "single", "torch.set_num_threads(1)"),
}
DEFAULT_SIDES = ("arrayrl", "torchrl", "torchrl-1t")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "losses-cpu.md")


# ------------------------------------------------------------------------------------------------ worker
def _worker(side: str, cases: list, budget: float, min_reps: int, warmup: int) -> list:
    warnings.filterwarnings("ignore")
    lib, policy, _ = SIDES[side]
    if lib == "torchrl" and policy == "single":
        import torch

        torch.set_num_threads(1)
    if lib == "arrayrl" and policy == "blas1":
        from arrayrl.autodiff import set_blas_threads

        assert set_blas_threads(1) is not None, "OpenBLAS not found"
    if lib == "arrayrl" and policy in ("malloc", "tuned"):
        from arrayrl.autodiff import set_blas_threads, tune_allocator

        assert tune_allocator(), "tune_allocator failed (not glibc?)"
        if policy == "tuned":
            assert set_blas_threads(1) is not None, "OpenBLAS not found"
    out = []
    for name in cases:
        try:
            step = C.build(lib, name)
        except Exception as e:  # (a loss that does not exist yet on this side)
            out.append({"case": name, "median_s": None, "error": f"{type(e).__name__}: {e}"})
            continue
        for _ in range(warmup):
            step()
        times: list = []
        t_end = time.perf_counter() + budget
        while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < 500):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        out.append({"case": name, "median_s": statistics.median(times), "reps": len(times)})
        del step
    return out


_ENV = dict(os.environ, RL_WARNINGS="False")
_SNAPSHOT: dict = {}  # "dir": the snapshot directory put first on the workers' PYTHONPATH


def _snapshot() -> str | None:
    """Copy the working tree's ``arrayrl`` package to a temporary directory put first on the workers' PYTHONPATH,
    so that every round measures the same code while others edit the tree. Returns the directory (or ``None``
    when the package cannot be found)."""
    import shutil
    import tempfile

    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "arrayrl")
    if not os.path.isdir(src):
        return None
    import atexit

    dst = tempfile.mkdtemp(prefix="arrayrl-bench-")
    atexit.register(shutil.rmtree, dst, True)
    shutil.copytree(src, os.path.join(dst, "arrayrl"), ignore=shutil.ignore_patterns("*.pyc"))
    _ENV["PYTHONPATH"] = dst + os.pathsep + _ENV.get("PYTHONPATH", "")
    _SNAPSHOT["dir"] = dst
    check = subprocess.run([sys.executable, "-c", "import arrayrl, arrayrl.objectives; print(arrayrl.__file__)"],
                           capture_output=True, text=True, env=_ENV)
    if check.returncode != 0 or not check.stdout.startswith(dst):
        raise RuntimeError(f"the snapshot of arrayrl does not import:\n{check.stderr[-2000:]}{check.stdout}")
    return dst


def _baseline_env(baseline: str) -> dict:
    """The workers' environment with ``baseline`` (holding ``arrayrl/``) first on the path instead of the snapshot."""
    rest = [p for p in _ENV.get("PYTHONPATH", "").split(os.pathsep) if p and p != _SNAPSHOT.get("dir")]
    return dict(_ENV, PYTHONPATH=os.pathsep.join([baseline] + rest))


def _check_baseline(baseline: str) -> None:
    """The ``arrayrl-before`` workers must import arrayrl (and its losses) from ``baseline``."""
    check = subprocess.run([sys.executable, "-c", "import arrayrl, arrayrl.objectives; print(arrayrl.__file__)"],
                           capture_output=True, text=True, env=_baseline_env(baseline))
    if check.returncode != 0 or not check.stdout.startswith(os.path.abspath(baseline)):
        raise RuntimeError(f"the baseline arrayrl does not import from {baseline}:\n"
                           f"{check.stderr[-2000:]}{check.stdout}")


def _run_side(side: str, cases: list, args) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--cases", *cases, "--budget",
           str(args.budget), "--min-reps", str(args.min_reps), "--warmup", str(args.warmup)]
    env = _baseline_env(args.baseline) if side == "arrayrl-before" else _ENV
    for attempt in range(2):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode == 0:
            return {r["case"]: r for r in json.loads(res.stdout.strip().splitlines()[-1])}
        sys.stderr.write(res.stderr[-3000:])
        print(f"worker {side} failed ({res.returncode}), attempt {attempt + 1}", flush=True)
        time.sleep(5)
    return None


def _prewarm() -> None:
    """Fill numba's on-disk cache and the byte-code caches before timing (one untimed call of every GAE case)."""
    gae = [n for n in C.CASES if n.endswith("-gae")]
    subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "arrayrl", "--cases", *gae, "--budget",
                    "0", "--min-reps", "1", "--warmup", "1"], capture_output=True, env=_ENV)


# ------------------------------------------------------------------------------------------------ report
def _fmt_ratio(x):
    return "n/a" if x is None else f"{x:.2f}x"


def _table(cases: list, sides: list, med: dict, spread: dict) -> list:
    ref = "torchrl"
    others = [s for s in sides if s != ref]
    head = ["loss", "case", "target"] + [f"{s} (ms)" for s in sides] + [f"TorchRL / {s}" for s in others if s.startswith("arrayrl")]
    if "torchrl-1t" in sides:
        head += ["TorchRL-1t / arrayrl"]
    both1t = "torchrl-1t" in sides and "arrayrl-1t" in sides
    if both1t:
        head += ["TorchRL-1t / arrayrl-1t"]
    before = "arrayrl-before" in sides and "arrayrl" in sides
    if before:
        head += ["before / after"]
    head += ["meets target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 4) + "---|"]
    for name in cases:
        spec = C.CASES[name]
        row = [spec["loss"], C.describe(spec), f">= {spec['target']:g}x"]
        row += ["n/a" if med[s].get(name) is None else f"{med[s][name] * 1e3:.3f} ({spread[s][name]})" for s in sides]
        ratios = {}
        for s in others:
            if s.startswith("arrayrl"):
                t, a = med[ref].get(name), med[s].get(name)
                ratios[s] = t / a if t and a else None
                row.append(_fmt_ratio(ratios[s]))
        main = ratios.get("arrayrl")
        if "torchrl-1t" in sides:
            t, a = med["torchrl-1t"].get(name), med["arrayrl"].get(name) if "arrayrl" in med else None
            r1 = t / a if t and a else None
            row.append(_fmt_ratio(r1))
            main = None if main is None or r1 is None else min(main, r1)  # judged on the smaller of the two
        if both1t:
            t, a = med["torchrl-1t"].get(name), med["arrayrl-1t"].get(name)
            row.append(_fmt_ratio(t / a if t and a else None))
        if before:
            t, a = med["arrayrl-before"].get(name), med["arrayrl"].get(name)
            row.append(_fmt_ratio(t / a if t and a else None))
        row.append("n/a" if main is None else ("yes" if main >= spec["target"] else "**no**"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=list(SIDES), help="run one side in this process, print JSON")
    ap.add_argument("--cases", nargs="+", choices=list(C.CASES), default=list(C.CASES))
    ap.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(DEFAULT_SIDES))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.2, help="seconds of timed calls per case and round")
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round, no file")
    ap.add_argument("--no-snapshot", action="store_true", help="workers import arrayrl from the live tree")
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--baseline", help="directory holding a copy of the arrayrl package (DIR/arrayrl) for the "
                    "arrayrl-before side")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.cases, args.budget, args.min_reps, args.warmup)))
        return
    if "torchrl" not in args.sides:
        ap.error("--sides must include torchrl (the reference of every ratio)")
    if ("arrayrl-before" in args.sides) != (args.baseline is not None):
        ap.error("--baseline DIR and the side arrayrl-before go together")
    if args.baseline is not None and not os.path.isdir(os.path.join(args.baseline, "arrayrl")):
        ap.error(f"--baseline: {args.baseline}/arrayrl is not a directory")
    rounds = 1 if args.quick else args.rounds
    t_start, load0, up0 = time.time(), os.getloadavg(), _uptime()
    snap = None if args.no_snapshot else _snapshot()
    if args.baseline is not None:
        _check_baseline(args.baseline)
    _prewarm()
    times: dict = {s: {n: [] for n in args.cases} for s in args.sides}
    errors: dict = {}
    for r in range(rounds):
        sides = list(args.sides) if r % 2 == 0 else list(reversed(args.sides))
        cases = list(args.cases) if r % 2 == 0 else list(reversed(args.cases))
        for side in sides:
            res = _run_side(side, cases, args)
            if res is None:
                continue
            for n in cases:
                if res[n]["median_s"] is None:
                    errors[(side, n)] = res[n]["error"]
                else:
                    times[side][n].append(res[n]["median_s"])
            print(f"round {r + 1}/{rounds} {side}: done ({time.time() - t_start:.0f} s, load {os.getloadavg()[0]:.2f})",
                  flush=True)
    med = {s: {n: (statistics.median(v) if v else None) for n, v in d.items()} for s, d in times.items()}
    counts = {s: min((len(v) for v in d.values() if v), default=0) for s, d in times.items()}
    spread = {s: {n: (f"{min(v) / statistics.median(v):.2f}-{max(v) / statistics.median(v):.2f}" if v else "")
                  for n, v in d.items()} for s, d in times.items()}
    lines = _table(args.cases, args.sides, med, spread)
    print("\n".join(lines))
    for (side, n), e in errors.items():
        print(f"  {side} {n}: {e}")
    if args.quick:
        return
    import numpy
    import torch
    import torchrl

    load1, up1 = os.getloadavg(), _uptime()
    doc = [
        "# Loss benchmark (CPU)",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}. Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other engineers' jobs), Python {platform.python_version()}, NumPy "
        f"{numpy.__version__}, torch {torch.__version__}, TorchRL {torchrl.__version__}.",
        f"Load: `uptime` at the start `{up0}`; at the end `{up1}`. Wall time {time.time() - t_start:.0f} s.",
        f"Command: `python benchmarks/losses.py {' '.join(sys.argv[1:])}`. arrayrl: "
        + (f"the working tree (git HEAD {_git_head()} plus uncommitted changes) copied at the start" if snap
           else "the live working tree") + "."
        + (f" arrayrl-before: the copy in `{args.baseline}` (same protocol, its own subprocesses)." if args.baseline
           else ""),
        "",
        "Protocol: arrayrl `loss.value_and_grad(batch)` (NumPy backend) vs TorchRL `loss(td)`, sum of the `loss_*`",
        "terms, `backward()`; float32; each library with its defaults (arrayrl's default BLAS policy and numba scans;",
        "torch's default intra-op threads). Each side in its own subprocess; one subprocess per side and round runs",
        "every case; the side order alternates and the case order reverses every round. Per case and round: warm-up",
        f"({args.warmup} calls), then timed calls for ~{args.budget} s (at least {args.min_reps}), median call; table:",
        f"median over {rounds} rounds, with (min-max over rounds) / median in parentheses. `TorchRL / arrayrl` > 1: arrayrl",
        "is faster. `torchrl-1t` (`torch.set_num_threads(1)`) is a reference column, not a library default. On this",
        "machine only the ratios mean anything, and with the load above even they move by +-30 % between runs.",
        "`meets target` is judged on the smaller of `TorchRL / arrayrl` and `TorchRL-1t / arrayrl` (torch's default",
        "two-thread pool is much slower than one thread under this load, which inflates the default-protocol ratio).",
        "",
        "Cases (`benchmarks/_loss_cases.py`): DQN / QMixer / IQL MLPs 64x64 ReLU (obs 8; QMixer 4 agents, state 16,",
        "embed 32); ClipPPO / A2C: actor 64x64 tanh -> IndependentNormal (one TanhNormal row, Monte-Carlo entropy),",
        "critic 64x64 tanh, obs 8, action 2, flat minibatch with advantage and value target precomputed, or a",
        "[64 envs x 128 steps] rollout with GAE (gamma 0.99, lambda 0.95) inside the loss; SAC v2 (2 critics, TanhNormal),",
        "TD3 (2 critics, tanh-output actor), REDQ (10 critics, 2 sampled; only if `arrayrl.objectives.redq` exists):",
        "ReLU MLPs hxh (h = 256 as CleanRL, or 64), obs 8, action 2, TD(0), gamma 0.99. CQL (CQL(H), 2 critics,",
        "num_random 10, TanhNormal, target entropy -2, TD(0)): ReLU MLPs hxh (h = 256 or 64). GAIL with the gradient",
        "penalty (gp_lambda 10): discriminator MLP 64x64 tanh -> sigmoid on concat(obs 8, action 2), B expert + B",
        "collector pairs. DreamerV3 actor: RSSMPriorV3 (GRU) hidden 64, belief 64, 4 categoricals x 16 classes,",
        "action 7; reward / value MLPs and DreamerActor depth 1, 64 cells (ELU MLPs), TanhNormal; imagination horizon",
        "15, TDLambda (gamma 0.99, lambda 0.95); B start states.",
        "",
    ] + lines
    if any(c < rounds for c in counts.values()):
        doc += ["", "Rounds measured per side (a failed worker is retried once, then its round skipped): "
                + ", ".join(f"{s} {c}" for s, c in counts.items()) + "."]
    if errors:
        doc += ["", "Not measured:"] + [f"* {side} {n}: {e}" for (side, n), e in errors.items()]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(doc) + "\n")
    print(f"wrote {args.out}")


def _git_head() -> str:
    try:
        return subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short",
                               "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        la = os.getloadavg()
        return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


if __name__ == "__main__":
    main()
