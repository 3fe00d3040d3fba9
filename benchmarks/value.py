"""Benchmark: arrayrl's GAE and TD(lambda) against TorchRL's loop and vec functions, with a memory-copy bound.

Shapes (batch, time) = (1, 1000), (1, 100000), (64, 128), (1024, 256), (4096, 1024); float32; ``done`` with
probability 0.01 (half of them terminated); inputs laid out batch-major as TorchRL's ``[B, T, 1]`` (``time_dim=-2``)
and time-major ``[T, B, 1]`` (``time_dim=0``; every contender gets the same layout).

Contenders: ``arrayrl`` (the generic array-API code, forced with ``arrayrl._numba_scan.generic_path()``),
``numba`` (the same public functions with the compiled kernels of :mod:`arrayrl._numba_scan` dispatched: argument
checks included, threads above the size threshold), TorchRL's ``vec_*`` and loop functions. TorchRL's vec
functions are skipped where they take more than a few seconds per call (many trajectories of 1M+ elements:
``--full-vec`` runs them), where the loop is their best variant anyway.

For each shape every contender runs interleaved in one process (round-robin, after one warm-up call each) and the
median time is kept (and, for numba, the median CPU time of the thread). The bound is ``bytes read + written /
copy bandwidth``, with the bandwidth of a large ``numpy`` copy measured in the same process, counting every array
(GAE moves 3 float inputs, 2 bool inputs, 2 float outputs; TD(lambda) 2 float inputs, 2 bool inputs, 1 float
output). The backward row times ``value_and_grad`` of ``sum(adv * w)`` with
respect to the state and next-state values (tape forward + backward) and reports ``(total - forward) / forward``.

Usage::

    python benchmarks/value.py                 # all shapes, prints the table, writes benchmarks/results/value-cpu.md
    python benchmarks/value.py --quick         # fewer repetitions, no TorchRL loop at the largest shapes
    python benchmarks/value.py --backend torch # arrayrl on torch tensors (array_api_compat) instead of NumPy
    python benchmarks/value.py --layouts batch # batch-major only (``time`` for time-major only)
    python benchmarks/value.py --threads       # numba kernels serial vs threaded (the _PAR_MIN_ELEMS threshold)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np

# torch's OpenMP workers spin after each parallel region and steal the second core from the NumPy code that runs
# next in the interleaved loop; let them sleep (must be set before torch is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHAPES = [(1, 1000), (1, 100000), (64, 128), (1024, 256), (4096, 1024)]
GAMMA, LMBDA = 0.99, 0.95


def copy_bandwidth(nbytes: int = 64 << 20, reps: int = 10) -> float:
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best  # bytes read + written per second


def make_inputs(B: int, T: int, seed: int = 0, layout: str = "batch"):
    """``(v, nv, r, done, terminated)`` of shape ``[B, T, 1]`` (batch-major) or ``[T, B, 1]`` (time-major)."""
    shape = (B, T, 1) if layout == "batch" else (T, B, 1)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape, dtype=np.float32)
    nv = rng.standard_normal(shape, dtype=np.float32)
    r = rng.standard_normal(shape, dtype=np.float32)
    d = rng.random(shape) < 0.01
    tm = d & (rng.random(shape) < 0.5)
    return v, nv, r, d, tm


def interleaved(fns: dict, budget_s: float, min_reps: int = 3, max_reps: int = 50, cpu: dict | None = None) -> dict:
    """Median wall seconds of each callable, run round-robin; repetitions chosen from a warm-up so that the total
    stays near ``budget_s``. ``cpu``, if given, receives the median CPU seconds of the calling thread per call
    (``time.thread_time``: what a single-threaded kernel costs without the time it was descheduled)."""
    est = {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        f()
        est[name] = time.perf_counter() - t0
    reps = int(max(min_reps, min(max_reps, budget_s / max(1e-9, sum(est.values())))))
    times = {name: [] for name in fns}
    cpus = {name: [] for name in fns}
    for _ in range(reps):
        for name, f in fns.items():
            c0 = time.thread_time()
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
            cpus[name].append(time.thread_time() - c0)
    if cpu is not None:
        cpu.update({name: statistics.median(cs) for name, cs in cpus.items()})
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    p.add_argument("--shapes", default=None, help="e.g. 1x1000,64x128")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "value-cpu.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--layouts", default="batch,time", help="batch, time or batch,time")
    p.add_argument("--threads", action="store_true", help="numba serial vs threaded only (no TorchRL)")
    p.add_argument("--full-vec", action="store_true", help="also run TorchRL's vec functions where they take seconds")
    p.add_argument("--no-tune-allocator", action="store_true",
                   help="skip arrayrl.autodiff.tune_allocator() (glibc mallopt: keeps large temporaries in the heap; "
                        "process-wide, so it applies to TorchRL too)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")

    import torch
    from torchrl.objectives.value import functional as TF

    from arrayrl import _numba_scan as K
    from arrayrl.autodiff import value_and_grad
    from arrayrl.value import functional as F

    tuned = False if args.no_tune_allocator else _tune()
    shapes = SHAPES if args.shapes is None else [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    bw = copy_bandwidth()
    budget = 1.0 if args.quick else 4.0
    if args.threads:
        return _threads(K, shapes, args.layouts.split(","), budget)
    has_numba = args.backend == "numpy" and K.available()
    rows = []
    for (B, T), layout in [(s, lay) for s in shapes for lay in args.layouts.split(",")]:
        v, nv, r, d, tm = make_inputs(B, T, layout=layout)
        tv, tnv, tr, td, ttm = (torch.from_numpy(a) for a in (v, nv, r, d, tm))
        if args.backend == "torch":
            av, anv, ar, ad, atm = tv, tnv, tr, td, ttm
        else:
            av, anv, ar, ad, atm = v, nv, r, d, tm
        tdim = -2 if layout == "batch" else 0
        n = B * T
        big = n >= 1 << 20 or T >= 100000
        for est in ("GAE", "TD(lambda)"):
            if est == "GAE":
                fns = {
                    "arrayrl": lambda: F.generalized_advantage_estimate(GAMMA, LMBDA, av, anv, ar, ad, atm,
                                                                        time_dim=tdim),
                    "numba": lambda: F.generalized_advantage_estimate(GAMMA, LMBDA, v, nv, r, d, tm, time_dim=tdim),
                    "torchrl vec": lambda: TF.vec_generalized_advantage_estimate(GAMMA, LMBDA, tv, tnv, tr, td, ttm,
                                                                                 time_dim=tdim),
                    "torchrl loop": lambda: TF.generalized_advantage_estimate(GAMMA, LMBDA, tv, tnv, tr, td, ttm,
                                                                              time_dim=tdim),
                }
                nbytes = n * (3 * 4 + 2 * 1 + 2 * 4)
            else:
                fns = {
                    "arrayrl": lambda: F.td_lambda_return_estimate(GAMMA, LMBDA, anv, ar, ad, atm, time_dim=tdim),
                    "numba": lambda: F.td_lambda_return_estimate(GAMMA, LMBDA, nv, r, d, tm, time_dim=tdim),
                    "torchrl vec": lambda: TF.vec_td_lambda_return_estimate(GAMMA, LMBDA, tnv, tr, td, ttm,
                                                                            time_dim=tdim),
                    "torchrl loop": lambda: TF.td_lambda_return_estimate(GAMMA, LMBDA, tnv, tr, td, ttm,
                                                                         time_dim=tdim),
                }
                nbytes = n * (2 * 4 + 2 * 1 + 1 * 4)
            if not has_numba:
                del fns["numba"]
            if args.quick and big:
                fns = {k: f for k, f in fns.items() if k in ("arrayrl", "numba") or (k == "torchrl vec" and B == 1)}
            if big and B > 1 and not args.full_vec:
                fns.pop("torchrl vec", None)
            generic = fns.pop("arrayrl")
            fns["arrayrl"] = lambda: _generic(K, generic)
            cpu = {}
            res = interleaved(fns, budget, min_reps=1 if big else 3, cpu=cpu)
            theirs = {k: t for k, t in res.items() if k.startswith("torchrl")}
            best_name = min(theirs, key=theirs.get) if theirs else None
            best = theirs[best_name] if best_name else float("nan")
            bound = nbytes / bw
            ours = res.get("numba", float("nan"))
            ours_cpu = cpu.get("numba", float("nan"))
            rows.append({
                "estimator": est, "shape": f"({B}, {T})", "layout": layout, "arrayrl_ms": res["arrayrl"] * 1e3,
                "numba_ms": ours * 1e3, "numba_cpu_ms": ours_cpu * 1e3, "numba_cpu_x_bound": ours_cpu / bound,
                "vec_ms": theirs.get("torchrl vec", float("nan")) * 1e3,
                "loop_ms": theirs.get("torchrl loop", float("nan")) * 1e3,
                "speedup": best / res["arrayrl"], "numba_speedup": best / ours,
                "best": best_name, "bound_ms": bound * 1e3, "x_bound": res["arrayrl"] / bound,
                "numba_x_bound": ours / bound, "load": os.getloadavg()[0],
            })
            print(_fmt_row(rows[-1]), flush=True)
        # backward (numpy only: the tape's backend here; batch-major only)
        if args.backend == "numpy" and layout == "batch":
            w = np.random.default_rng(1).standard_normal(v.shape, dtype=np.float32)

            def fwd():
                return F.generalized_advantage_estimate(GAMMA, LMBDA, v, nv, r, d, tm)

            def loss(vv, nn):
                adv, _ = F.generalized_advantage_estimate(GAMMA, LMBDA, vv, nn, r, d, tm)
                return vv.__array_namespace__().sum(adv * w)

            g = value_and_grad(loss, argnums=(0, 1))
            cpu = {}
            res = interleaved({"fwd": fwd, "vg": lambda: g(v, nv)}, budget / 2, min_reps=1 if big else 3, cpu=cpu)
            rows.append({"estimator": "GAE backward", "shape": f"({B}, {T})", "fwd_ms": res["fwd"] * 1e3,
                         "vg_ms": res["vg"] * 1e3, "vg_cpu_ms": cpu["vg"] * 1e3,
                         "ratio": (res["vg"] - res["fwd"]) / res["fwd"]})
            print(_fmt_row(rows[-1]), flush=True)
    md = _markdown(rows, bw, args, tuned)
    print(md)
    if not args.no_write:
        with open(args.out, "w") as fh:
            fh.write(md)
    return 0


def _generic(K, f):
    with K.generic_path():
        return f()


def _threads(K, shapes, layouts, budget) -> int:
    """numba GAE serial vs threaded at each shape and layout (to place ``_PAR_MIN_ELEMS``)."""
    print(f"numba threads: {_numba_threads()}; auto threshold _PAR_MIN_ELEMS = {K._PAR_MIN_ELEMS}")
    for (B, T), layout in [(s, lay) for s in shapes for lay in layouts]:
        v, nv, r, d, tm = make_inputs(B, T, layout=layout)
        ax = 1 if layout == "batch" else 0
        res = interleaved({p: (lambda p=p: K.try_gae(GAMMA, LMBDA, v, nv, r, d, tm, ax, parallel=p))
                           for p in (False, True)}, budget)
        print(f"({B}, {T}) {layout:>5}: serial {res[False] * 1e3:8.3f} ms  threaded {res[True] * 1e3:8.3f} ms  "
              f"ratio {res[False] / res[True]:.2f}", flush=True)
    return 0


def _numba_threads() -> str:
    try:
        import numba
    except ImportError:
        return "numba not installed"
    return f"{numba.get_num_threads()} (numba {numba.__version__}, layer {numba.config.THREADING_LAYER})"


def _tune() -> bool:
    from arrayrl.autodiff import tune_allocator

    return tune_allocator()


def _fmt_row(r: dict) -> str:
    if "ratio" in r:
        return f"{r['estimator']:>13} {r['shape']:>13}  fwd {r['fwd_ms']:9.3f} ms  value_and_grad {r['vg_ms']:9.3f} ms " \
               f"(cpu {r['vg_cpu_ms']:9.3f} ms)  " \
               f"backward/forward {r['ratio']:.2f}"
    return (f"{r['estimator']:>10} {r['shape']:>13} {r['layout']:>5}  arrayrl {r['arrayrl_ms']:9.3f} ms  "
            f"numba {r['numba_ms']:8.3f} ms (cpu {r['numba_cpu_ms']:8.3f})  vec {r['vec_ms']:9.2f} ms  loop {r['loop_ms']:9.2f} ms  "
            f"numba speedup {r['numba_speedup']:7.1f}x ({r['best']})  bound {r['bound_ms']:7.3f} ms  "
            f"numba x{r['numba_x_bound']:.2f} (cpu x{r['numba_cpu_x_bound']:.2f})  generic x{r['x_bound']:.1f}  "
            f"load {r['load']:.1f}")


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def _ms(t: float) -> str:
    return "-" if t != t else (f"{t:.3f}" if t < 100 else f"{t:.1f}")


def _markdown(rows: list, bw: float, args, tuned: bool) -> str:
    loads = [r["load"] for r in rows if "load" in r]
    out = [
        "# Value estimators on CPU: arrayrl vs TorchRL 0.14.1",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Command: `python benchmarks/value.py "
        f"{' '.join(sys.argv[1:])}`. Load average (1 min) while the rows ran: "
        f"{min(loads, default=float('nan')):.1f} to {max(loads, default=float('nan')):.1f}.",
        "",
        f"Machine: {_machine()}. arrayrl backend: {args.backend}. float32, done probability 0.01, "
        f"gamma={GAMMA}, lambda={LMBDA}. Measured copy bandwidth: {bw / 1e9:.1f} GB/s (read + write). "
        f"Allocator tuned (`arrayrl.autodiff.tune_allocator`, process-wide): {tuned}. OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY')}.",
        "",
        f"numba threads: {_numba_threads()}.",
        "",
        "Median of interleaved runs. *numba* is the public function (`arrayrl.value.functional`, argument checks "
        "included) on the compiled path (`arrayrl._numba_scan`), *generic* the same function on the array-API "
        "code; *numba CPU ms* is the median CPU time of the calling thread for the numba call (it excludes the "
        "time the process was descheduled by other work on the shared machine); *speedup* is against TorchRL's "
        "best variant measured here (wall time both); *x bound* is the time over the memory-traffic bound (all "
        "bytes the estimator must read and write / copy bandwidth: see the notes). A dash: not run.",
        "",
        "| estimator | (batch, time) | layout | numba ms | numba CPU ms | generic ms | TorchRL vec ms | "
        "TorchRL loop ms | numba speedup vs best | generic speedup | bound ms | numba x bound | "
        "numba CPU x bound | generic x bound |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "ratio" in r:
            continue
        out.append(f"| {r['estimator']} | {r['shape']} | {r['layout']}-major | {_ms(r['numba_ms'])} | "
                   f"{_ms(r['numba_cpu_ms'])} | {_ms(r['arrayrl_ms'])} | {_ms(r['vec_ms'])} | {_ms(r['loop_ms'])} | "
                   f"{r['numba_speedup']:.1f}x ({r['best']}) | {r['speedup']:.1f}x | {r['bound_ms']:.3f} | "
                   f"{r['numba_x_bound']:.2f} | {r['numba_cpu_x_bound']:.2f} | {r['x_bound']:.1f} |")
    out += _targets([r for r in rows if "ratio" not in r])
    back = [r for r in rows if "ratio" in r]
    if back:
        out += ["", "Backward: GAE `value_and_grad` of `sum(adv * w)` w.r.t. state and next-state values (the tape "
                "over NumPy: taped elementwise ops, the scan and its adjoint on the numba kernel).", "",
                "| (batch, time) | forward ms | value_and_grad ms | value_and_grad CPU ms | backward / forward |",
                "|---|---:|---:|---:|---:|"]
        for r in back:
            out.append(f"| {r['shape']} | {r['fwd_ms']:.3f} | {r['vg_ms']:.3f} | {r['vg_cpu_ms']:.3f} | "
                       f"{r['ratio']:.2f} |")
    out += ["", NOTES]
    return "\n".join(out) + "\n"


def _targets(rows: list) -> list:
    """Issue 9's CPU targets, row by row: >= 10x TorchRL's best (>= 100x at (1, 100000)), and <= 2.5x the bound at
    (1024, 256) and (4096, 1024); the bound target is judged on the wall time and on the CPU time."""
    out = ["", "Targets (issue 9, section 1):", ""]
    for r in rows:
        need = 100.0 if r["shape"] == "(1, 100000)" else 10.0
        ok = r["numba_speedup"] >= need
        line = (f"* {r['estimator']} {r['shape']} {r['layout']}-major: {r['numba_speedup']:.1f}x TorchRL "
                f"(target >= {need:.0f}x: {'met' if ok else 'NOT met'})")
        if r["shape"] in ("(1024, 256)", "(4096, 1024)"):
            wall, cpu = r["numba_x_bound"], r["numba_cpu_x_bound"]
            line += (f"; {wall:.2f}x the bound by wall time, {cpu:.2f}x by CPU time (target <= 2.5x: "
                     f"{'met' if wall <= 2.5 else 'met by CPU time only' if cpu <= 2.5 else 'NOT met'})")
        out.append(line)
    return out


NOTES = """## Notes

* *numba* is `arrayrl.value.functional.generalized_advantage_estimate` / `td_lambda_return_estimate` on NumPy
  arrays with numba installed: a lean check (Python-float hyper-parameters, an int `time_dim`), then the kernel
  dispatch, which checks the arrays (plain ndarrays of one shape and float dtype, bool flags) and runs the fused
  kernel (delta, scan and value target in one pass, the exact serial recurrence, cuts as selects). It runs on one
  core here: threads start at 8M elements (`python benchmarks/value.py --threads`). Batch-major data uses the
  4-lane register-block kernel (the lanes after the last full block, and a single trajectory, run one lane
  alone), time-major data the column kernel on the input's own memory (no transpose copy).
* *generic* is the array-API code on NumPy (one core; NumPy does not thread elementwise operations), forced with
  `arrayrl._numba_scan.generic_path()`. TorchRL runs on torch with 2 threads.
* The bound counts every array the estimator must move, once: GAE reads 3 float32 + 2 bool arrays and writes 2
  float32 arrays (22 bytes per element), TD(lambda) reads 2 float32 + 2 bool and writes 1 float32 (14 bytes per
  element). It is a minimum-traffic bound, not a one-array copy. A plain store loop cannot quite reach it: the
  bandwidth comes from `np.copyto` of 64 MiB (glibc `memcpy`, which for copies this large normally writes with
  non-temporal stores), while the kernels' ordinary stores first read each output cache line (read for
  ownership), so GAE really moves 22 + 8 = 30 bytes per element (a floor of about 1.36x the bound) and
  TD(lambda) 14 + 4 = 18 (about 1.29x). That reasoning is not measured here.
* TorchRL's vec functions are not run at (4096, 1024) (`--full-vec` runs them): they took 10-12 s per call there
  in an earlier run of this benchmark, 30-70x slower than TorchRL's loop, which is then its best variant.
* The machine (2 cores) is shared with other engineers' test runs: at a load average above 2 every call longer
  than a scheduler slice (a few ms) is likely to be descheduled for one, so the wall times of the larger shapes
  carry that wait (compare *numba ms* with *numba CPU ms*). The interleaving keeps the ratios within a row fair:
  every contender runs under the same load, and TorchRL's loop is descheduled as often.
* Every arrayrl estimator is one exact reverse scan (no truncation, unlike TorchRL's vec kernels, which drop
  filter terms below 1e-7 and split/pad trajectories: that is why they are slow at many short trajectories).
* Backward: ``backward / forward`` is ``(value_and_grad - forward) / forward``; the forward is the public function
  on raw arrays (the numba path).
"""


if __name__ == "__main__":
    sys.exit(main())
