"""The raw (untaped) acting route: ``actor({"observation": obs})`` and ``qnet(x)`` on NumPy.

Acting and target networks take a short route (``Sequential.__call__`` without the ``params`` dict, the MLP's input
check cached per signature, :func:`arrayrl.ops.mlp` without the primitive's wrapper and without the BLAS thread
switch where OpenBLAS is serial anyway, small layers on the lean kernel, NumPy reductions for the greedy head).
These tests pin what must not change:

* values bit for bit, all three out keys, dtype kept: against a hand-written NumPy forward (the torch layout
  ``x @ W.T + b``, golden), the array-api-strict backend (the generic per-layer code) and a taped evaluation, for
  the Q-value action spaces (with and without a mask), batch shapes ``()``, ``[1]``, ``[3]``, ``[2, 5]``,
  float32/float64, with and without the last bias, relu/tanh (the fused stack) and elu (per layer), ensembles;
* the live view: assigning ``actor.params``, ``qnet.params`` or a leaf is seen by the next call; subclasses that
  override ``apply``/``params`` keep their override;
* bad input still raises the same errors after good calls (the caches never hide a check);
* the BLAS thread policy: the switch happens exactly where it did (products of at least ``LEAN_WORK``
  multiply-adds), and never with the policy off.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import _kernels, _pool, nn, ops
from arrayrl.autodiff import Tensor, tuning, value_and_grad
from arrayrl.random import Generator

BATCHES = [(), (1,), (3,), (2, 5)]


# ------------------------------------------------------------------------------------------------ golden forwards
def _hand_mlp(params, x, act, keys, bias_last=True):
    """TorchRL's MLP by hand: ``h = act(h @ W.T + b)`` on the input flattened to ``[M, in]`` (as the module does)."""
    f = {"relu": lambda h: np.maximum(h, 0), "tanh": np.tanh,
         "elu": lambda h: np.maximum(h, 0) + np.expm1(np.minimum(h, 0))}[act]  # (one of the two terms is 0)
    h = x.reshape(-1, x.shape[-1])
    for i, k in enumerate(keys):
        h = h @ params[k]["weight"].T
        if i < len(keys) - 1 or bias_last:
            h = h + params[k]["bias"]
        if i < len(keys) - 1:
            h = f(h)
    return h.reshape(x.shape[:-1] + (h.shape[-1],))


def _hand_greedy(q, space, mask=None, var_nums=None):
    """TorchRL's QValueModule by hand: (action, masked action values, chosen action value)."""
    if mask is not None:
        q = np.where(mask, q, np.finfo(q.dtype).min)
    if space == "categorical":
        a = np.argmax(q, axis=-1).astype(np.int64)
        return a, q, np.take_along_axis(q, a[..., None], axis=-1)
    if space == "one_hot":
        a = (q == q.max(-1, keepdims=True)).astype(np.int64)
    else:
        parts = np.split(q, np.cumsum(var_nums)[:-1], axis=-1)
        a = np.concatenate([(p == p.max(-1, keepdims=True)).astype(np.int64) for p in parts], axis=-1)
    return a, q, (a.astype(q.dtype) * q).sum(-1, keepdims=True)


def _actor(space, dtype, act="relu", bias_last=True, mask=False, n_in=4, n_out=6, cells=(16, 12), seed=0):
    qnet = nn.MLP(n_in, n_out, num_cells=list(cells), activation_class=act, bias_last_layer=bias_last,
                  generator=Generator(seed), dtype=dtype)
    var_nums = [2, 4] if space == "mult_one_hot" else None
    actor = nn.QValueActor(qnet, in_keys=["observation"], action_space=space, var_nums=var_nums,
                           action_mask_key="action_mask" if mask else None)
    return qnet, actor, var_nums


def _assert_same(got, want):
    """Equal values, dtype and shape (an int64 action, a float action value of the input's dtype)."""
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize("space", ["categorical", "one_hot", "mult_one_hot"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias_last", [True, False])
@pytest.mark.parametrize("mask", [False, True])
def test_actor_equals_hand_forward(space, batch, dtype, bias_last, mask):
    qnet, actor, var_nums = _actor(space, dtype, bias_last=bias_last, mask=mask)
    rng = np.random.default_rng(1)
    obs = rng.standard_normal(batch + (4,)).astype(dtype)
    batch_in = {"observation": obs}
    m = None
    if mask:
        m = rng.random(batch + (6,)) < 0.7
        m[..., 0] = True
        batch_in["action_mask"] = m
    q = _hand_mlp(qnet.params, obs, "relu", ("0", "2", "4"), bias_last)
    want = _hand_greedy(q, space, m, var_nums)
    for _ in range(2):  # the first call fills the caches, the second takes them
        out = actor(batch_in)
        for key, w in zip(("action", "action_value", "chosen_action_value"), want):
            _assert_same(out[key], w)
        assert out["observation"] is obs and "action" not in batch_in  # the caller's dict is not written


@pytest.mark.parametrize("act", ["relu", "tanh", "elu"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_raw_mlp_equals_hand_forward_and_generic_backend(act, batch, dtype):
    qnet, _, _ = _actor("categorical", dtype, act=act)
    x = np.random.default_rng(2).standard_normal(batch + (4,)).astype(dtype)
    want = _hand_mlp(qnet.params, x, act, ("0", "2", "4"))
    # (float32 elu on NumPy computes expm1 as exp(m) - 1, documented within one float32 ulp of 1: _kernels.elu)
    check = _assert_same if (act, dtype) != ("elu", np.float32) else _close_f32
    check(qnet(x), want)
    check(qnet.apply(qnet.params, x), want)  # the same tree passed explicitly
    xps = pytest.importorskip("array_api_strict")  # the generic per-layer code on another backend
    sp = {k: {n: xps.asarray(a) for n, a in layer.items()} for k, layer in qnet.params.items()}
    check(np.asarray(qnet.apply(sp, xps.asarray(x))), want)


@pytest.mark.parametrize("batch", BATCHES)
def test_raw_mlp_with_a_shaped_output(batch):
    """``out_features=(2, 3)``: the output is reshaped to ``[*B, 2, 3]`` on the raw route too."""
    net = nn.MLP(4, (2, 3), num_cells=[8], activation_class="relu", generator=Generator(9), dtype=np.float32)
    x = np.random.default_rng(9).standard_normal(batch + (4,)).astype(np.float32)
    _assert_same(net(x), _hand_mlp(net.params, x, "relu", ("0", "2")).reshape(batch + (2, 3)))


def _close_f32(got, want):
    got = np.asarray(got)
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 3, 128])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_raw_mlp_equals_taped_evaluation(rows, dtype):
    """The raw route gives the values of the taped one (the fused primitive recording a node)."""
    qnet = nn.MLP(4, 2, num_cells=[120, 84], activation_class="relu", generator=Generator(3), dtype=dtype)
    x = np.random.default_rng(3).standard_normal((rows, 4)).astype(dtype)
    seen = {}

    def f(params):
        seen["y"] = qnet.apply(params, x)
        return seen["y"].__array_namespace__().sum(seen["y"])

    value_and_grad(f)(qnet.params)
    assert isinstance(seen["y"], Tensor)
    y = qnet(x)
    assert type(y) is np.ndarray
    _assert_same(y, seen["y"].value)
    _assert_same(y, _hand_mlp(qnet.params, x, "relu", ("0", "2", "4")))


@pytest.mark.parametrize("stacked_input", [False, True])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ensemble_actor_equals_per_member_hand_forward(stacked_input, batch, dtype):
    base = nn.MLP(4, 3, num_cells=[8], activation_class="relu", dtype=dtype)
    ens = nn.Ensemble(base, 2, generator=Generator(4))
    x = np.random.default_rng(4).standard_normal(((2,) if stacked_input else ()) + batch + (4,)).astype(dtype)
    members = [{k: {n: a[i] for n, a in layer.items()} for k, layer in ens.params.items()} for i in range(2)]
    want = np.stack([_hand_mlp(p, x[i] if stacked_input else x, "relu", ("0", "2")) for i, p in enumerate(members)])
    y = ens(x, stacked_input=stacked_input)
    assert y.dtype == dtype and y.shape == (2,) + batch + (3,)
    np.testing.assert_array_equal(y, want)
    actor = nn.QValueActor(nn.KeyedModule(lambda p, o: ens.apply(p, o, stacked_input=stacked_input),
                                          params=ens.params, in_keys=["observation"], out_keys=["action_value"]),
                           action_space="categorical")
    out = actor({"observation": x})
    for key, w in zip(("action", "action_value", "chosen_action_value"), _hand_greedy(np.asarray(y), "categorical")):
        _assert_same(out[key], w)


# ------------------------------------------------------------------------------------------------ live parameters
def _other_tree(qnet, seed):
    return qnet.init(Generator(seed))


def test_parameter_assignments_are_seen_by_the_next_call():
    qnet, actor, _ = _actor("categorical", np.float32)
    obs = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)

    def expect():
        return _hand_greedy(_hand_mlp(qnet.params, obs, "relu", ("0", "2", "4")), "categorical")[1]

    _assert_same(actor({"observation": obs})["action_value"], expect())
    actor.params = {"0": _other_tree(qnet, 10), "1": {}}  # through the Sequential
    assert qnet.params is actor.params["0"]
    _assert_same(actor({"observation": obs})["action_value"], expect())
    qnet.params = _other_tree(qnet, 11)  # through the network
    _assert_same(actor({"observation": obs})["action_value"], expect())
    actor.modules[0].params = _other_tree(qnet, 12)  # through the keyed module
    _assert_same(actor({"observation": obs})["action_value"], expect())
    w = qnet.params["4"]["weight"]
    qnet.params["4"]["weight"] = w * 2  # a leaf replaced in place: the leaves are read live on every call
    _assert_same(actor({"observation": obs})["action_value"], expect())
    _assert_same(qnet(obs), _hand_mlp(qnet.params, obs, "relu", ("0", "2", "4")))


def test_sequential_subclass_overrides_are_kept():
    qnet, _, _ = _actor("categorical", np.float64)
    obs = np.ones((1, 4))
    calls = []

    class Logged(nn.Sequential):
        def apply(self, params, batch, **kw):
            calls.append(sorted(params))
            return super().apply(params, batch, **kw)

    class Frozen(nn.Sequential):
        frozen = {"0": _other_tree(qnet, 20), "1": {}}

        @property
        def params(self):
            return self.frozen

    net = nn.KeyedModule(qnet, in_keys=["observation"], out_keys=["action_value"])
    Logged(net, nn.QValueModule("categorical"))({"observation": obs})
    assert calls == [["0", "1"]]
    got = Frozen(net, nn.QValueModule("categorical"))({"observation": obs})["action_value"]
    _assert_same(got, _hand_mlp(Frozen.frozen["0"], obs, "relu", ("0", "2", "4")))


# ------------------------------------------------------------------------------------------------ checks kept
def test_bad_input_still_raises_after_good_calls():
    qnet, actor, _ = _actor("categorical", np.float32)
    good = np.zeros((2, 4), np.float32)
    actor({"observation": good})
    qnet(good)  # the signature (float32, last dimension 4) is now cached
    with pytest.raises(ValueError, match=r"input: expected a last dimension of size 4 \(in_features\), got shape "
                                         r"\(2, 5\)"):
        actor({"observation": np.zeros((2, 5), np.float32)})
    with pytest.raises(TypeError, match=r"input: expected a real floating dtype \(float32 or float64\), got int64"):
        actor({"observation": np.zeros((2, 4), np.int64)})
    with pytest.raises(TypeError, match=r"input: expected a real floating dtype .* got float16"):
        qnet(np.zeros((2, 4), np.float16))
    with pytest.raises(TypeError, match=r"input: expected an array, got list"):
        qnet([[0.0] * 4])
    with pytest.raises(ValueError, match=r"input: expected a last dimension of size 4 .* got shape \(\)"):
        qnet(np.float32(0.0) + np.zeros((), np.float32))
    with pytest.raises(KeyError, match="observation"):
        actor({"obs": good})
    other = nn.MLP(5, 2, num_cells=[3], dtype=np.float32)  # the same input signature, another in_features
    with pytest.raises(ValueError, match=r"input: expected a last dimension of size 5"):
        other(good)
    bad = {k: dict(v) for k, v in qnet.params.items()}
    bad["2"]["bias"] = np.zeros((1,), np.float32)
    qnet.params = bad
    with pytest.raises(ValueError, match=r"params\['2'\]\['bias'\]: expected shape \(12,\), got \(1,\)"):
        actor({"observation": good})
    with pytest.raises(TypeError, match=r"'action_value': expected a real floating dtype .* got int64"):
        nn.QValueModule("categorical")({"action_value": np.zeros((2, 3), np.int64)})


# ------------------------------------------------------------------------------------------------ ops level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5,), (1, 3), (4, 3), (2, 3, 4)])
def test_greedy_reductions_equal_the_namespace_ones(dtype, shape):
    q = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    q.flat[0] = np.nan if q.size > 3 else q.flat[0]  # NaN: the reductions' own conventions (propagate, first index)
    for got, want in ((ops.max_last(q), np.max(q, axis=-1, keepdims=True)),
                      (ops.argmax_last(q), np.astype(np.argmax(q, axis=-1), np.int64))):
        assert type(got) is type(want) and got.dtype == want.dtype and np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)
    xps = pytest.importorskip("array_api_strict")
    s = xps.asarray(q)
    _assert_same(np.asarray(ops.max_last(s)), np.max(q, axis=-1, keepdims=True))
    _assert_same(np.asarray(ops.argmax_last(s)), np.argmax(q, axis=-1).astype(np.int64))


def test_taped_greedy_max_keeps_its_gradient():
    q = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    _, g = value_and_grad(lambda t: t.__array_namespace__().sum(ops.max_last(t)))(q)
    _assert_same(g, np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


class _FakeBlas:
    """Stands in for OpenBLAS's (get, set) thread-count functions and records the calls."""

    def __init__(self, threads=2):
        self.threads, self.calls = threads, []

    def get(self):
        return self.threads

    def set(self, n):
        self.calls.append(n)
        self.threads = n


@pytest.mark.parametrize("rows,cells,switch", [(1, [120, 84], True), (128, [120, 84], True), (1, [16, 12], False),
                                               (1, [90, 90], False), (1, [100, 90], True)])
def test_blas_switch_exactly_where_the_policy_needs_it(monkeypatch, rows, cells, switch):
    """The raw route sets OpenBLAS to one thread (and back) for a stack whose largest product has at least
    LEAN_WORK multiply-adds (OpenBLAS may thread those), and leaves it alone below that (OpenBLAS is serial there)
    and with the policy off."""
    fake = _FakeBlas()
    monkeypatch.setattr(tuning, "_BLAS_FNS", [(fake.get, fake.set)])
    qnet = nn.MLP(4, 2, num_cells=cells, activation_class="relu", generator=Generator(7), dtype=np.float32)
    x = np.ones((rows, 4), np.float32)
    largest = max(a * b for a, b in zip([4] + cells, cells + [2])) * rows
    assert (largest >= ops.LEAN_WORK) == switch
    before = tuning.blas_policy()
    tuning.set_blas_policy("auto", serial_below=tuning.ALWAYS_SERIAL)
    try:
        y = qnet(x)
        assert fake.calls == ([1, 2] if switch else [])
        fake.calls.clear()
        tuning.set_blas_policy("off")
        _assert_same(qnet(x), y)
        assert fake.calls == []
    finally:
        tuning.set_blas_policy(before[0], serial_below=before[1])
    assert fake.threads == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,width", [(1, 8), (2047, 3), (2048, 3), (300, 100), (400, 100), (40, 900)])
def test_small_layers_equal_the_pooled_kernel(dtype, rows, width):
    """Layers on the lean kernel inside the serial stack (output under the pool's MIN_BYTES, under 2048 rows) give
    exactly what ``_kernels.linear`` (pooled output, tiled bias add) gives, on both sides of both bounds."""
    rng = np.random.default_rng(8)
    ws = [(rng.standard_normal((width, 5)).astype(dtype), rng.standard_normal(width).astype(dtype)),
          (rng.standard_normal((2, width)).astype(dtype), None)]
    x = rng.standard_normal((rows, 5)).astype(dtype)
    small = ops._is_small(x, *ws[0])
    assert small == (rows < 2048 and rows * width * np.dtype(dtype).itemsize < _pool.MIN_BYTES)
    want = _kernels.linear(_kernels.linear(x, ws[0][0], ws[0][1], "relu"), ws[1][0], None, None)
    _assert_same(ops.mlp(x, ws, ["relu", None]), want)
    _assert_same(ops._mlp_serial(("relu", None), [], x, [a for wb in ws for a in wb]), want)
