"""Validate once per structure (``arrayrl._validate.StructureCache``): the loss layer's shape/dtype checks are
skipped for a batch whose structure (keys, array types, shapes, dtypes, devices) already passed them, and run again
for any new structure, with the same error as a cold call. Data checks (the categorical action range) run on every
call. The cached fast path gives exactly the values of the cold path.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import arrayrl.objectives as O
from arrayrl import _validate as V
from arrayrl import data as _data
from arrayrl._validate import IndexRangeError, StructureCache, batch_entry
from arrayrl.nn import MLP, QValueActor
from arrayrl.objectives import functional as OF
from arrayrl.objectives.actor_critic import _sg_tree
from arrayrl.tree import tree_map
from arrayrl.value import TD0Estimator
from arrayrl.value import estimators as E
from arrayrl.value import functional as VF
from arrayrl.autodiff import Tensor, stop_gradient

B, NOBS, NA = 6, 3, 4


def _clear_caches() -> None:
    """Forget every remembered structure (the next call is a cold one)."""
    V._ENTRY_CACHE.clear()
    E._SIGNALS_CHECKED.clear()
    OF._CHOSEN_CHECKED.clear()


def _dqn_loss():
    net = MLP(in_features=NOBS, out_features=NA, num_cells=[8], dtype=np.float32)
    loss = O.DQNLoss(QValueActor(net, action_space="categorical"), action_space="categorical")
    loss.make_value_estimator(gamma=0.9)
    return loss


def _dqn_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    f = np.float32
    term = rng.uniform(size=(B, 1)) < 0.5
    return {"observation": rng.normal(size=(B, NOBS)).astype(f), "action": rng.integers(0, NA, B),
            "next": {"observation": rng.normal(size=(B, NOBS)).astype(f), "reward": rng.normal(size=(B, 1)).astype(f),
                     "done": term, "terminated": term}}


def _error_of(fn):
    try:
        fn()
    except Exception as err:  # noqa: BLE001 - the test compares whatever was raised
        return type(err), str(err)
    return None


# ------------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize("key, found", [("a", True), (("a",), True), (("n", "b"), True), (("n", ("b",)), True),
                                        (("n", "x"), False), (("missing",), False), (("a", "deeper"), False),
                                        (("m", "c"), True)])
def test_nested_reads_on_dict_and_mapping_nodes(key, found):
    """The loss layer reads nested entries with ``data.get_or`` (plain-dict fast path): the same answer for plain
    dicts, a non-dict ``Mapping`` node and a non-dict root."""
    leaf = np.zeros(2)
    batch = {"a": leaf, "n": {"b": leaf}, "m": types.MappingProxyType({"c": leaf})}  # a non-dict Mapping node
    want = leaf if found else "absent"
    assert _data.get_or(batch, key, "absent") is want
    proxy = types.MappingProxyType(batch)  # a non-dict root
    assert _data.get_or(proxy, key, "absent") is want


def test_required_reads_return_the_entry_or_raise_a_key_error_naming_it():
    batch = {"a": np.zeros(2), "n": {"b": np.ones(1)}}
    assert _data.get(batch, ("n", "b")) is batch["n"]["b"]
    err = _error_of(lambda: _data.get(batch, ("n", "c"), what="role"))
    assert err[0] is KeyError and "('n', 'c') (role) not found" in err[1] and "('n', 'b')" in err[1]


def test_structure_cache_bounds_and_unhashable_signatures():
    cache = StructureCache(maxsize=2)
    cache.add(None)
    cache.add(([1],))  # unhashable: never cached
    assert len(cache) == 0 and ([1],) not in cache and None not in cache
    cache.add(1)
    cache.add(2)
    cache.add(3)  # full: emptied first
    assert 3 in cache and 1 not in cache and len(cache) == 1


def test_signature_tells_dtype_shape_type_and_absence_apart():
    x = np.zeros((2, 1), np.float32)
    sigs = {V.structure_signature(x), V.structure_signature(x.astype(np.float64)), V.structure_signature(x[:1]),
            V.structure_signature(Tensor(x)), V.structure_signature(None), V.structure_signature(x, None),
            V.structure_signature(x, x)}
    assert len(sigs) == 7
    assert V.structure_signature(x, [1.0]) is None  # a non-array: never cached


# ------------------------------------------------------------------------------------------------ batch_entry
@pytest.mark.parametrize("bad, error", [
    (np.zeros((B, 2), np.float32), ValueError),   # another trailing axis
    (np.zeros((B - 1, 1), np.float32), ValueError),  # another batch size
    (np.zeros((B, 1), np.int64), TypeError),  # another dtype
    ("missing", KeyError),
])
def test_batch_entry_new_structure_after_a_cached_call_raises_the_cold_error(bad, error):
    good = {"next": {"reward": np.zeros((B, 1), np.float32)}}
    batch = {"next": {}} if isinstance(bad, str) else {"next": {"reward": bad}}

    def call(b):
        return batch_entry(b, ("next", "reward"), (B,), kind="floating", what="reward")

    _clear_caches()
    cold = _error_of(lambda: call(batch))
    assert cold is not None and cold[0] is error and "'next', 'reward'" in cold[1]
    _clear_caches()
    assert call(good) is good["next"]["reward"]
    assert call(good) is good["next"]["reward"]  # cached
    assert len(V._ENTRY_CACHE) == 1
    assert _error_of(lambda: call(batch)) == cold


def test_batch_entry_same_array_against_another_batch_shape_is_checked_again():
    batch = {"next": {"reward": np.zeros((B, 1), np.float32)}}

    def call(shape):
        return batch_entry(batch, ("next", "reward"), shape, kind="floating", what="reward")

    _clear_caches()
    cold = _error_of(lambda: call((B + 1,)))
    assert cold is not None and cold[0] is ValueError
    _clear_caches()
    call((B,))
    call((B,))
    assert _error_of(lambda: call((B + 1,))) == cold


# ------------------------------------------------------------------------------------------------ a loss
def _mutations():
    f = np.float32
    return {
        "reward shape": (lambda b: _data.with_(b, ("next", "reward"), np.zeros((B, 2), f)), ValueError, "reward"),
        "reward batch": (lambda b: _data.with_(b, ("next", "reward"), np.zeros((B + 1, 1), f)), ValueError, "reward"),
        "reward dtype": (lambda b: _data.with_(b, ("next", "reward"), np.zeros((B, 1), np.int32)), TypeError, "reward"),
        "reward float64": (lambda b: _data.with_(b, ("next", "reward"), np.zeros((B, 1), np.float64)), TypeError,
                           "reward"),
        "done dtype": (lambda b: _data.with_(b, ("next", "done"), np.zeros((B, 1), f)), TypeError, "done"),
        "done missing": (lambda b: _data.without(b, ("next", "done")), KeyError, "done"),
        "action dtype": (lambda b: _data.with_(b, "action", np.zeros(B, f)), TypeError, "action"),
        "action shape": (lambda b: _data.with_(b, "action", np.zeros((B, 2), np.int64)), ValueError, "action"),
        "action range": (lambda b: _data.with_(b, "action", np.full(B, NA)), IndexRangeError, "action"),
        "terminated shape": (lambda b: _data.with_(b, ("next", "terminated"), np.zeros((B, 3), bool)), ValueError,
                             "terminated"),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_loss_new_structure_after_cached_calls_raises_the_cold_error(name):
    mutate, error, key = _mutations()[name]
    loss = _dqn_loss()
    bad = mutate(_dqn_batch())
    _clear_caches()
    cold = _error_of(lambda: loss.value_and_grad(bad))
    assert cold is not None and issubclass(cold[0], error) and key in cold[1], cold
    _clear_caches()
    for seed in range(3):  # the same structure three times: cached after the first
        loss.value_and_grad(_dqn_batch(seed))
    assert len(V._ENTRY_CACHE) and len(E._SIGNALS_CHECKED) and len(OF._CHOSEN_CHECKED)
    assert _error_of(lambda: loss.value_and_grad(bad)) == cold


def test_loss_cached_fast_path_gives_the_cold_values():
    loss = _dqn_loss()
    batch = _dqn_batch(1)
    _clear_caches()
    (out_cold, g_cold), td_cold = loss.value_and_grad(batch), np.array(batch["td_error"])
    assert len(E._SIGNALS_CHECKED) == 1  # now cached
    (out_hot, g_hot), td_hot = loss.value_and_grad(batch), np.array(batch["td_error"])
    assert np.array_equal(out_cold["loss"], out_hot["loss"]) and np.array_equal(td_cold, td_hot)
    assert tree_map(lambda a, b: bool(np.array_equal(a, b)), g_cold, g_hot) == tree_map(lambda a: True, g_cold)
    assert np.asarray(out_hot["loss"]).dtype == np.float32


# ------------------------------------------------------------------------------------------------ TD(0) fast path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 1), (3, 5, 1)])
def test_td0_estimator_fast_path_matches_the_functional(dtype, shape):
    rng = np.random.default_rng(3)
    nv = rng.normal(size=shape).astype(dtype)
    nv[0] = np.nan  # a terminated row: selected away, never multiplied
    reward = rng.normal(size=shape).astype(dtype)
    term = rng.uniform(size=shape) < 0.4
    term[0] = True
    done = term | (rng.uniform(size=shape) < 0.5)  # truncated rows (done, not terminated) bootstrap
    assert (done & ~term).any()
    batch = {"next": {"reward": reward, "done": done, "terminated": term}}
    est = TD0Estimator(gamma=0.97, value_network=None)
    want = VF.td0_return_estimate(0.97, nv, reward, term)
    for _ in range(2):  # cold, then cached
        got = est.value_estimate(batch, next_value=nv)
        assert got.dtype == dtype and np.array_equal(got, want)
    # a non-float gamma (NumPy scalar) takes the functional: same values, no float64 promotion of float32
    est_np = TD0Estimator(gamma=np.float64(0.97), value_network=None)
    got = est_np.value_estimate(batch, next_value=nv)
    assert got.dtype == dtype and np.array_equal(got, want)


def test_td0_estimator_fast_path_still_rejects_a_reassigned_gamma():
    term = np.zeros((3, 1), bool)
    batch = {"next": {"reward": np.ones((3, 1)), "done": term, "terminated": term}}
    est = TD0Estimator(gamma=0.9, value_network=None)
    est.value_estimate(batch, next_value=np.ones((3, 1)))
    est.gamma = 1.5
    with pytest.raises(ValueError, match="gamma"):
        est.value_estimate(batch, next_value=np.ones((3, 1)))


def test_td0_estimator_taped_next_value_keeps_its_gradient():
    nv = np.arange(4.0).reshape(4, 1)
    term = np.array([[True], [False], [False], [True]])
    batch = {"next": {"reward": np.ones((4, 1)), "done": term, "terminated": term}}
    from arrayrl.autodiff import grad

    est = TD0Estimator(gamma=0.5, value_network=None)
    g = grad(lambda v: namespace_sum(est.value_estimate(batch, next_value=v)))(nv)
    assert np.array_equal(stop_gradient(g), np.where(term, 0.0, 0.5))


def namespace_sum(x):
    from arrayrl._backend import namespace_of

    return namespace_of(x).sum(x)


# ------------------------------------------------------------------------------------------------ _sg_tree
def test_sg_tree_matches_tree_map_stop_gradient():
    class D(dict):
        pass

    x = np.ones(2)
    tree = {"a": Tensor(x), "b": [Tensor(x), (x, None)], "c": D(w=Tensor(x)), "d": None}
    got, want = _sg_tree(tree), tree_map(stop_gradient, tree)
    assert type(got["c"]) is type(want["c"]) and got.keys() == want.keys()
    assert tree_map(lambda a: type(a), got) == tree_map(lambda a: type(a), want)
    assert got["a"] is x and got["b"][0] is x and got["b"][1][1] is None and got["d"] is None
