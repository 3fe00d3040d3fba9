"""The fused numba Adam/AdamW step (:mod:`arrayrl._numba_optim`) against the generic array-API path of
:class:`arrayrl.optim.Adam` (the reference): the same bits over several steps for every option, dtype, odd shapes
and layouts; inputs never written; the kernel really taken where it applies and not elsewhere; ``torch.optim`` to
float round-off on the kernel path (the golden that is independent of both paths)."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

import arrayrl._numba_optim as N
import arrayrl._numba_scan as K
import arrayrl.optim as O
from arrayrl.tree import tree_leaves, tree_map


# (class, kwargs): every branch of the kernel -- L2 / decoupled decay, amsgrad, maximize, and both lerp rules
# (beta1 = 0.9: w = 0.1 < 0.5; beta1 = 0.3: w = 0.7, the "from the end" formula)
OPTIONS = [
    (cls, dict(lr=lr, betas=(b1, 0.99), eps=1e-6, weight_decay=wd, amsgrad=ams, maximize=mx))
    for cls, wd, ams, mx, (lr, b1) in itertools.product(
        ["Adam", "AdamW"], [0.0, 0.05], [False, True], [False, True], [(0.01, 0.9), (0.3, 0.3)])
]
IDS = [f"{c}-wd{kw['weight_decay']}-ams{int(kw['amsgrad'])}-max{int(kw['maximize'])}-b{kw['betas'][0]}"
       for c, kw in OPTIONS]

SHAPES = {"w": (5, 3), "b": (5,), "scalar": (), "empty": (0, 4), "cube": (2, 3, 4), "one": (1,)}


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls of the compiled entry point (the kernel path really taken); skips where numba is missing
    or switched off (``ARRAYRL_DISABLE_NUMBA=1``: tests/kernels/test_without_numba.py covers that case)."""
    K.set_enabled(None)
    if not N.available():
        pytest.skip("numba missing or disabled: no kernel to compare")
    calls = []
    real = N._kernel()

    def counting(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(N, "_kernel", lambda: counting)
    yield calls
    K.set_enabled(None)


def _tree(dtype, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: np.asarray(rng.standard_normal(s) * scale, dtype=dtype) for k, s in SHAPES.items()}


def _grads(p, step):
    """A gradient field depending on the parameters and the step (the same on both paths)."""
    return tree_map(lambda x: (np.sin(3.0 * x) * (1 + 0.1 * step) + 0.5 * x).astype(x.dtype), p)


def _bits(x):
    x = np.asarray(x)
    return x.view({4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _assert_same_bits(a, b, what=""):
    """The same dtype, shape and bits (NaNs only as NaNs: their payloads are not compared)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b), err_msg=what)
    diff = np.flatnonzero((_bits(a) != _bits(b)) & ~nan)
    assert diff.size == 0, f"{what}: {diff.size} elements differ, first {a.flat[diff[0]]!r} != {b.flat[diff[0]]!r}"


def _run(opt, p, steps, grads=_grads):
    state = opt.init(p)
    history = []
    for step in range(steps):
        p, state = opt.update(grads(p, step), state, p)
        history.append((p, state))
    return history


def _assert_same_runs(h1, h2):
    for step, ((p1, s1), (p2, s2)) in enumerate(zip(h1, h2)):
        assert s1["step"] == s2["step"]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert (s1[key] is None) == (s2[key] is None)
        for name, a, b in zip(["params", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
                              [p1, s1["exp_avg"], s1["exp_avg_sq"], s1["max_exp_avg_sq"]],
                              [p2, s2["exp_avg"], s2["exp_avg_sq"], s2["max_exp_avg_sq"]]):
            if a is not None:
                assert list(a) == list(b)
                for k in a:
                    _assert_same_bits(a[k], b[k], f"step {step} {name}[{k!r}]")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", OPTIONS, ids=IDS)
def test_kernel_is_bit_identical_to_the_generic_path(kernel_calls, cls, kw, dtype):
    """Five steps of every option combination, float32 and float64, shapes incl. 0-d and empty."""
    p = _tree(dtype)
    fast = _run(getattr(O, cls)(**kw), p, 5)
    assert len(kernel_calls) == 5 * len(SHAPES)
    with K.generic_path():
        ref = _run(getattr(O, cls)(**kw), p, 5)
    assert len(kernel_calls) == 5 * len(SHAPES)  # none on the generic path
    _assert_same_runs(fast, ref)
    assert fast[-1][0]["w"].dtype == dtype and fast[-1][1]["exp_avg"]["w"].dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_are_bit_identical(kernel_calls, dtype):
    """Infinities, NaNs, zeros of both signs, huge and subnormal values in the gradients and parameters: the
    same bits (NaN where NaN) on both paths, amsgrad's NaN-propagating maximum included."""
    info = np.finfo(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, info.max, -info.max, info.tiny, info.smallest_subnormal,
                        1.0, -1e-30, 3e10], dtype=dtype)
    p = {"a": special.copy(), "b": special[::-1].copy()}

    def grads(p, step):
        return {"a": np.roll(special, step), "b": np.roll(special, -step) * dtype(0.5)}

    for cls, kw in OPTIONS:
        with np.errstate(all="ignore"):
            fast = _run(getattr(O, cls)(**kw), p, 3, grads)
            with K.generic_path():
                ref = _run(getattr(O, cls)(**kw), p, 3, grads)
        _assert_same_runs(fast, ref)
    assert len(kernel_calls) == 3 * 2 * len(OPTIONS)
    # amsgrad's maximum with a NaN on either side (a run from opt.init never has a NaN in max_exp_avg_sq alone)
    opt = O.Adam(amsgrad=True)
    sq = np.abs(special)
    state = {"step": 2, "exp_avg": {"a": special}, "exp_avg_sq": {"a": sq}, "max_exp_avg_sq": {"a": sq[::-1].copy()}}
    g = {"a": np.ones_like(special)}
    with np.errstate(all="ignore"):
        fast = opt.update(g, state, {"a": special})
        with K.generic_path():
            ref = opt.update(g, state, {"a": special})
    for a, b in zip(tree_leaves(fast), tree_leaves(ref)):
        _assert_same_bits(a, b, "amsgrad with NaN moments")


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "broadcast"])
def test_non_contiguous_and_read_only_inputs(kernel_calls, layout):
    """Leaves that are not C-contiguous and writeable (read through a compiled copy): the same bits as the generic
    path, C-contiguous outputs of the parameter's shape."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 8)).astype(np.float32)

    def make(x):
        if layout == "fortran":
            return np.asfortranarray(x)
        if layout == "strided":
            return np.repeat(x, 2, axis=1)[:, ::2]
        if layout == "broadcast":
            return np.broadcast_to(x[:1], x.shape)
        y = x.copy()
        y.flags.writeable = False
        return y

    p = {"w": make(base)}
    assert not (p["w"].flags.c_contiguous and p["w"].flags.writeable)
    opt = O.Adam(lr=0.01, weight_decay=0.1, amsgrad=True)
    state = opt.init(p)
    state = {**state, "exp_avg": {"w": make(base * 0.1)}, "exp_avg_sq": {"w": make(base * base)},
             "max_exp_avg_sq": {"w": make(base * base * 2)}}
    g = {"w": make(np.cos(base))}
    new_p, new_s = opt.update(g, state, p)
    assert len(kernel_calls) == 1
    with K.generic_path():
        ref_p, ref_s = opt.update(g, state, p)
    _assert_same_bits(new_p["w"], ref_p["w"], "params")
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        _assert_same_bits(new_s[key]["w"], ref_s[key]["w"], key)
        assert new_s[key]["w"].flags.c_contiguous
    assert new_p["w"].shape == (6, 8) and new_p["w"].flags.c_contiguous


def test_inputs_are_never_written(kernel_calls):
    """Parameters, gradients and every state leaf keep their bits; outputs are new arrays."""
    p = _tree(np.float32)
    for cls, kw in OPTIONS:
        opt = getattr(O, cls)(**kw)
        state = opt.init(p)
        p1, state = opt.update(_grads(p, 0), state, p)  # a state with nonzero moments
        g = _grads(p1, 1)
        arrays = lambda s: {k: v for k, v in s.items() if k != "step"}  # noqa: E731
        before = [np.array(x, copy=True) for x in tree_leaves([p1, g, arrays(state)])]
        p2, state2 = opt.update(g, state, p1)
        for x, y in zip(tree_leaves([p1, g, arrays(state)]), before):
            _assert_same_bits(x, y, "an input leaf changed")
        inputs = {id(x) for x in tree_leaves([p1, g, arrays(state)])}
        assert not any(id(x) in inputs for x in tree_leaves([p2, arrays(state2)]))
    assert kernel_calls


def test_where_the_kernel_applies(kernel_calls):
    """The kernel runs for NumPy leaves of one dtype (a float64 gradient of a float32 parameter is cast first, as on
    the generic path); a state leaf of another dtype or a non-NumPy backend takes the generic path, as does every
    leaf with numba switched off."""
    torch = pytest.importorskip("torch")
    p = {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    opt = O.Adam(lr=0.1)
    g64 = {"w": np.full((2, 3), 0.5), "b": np.full(3, 0.25)}
    new, _ = opt.update(g64, opt.init(p), p)
    assert len(kernel_calls) == 2 and new["w"].dtype == np.float32
    with K.generic_path():
        ref, _ = opt.update(g64, opt.init(p), p)
    _assert_same_bits(new["w"], ref["w"])
    state = opt.init(p)
    state["exp_avg"] = {"w": np.zeros((2, 3)), "b": np.zeros(3, np.float32)}  # float64 moment for "w"
    opt.update(g64, state, p)
    assert len(kernel_calls) == 3  # "b" only
    tp = tree_map(torch.from_numpy, p)
    opt.update(tree_map(torch.from_numpy, g64), opt.init(tp), tp)
    assert len(kernel_calls) == 3
    K.set_enabled(False)
    opt.update(g64, opt.init(p), p)
    assert len(kernel_calls) == 3


@pytest.mark.parametrize("container", ["list-tuple-none", "ordereddict"])
def test_other_containers(kernel_calls, container):
    """Lists, tuples and ``None`` subtrees (the fast walk), and a dict subclass (the checked path, which returns
    plain dicts as ``tree_unflatten``): kernel on every leaf, the generic path's bits and structure."""
    rng = np.random.default_rng(5)
    if container == "ordereddict":
        p = collections.OrderedDict(w=rng.standard_normal((3, 2)), b=rng.standard_normal(2))
    else:
        p = [(rng.standard_normal((3, 2)), None), [rng.standard_normal(2)], ()]
    opt = O.AdamW(lr=0.05, amsgrad=True)
    g = tree_map(np.cos, p)
    new, st = opt.update(g, opt.init(p), p)
    assert len(kernel_calls) == 2
    with K.generic_path():
        ref, rst = opt.update(g, opt.init(p), p)
    assert repr(type(new)) == repr(type(ref)) and str(tree_map(np.shape, new)) == str(tree_map(np.shape, ref))
    for a, b in zip(tree_leaves([new, st]), tree_leaves([ref, rst])):
        _assert_same_bits(a, b)


def test_numpy_scalar_hyper_parameters_act_as_python_floats():
    """Hyper-parameters are used as Python floats on both paths: NumPy float64 ones give the same float32 bits as
    Python floats (they would otherwise promote the float32 arithmetic to float64 on the generic path)."""
    p = _tree(np.float32)
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)
    np_kw = dict(lr=np.float64(0.01), betas=(np.float64(0.9), np.float64(0.99)), eps=np.float64(1e-6),
                 weight_decay=np.float64(0.05))
    ref = _run(O.Adam(**kw), p, 3)
    with K.generic_path():
        _assert_same_runs(_run(O.Adam(**np_kw), p, 3), ref)
    _assert_same_runs(_run(O.Adam(**np_kw), p, 3), ref)


def test_rebinding_a_hyper_parameter_is_checked_again():
    """The hyper-parameter check is skipped only while every attribute is the object last validated: rebinding
    one to an invalid value, even one equal to the last valid one (``True == 1``), raises at the next update."""
    p = {"w": np.ones(3)}
    g = {"w": np.ones(3)}
    opt = O.Adam(lr=1)
    state = opt.init(p)
    opt.update(g, state, p)
    opt.lr = True
    with pytest.raises(TypeError, match=r"^lr: expected a real number, got bool"):
        opt.update(g, state, p)
    opt.lr = 0.1
    opt.update(g, state, p)
    opt.betas = (0.9, 1.0)
    with pytest.raises(ValueError, match=r"^betas\[1\]: expected a finite number"):
        opt.update(g, state, p)
    sgd = O.SGD(lr=0.1, momentum=0.5)
    sgd.update(g, sgd.init(p), p)
    sgd.dampening = 0.0  # a new valid value, then an invalid one
    sgd.update(g, sgd.init(p), p)
    sgd.nesterov = True
    sgd.dampening = 0.5
    with pytest.raises(ValueError, match=r"^nesterov: requires momentum > 0 and dampening == 0"):
        sgd.update(g, sgd.init(p), p)


@pytest.mark.torchrl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,kw", OPTIONS[::3], ids=IDS[::3])
def test_kernel_path_matches_torch(kernel_calls, cls, kw, dtype):
    """Ten steps on the kernel path against ``torch.optim`` to float round-off (torch's CPU kernels round some
    scalars differently), parameters and moments."""
    torch = pytest.importorskip("torch")
    p = {k: v for k, v in _tree(dtype, seed=7).items()}
    tparams = [torch.nn.Parameter(torch.tensor(x)) for x in tree_leaves(p)]
    topt = getattr(torch.optim, cls)(tparams, **kw)
    opt = getattr(O, cls)(**kw)
    state = opt.init(p)
    for step in range(10):
        g = _grads(p, step)  # the same gradients on both sides (no feedback of float32 round-off through them)
        for tp, gg in zip(tparams, tree_leaves(g)):
            tp.grad = torch.tensor(gg)
        topt.step()
        p, state = opt.update(g, state, p)
    assert len(kernel_calls) == 10 * len(SHAPES)
    rtol, atol = (2e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-13)
    for (name, a), t in zip(p.items(), tparams):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=rtol, atol=atol, err_msg=name)
        st = topt.state[t]
        np.testing.assert_allclose(state["exp_avg"][name], st["exp_avg"].numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(state["exp_avg_sq"][name], st["exp_avg_sq"].numpy(), rtol=rtol, atol=atol)
