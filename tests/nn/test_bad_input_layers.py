"""arrayrl.nn layers, mixers and parameter helpers on bad input: parameter trees of the wrong shapes (no silent
broadcast of a ``(1,)`` bias), missing or extra leaves, inputs of the wrong feature size, size arguments of every
integer-like type, construction-time dtypes, NumPy/torch generators.

Expected shapes are written by hand from the layer sizes (torch's ``nn.Linear`` layout: weight ``[out, in]``, bias
``[out]``), never read from the code under test.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arrayrl.nn as nn
from arrayrl.nn.multiagent import QMixer, VDNMixer
from arrayrl.random import Generator


def _expected_mlp_shapes(n_in, cells, n_out, bias_last=True):
    """``{(key, leaf): shape}`` of an MLP by hand: TorchRL's nn.Sequential indices 0, 2, 4..."""
    sizes = [n_in, *cells, n_out]
    out = {}
    for i in range(len(sizes) - 1):
        key = str(2 * i)
        out[(key, "weight")] = (sizes[i + 1], sizes[i])
        if bias_last or i < len(sizes) - 2:
            out[(key, "bias")] = (sizes[i + 1],)
    return out


def _qmixer_shapes(S, E, n):
    return {("hyper_w_1", "weight"): (E * n, S), ("hyper_w_1", "bias"): (E * n,),
            ("hyper_w_final", "weight"): (E, S), ("hyper_w_final", "bias"): (E,),
            ("hyper_b_1", "weight"): (E, S), ("hyper_b_1", "bias"): (E,),
            ("V", "0", "weight"): (E, S), ("V", "0", "bias"): (E,),
            ("V", "2", "weight"): (1, E), ("V", "2", "bias"): (1,)}


def _replace(tree, path, value):
    """A copy of ``tree`` with ``tree[path]`` replaced (the input is left alone)."""
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def _delete(tree, path):
    if len(path) == 1:
        return {k: v for k, v in tree.items() if k != path[0]}
    return {**tree, path[0]: _delete(tree[path[0]], path[1:])}


def _where(path):
    return "params" + "".join(f"[{k!r}]" for k in path)


def _fmt(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


@st.composite
def _wrong_shape(draw, shape):
    """A shape other than ``shape``, favouring the ones NumPy would broadcast (the silent failures)."""
    broadcastable = [(), (1,), tuple(1 for _ in shape), (1,) + shape, shape[:-1] + (1,) if shape else (2,)]
    other = st.lists(st.integers(0, 6), max_size=3).map(tuple)
    got = draw(st.one_of(st.sampled_from(broadcastable), other))
    return got if got != shape else shape + (2,)


# ------------------------------------------------------------------------------------------------ parameter shapes
@given(n_in=st.integers(1, 4), cells=st.lists(st.integers(1, 5), max_size=2), n_out=st.integers(1, 3),
       bias_last=st.booleans(), data=st.data())
def test_mlp_names_the_leaf_of_wrong_shape(n_in, cells, n_out, bias_last, data):
    m = nn.MLP(n_in, n_out, num_cells=cells, bias_last_layer=bias_last)
    shapes = _expected_mlp_shapes(n_in, cells, n_out, bias_last)
    path = data.draw(st.sampled_from(sorted(shapes)))
    bad = data.draw(_wrong_shape(shapes[path]))
    if path == ("0", "weight") and len(bad) == 3:
        bad = bad + (1,)  # a 3-D first weight declares an ensemble tree (tested with the ensembles)
    params = _replace(m.params, path, np.zeros(bad))
    x = np.ones((2, n_in))
    if path == ("0", "weight") and len(bad) != 2:
        match = rf"{re.escape(_where(path))}: expected shape \(out, in\) or \(N, out, in\)"
    else:
        match = rf"^{re.escape(_where(path))}: expected shape {re.escape(_fmt(shapes[path]))}, got {re.escape(_fmt(bad))}$"
    with pytest.raises(ValueError, match=match):
        m.apply(params, x)


def test_a_broadcastable_bias_is_an_error_not_a_broadcast():
    """The reported case: a (1,) bias broadcast over 64 units and trained a different model."""
    m = nn.MLP(3, 2, num_cells=[64])
    with pytest.raises(ValueError, match=r"^params\['0'\]\['bias'\]: expected shape \(64,\), got \(1,\)$"):
        m.apply(_replace(m.params, ("0", "bias"), np.zeros(1)), np.ones((5, 3)))
    lin = nn.Linear(3, 4)
    with pytest.raises(ValueError, match=r"^params\['bias'\]: expected shape \(4,\), got \(\)$"):
        lin.apply({**lin.params, "bias": np.zeros(())}, np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"^params\['weight'\]: expected shape \(4, 3\), got \(1, 3\)$"):
        lin.apply({**lin.params, "weight": np.zeros((1, 3))}, np.ones((5, 3)))


@given(data=st.data())
def test_mlp_names_missing_and_unexpected_leaves(data):
    m = nn.MLP(3, 2, num_cells=[4, 5])
    shapes = _expected_mlp_shapes(3, [4, 5], 2)
    path = data.draw(st.sampled_from(sorted(shapes)))
    with pytest.raises(KeyError, match=re.escape(f"{_where(path[:1])}: missing [{path[1]!r}]")):
        m.apply(_delete(m.params, path), np.ones((2, 3)))
    with pytest.raises(KeyError, match=re.escape(f"params: missing [{path[0]!r}]")):
        m.apply(_delete(m.params, path[:1]), np.ones((2, 3)))
    with pytest.raises(ValueError, match=re.escape(f"{_where(path[:1])}: unexpected keys ['scale']")):
        m.apply(_replace(m.params, (path[0], "scale"), np.ones(1)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=re.escape("params: unexpected keys ['6']")):
        m.apply({**m.params, "6": m.params["4"]}, np.ones((2, 3)))


def test_bias_free_layers_reject_a_bias_and_non_dicts():
    m = nn.MLP(3, 2, bias_last_layer=False)
    with pytest.raises(ValueError, match=re.escape("params['0']: unexpected keys ['bias']")):
        m.apply({"0": {"weight": m.params["0"]["weight"], "bias": np.zeros(2)}}, np.ones((1, 3)))
    with pytest.raises(TypeError, match=r"params: expected a dict with keys \['0'\]"):
        m.apply([m.params["0"]], np.ones((1, 3)))
    with pytest.raises(TypeError, match=r"params\['0'\]\['weight'\]: expected an array, got list"):
        m.apply({"0": {"weight": [[1.0, 2.0, 3.0]] * 2}}, np.ones((1, 3)))
    with pytest.raises(ValueError, match=re.escape("params: unexpected keys ['bias']")):
        nn.Linear(3, 2, bias=False).apply({"weight": np.zeros((2, 3)), "bias": np.zeros(2)}, np.ones((1, 3)))


@given(data=st.data(), members=st.integers(1, 3))
def test_ensembles_check_every_leaf_and_the_member_axis(data, members):
    e = nn.Ensemble(nn.MLP(3, 2, num_cells=[4]), members)
    shapes = {k: (members,) + v for k, v in _expected_mlp_shapes(3, [4], 2).items()}
    path = data.draw(st.sampled_from(sorted(shapes)))
    bad = data.draw(_wrong_shape(shapes[path]))
    with pytest.raises(ValueError, match=re.escape(_where(path))):
        e.apply(_replace(e.params, path, np.zeros(bad)), np.ones((2, 3)))
    plain = nn.MLP(3, 2, num_cells=[4]).params
    with pytest.raises(ValueError, match=re.escape(f"params['0']['weight']: expected a leading ensemble axis of size "
                                                   f"{members}, got shape (4, 3)")):
        e.apply(plain, np.ones((2, 3)))
    with pytest.raises(ValueError, match=re.escape(f"params['0']['weight']: expected a leading ensemble axis of size "
                                                   f"{members + 1}")):
        nn.Ensemble(nn.MLP(3, 2, num_cells=[4]), members + 1, params=e.params)


def test_stacked_input_needs_ensemble_parameters():
    m = nn.MLP(3, 2)
    with pytest.raises(ValueError, match=r"stacked_input: True needs ensemble parameters"):
        m.apply(m.params, np.ones((2, 4, 3)), stacked_input=True)
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"stacked_input: True needs ensemble parameters"):
        lin.apply(lin.params, np.ones((2, 4, 3)), stacked_input=True)


@given(data=st.data())
def test_qmixer_names_the_leaf_of_wrong_shape(data):
    mixer = QMixer(state_shape=(2, 3), mixing_embed_dim=4, n_agents=3)
    shapes = _qmixer_shapes(6, 4, 3)
    path = data.draw(st.sampled_from(sorted(shapes)))
    bad = data.draw(_wrong_shape(shapes[path]))
    q, s = np.ones((5, 3, 1)), np.ones((5, 2, 3))
    with pytest.raises(ValueError, match=rf"^{re.escape(_where(path))}: expected shape {re.escape(_fmt(shapes[path]))}"):
        mixer.apply(_replace(mixer.params, path, np.zeros(bad)), q, s)
    with pytest.raises(KeyError, match=re.escape(f"{_where(path[:-1])}: missing [{path[-1]!r}]")):
        mixer.apply(_delete(mixer.params, path), q, s)


# ------------------------------------------------------------------------------------------------ inputs
@given(n_in=st.integers(1, 5), got=st.integers(0, 6), batch=st.lists(st.integers(0, 3), max_size=2),
       dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_]))
def test_inputs_of_the_wrong_feature_size_or_dtype_are_named(n_in, got, batch, dtype):
    x = np.ones((*batch, got), dtype=dtype)
    for layer in (nn.MLP(n_in, 2, num_cells=[3]), nn.Linear(n_in, 2), nn.Ensemble(nn.Linear(n_in, 2), 2)):
        if dtype in (np.int64, np.bool_):
            with pytest.raises(TypeError, match=r"^input: expected a real floating .*, got (int64|bool)$"):
                layer(x)
        elif got == n_in:
            y = layer(x)
            lead = (2,) if isinstance(layer, nn.Ensemble) else ()
            assert y.shape == lead + tuple(batch) + (2,)  # empty batches included
        else:
            with pytest.raises(ValueError, match=rf"^input: expected a last dimension of size {n_in} \(in_features\), "
                                                 rf"got shape {re.escape(_fmt(x.shape))}$"):
                layer(x)


def test_several_inputs_and_bad_input_types():
    m = nn.MLP(3, 2)
    with pytest.raises(ValueError, match=r"inputs: the last dimensions \(2, 2\) of the 2 inputs sum to 4, expected "
                                         r"in_features=3"):
        m(np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"inputs\[1\]: expected leading shape \(4,\)"):
        m(np.ones((4, 2)), np.ones((5, 1)))
    with pytest.raises(TypeError, match=r"inputs\[1\]: expected an array, got list"):
        m(np.ones((4, 2)), [[1.0]] * 4)
    with pytest.raises(ValueError, match=r"input: expected a last dimension of size 3 \(in_features\), got shape \(\)"):
        m(np.ones(()))


# ------------------------------------------------------------------------------------------------ size arguments
class _Index:
    """An integer-like that is not an int (only ``__index__``)."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


_INT_TYPES = [int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64, _Index]
_CONSTRUCTORS = {
    # name -> (build(**sizes), default sizes, shapes of params["..."] by hand)
    "Linear": (lambda in_features, out_features: nn.Linear(in_features, out_features), dict(in_features=3, out_features=2)),
    "MLP": (lambda in_features, out_features, cell, depth: nn.MLP(in_features, out_features, num_cells=cell, depth=depth),
            dict(in_features=3, out_features=2, cell=4, depth=2)),
    "Ensemble": (lambda num_members: nn.Ensemble(nn.Linear(3, 2), num_members), dict(num_members=2)),
    "QMixer": (lambda mixing_embed_dim, n_agents, state: QMixer((state, 2), mixing_embed_dim, n_agents),
               dict(mixing_embed_dim=4, n_agents=3, state=2)),
}
_ARG_NAMES = {"cell": "num_cells", "state": "state_shape[0]"}


@given(layer=st.sampled_from(sorted(_CONSTRUCTORS)), data=st.data())
def test_every_size_argument_accepts_integer_likes(layer, data):
    build, sizes = _CONSTRUCTORS[layer]
    arg = data.draw(st.sampled_from(sorted(sizes)))
    kind = data.draw(st.sampled_from(_INT_TYPES))
    module = build(**{**sizes, arg: kind(sizes[arg])})
    ref = build(**sizes)
    for a, b in zip(nn.flatten_params(module.params).items(), nn.flatten_params(ref.params).items()):
        assert a[0] == b[0] and a[1].shape == b[1].shape
        np.testing.assert_array_equal(a[1], b[1])  # same draws: the size is the same integer


@given(layer=st.sampled_from(sorted(_CONSTRUCTORS)), data=st.data(),
       bad=st.sampled_from([True, False, 2.0, 2.5, "2", None, -1, -3, np.float64(2.0), np.bool_(True)]))
def test_every_size_argument_rejects_non_integers_by_name(layer, data, bad):
    build, sizes = _CONSTRUCTORS[layer]
    arg = data.draw(st.sampled_from(sorted(sizes)))
    name = re.escape(_ARG_NAMES.get(arg, arg))
    if arg == "depth" and bad is None:
        return  # depth=None is valid (taken from num_cells)
    if arg == "cell" and bad is None:
        bad = "x"
    if isinstance(bad, (int, np.integer)) and not isinstance(bad, (bool, np.bool_)):
        with pytest.raises(ValueError, match=rf"{name}: expected an integer >= \d, got {bad}"):
            build(**{**sizes, arg: bad})
    else:
        with pytest.raises(TypeError, match=rf"{name}: expected an integer"):
            build(**{**sizes, arg: bad})


def test_gymnasium_action_space_n_and_tuple_out_features():
    m = nn.MLP(in_features=np.int64(4), out_features=np.int64(2))  # gymnasium's Discrete(2).n is an np.int64
    assert m.out_features == 2 and type(m.out_features) is int
    assert m(np.ones((5, 4))).shape == (5, 2)
    m = nn.MLP(3, (np.int64(2), 3), num_cells=(np.int32(4),))
    assert m(np.ones((5, 3))).shape == (5, 2, 3) and m.num_cells == [4]
    with pytest.raises(TypeError, match=r"out_features\[1\]: expected an integer, got float"):
        nn.MLP(3, (2, 3.0))
    with pytest.raises(ValueError, match=r"num_members: expected an integer >= 1, got 0"):
        nn.Ensemble(nn.Linear(3, 2), 0)
    with pytest.raises(ValueError, match=r"n_agents: expected an integer >= 1, got 0"):
        VDNMixer(0)


# ------------------------------------------------------------------------------------------------ dtypes, generators
def test_construction_dtype_is_the_default_of_init():
    for module in (nn.MLP(3, 2, num_cells=[4], dtype=np.float32), nn.Linear(3, 2, dtype=np.float32),
                   nn.Ensemble(nn.MLP(3, 2, dtype=np.float32), 2), QMixer(2, 4, 3, dtype=np.float32)):
        for params in (module.params, module.init(Generator(1)), module.init()):
            assert {leaf.dtype for leaf in nn.flatten_params(params).values()} == {np.dtype(np.float32)}, module
        assert nn.flatten_params(module.init(dtype=np.float64))  # an explicit dtype still wins
        assert {leaf.dtype for leaf in nn.flatten_params(module.init(dtype=np.float64)).values()} == {np.dtype(np.float64)}


def test_construction_namespace_is_the_default_of_init():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as tx

    m = nn.MLP(3, 2, xp=tx, dtype=torch.float32)
    assert isinstance(m.init()["0"]["weight"], torch.Tensor) and m.init()["0"]["weight"].dtype == torch.float32
    e = nn.Ensemble(m, 2)
    assert isinstance(e.params["0"]["weight"], torch.Tensor) and e.params["0"]["weight"].dtype == torch.float32


def test_numpy_and_torch_generators_are_wrapped():
    """A numpy.random.Generator is drawn from directly: the weights are its uniform draws, in torch's order."""
    lin = nn.Linear(3, 2, generator=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    bound = 1 / math.sqrt(3)
    np.testing.assert_array_equal(lin.params["weight"], rng.uniform(-bound, bound, size=(2, 3)))
    np.testing.assert_array_equal(lin.params["bias"], rng.uniform(-bound, bound, size=(2,)))
    shared = np.random.default_rng(3)
    a, b = nn.MLP(3, 2).init(shared), nn.MLP(3, 2).init(shared)  # the caller's generator advances
    assert not np.array_equal(a["0"]["weight"], b["0"]["weight"])
    p = nn.linear_params(np.random.default_rng(7), 3, 2)
    np.testing.assert_array_equal(p["weight"], lin.params["weight"])
    torch = pytest.importorskip("torch")
    t = nn.MLP(3, 2).init(torch.Generator().manual_seed(0))
    assert isinstance(t["0"]["weight"], torch.Tensor)
    with pytest.raises(TypeError, match=r"generator: expected an arrayrl.random.Generator .*got builtins.int; for a "
                                        r"seed, pass arrayrl.random.Generator\(0, xp=...\)"):
        nn.MLP(3, 2, generator=0)
    with pytest.raises(TypeError, match=r"generator: expected .*RandomState"):
        nn.Linear(3, 2).init(np.random.RandomState(0))


# ------------------------------------------------------------------------------------------------ params helpers
def test_params_helpers_name_the_leaf():
    a = nn.MLP(3, 2, num_cells=[4]).params
    with pytest.raises(ValueError, match=re.escape("trees[2]['2']['bias']: expected shape (2,) (that of "
                                                   "trees[0]['2']['bias']), got (1,)")):
        nn.stack([a, a, _replace(a, ("2", "bias"), np.zeros(1))])
    with pytest.raises(ValueError, match=re.escape("source['0']: expected the keys ['weight', 'bias'] of "
                                                   "target['0'], got missing ['bias']")):
        nn.soft_update(a, _delete(a, ("0", "bias")), 0.5)
    with pytest.raises(TypeError, match=r"dtype: expected a real floating dtype"):
        nn.cast_params(a, np.int64)
    with pytest.raises(TypeError, match=r"trees: expected a list of parameter trees, got dict"):
        nn.stack(a)
    with pytest.raises(ValueError, match=r"out_features: expected an integer >= 0, got -2"):
        nn.linear_params(Generator(0), 3, -2)
    with pytest.raises(TypeError, match=r"fan_in: expected an integer, got float"):
        nn.uniform_fan_in(Generator(0), (2,), 3.0)


@given(tau=st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.1, 1.1]), st.floats(0, 1)))
def test_soft_update_tau(tau):
    a = {"w": np.zeros(2)}
    b = {"w": np.ones(2)}
    if 0 <= tau <= 1:
        np.testing.assert_allclose(nn.soft_update(a, b, tau)["w"], [tau, tau], rtol=1e-12, atol=1e-15)
        with pytest.raises(ValueError, match=re.escape("source['w']: expected shape (2,) (that of target['w']), "
                                                       "got (1,)")):
            nn.soft_update(a, {"w": np.ones(1)}, tau)
    else:
        with pytest.raises(ValueError, match=r"tau: expected a value in \[0, 1\]"):
            nn.soft_update(a, b, tau)
