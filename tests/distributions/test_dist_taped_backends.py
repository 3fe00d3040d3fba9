"""The tape over every raw backend (not only NumPy): the same policy loss gives the same value and gradients.

Guards the mixed raw/taped operand rule (``raw_array * tensor`` raises on array-api-strict, whose operators do not
return ``NotImplemented``; library code goes through namespace functions there).
"""

from __future__ import annotations

import numpy as np

import arrayrl.distributions as D
import arrayrl.nn as nn
from arrayrl import namespace_of
from arrayrl.autodiff import value_and_grad
from arrayrl.testing import assert_allclose
from arrayrl.tree import tree_leaves, tree_map


def _loss_and_inputs():
    rng = np.random.default_rng(0)
    net = nn.MLP(4, 4, num_cells=[8])
    obs = rng.normal(size=(5, 4))
    noise = rng.normal(size=(3, 5, 2))
    action = np.tanh(rng.normal(size=(5, 2))) * 1.4 - 0.5
    index = rng.integers(0, 4, size=(5,))
    u = rng.uniform(size=(5,))

    def loss(p, obs, noise, action, index, u):
        loc, scale = nn.NormalParamExtractor()(net.apply(p, obs))
        d = D.TanhNormal(loc, scale, low=-2.0, high=1.0)
        a, lp = d.rsample_and_log_prob(noise=noise)
        _, lp2 = d.sample_and_log_prob(noise=noise)
        logits = net.apply(p, obs)
        c = D.Categorical(logits=logits)
        o = D.OneHotCategorical(logits=logits)
        q = nn.QValueModule("one_hot")({"action_value": logits})["chosen_action_value"]
        i = D.IndependentNormal(loc, scale)
        xp = namespace_of(lp)
        return (xp.sum(lp) + xp.sum(lp2) + xp.sum(a) + xp.sum(d.log_prob(action)) + xp.sum(c.entropy())
                + xp.sum(c.log_prob(index)) + xp.sum(o.rsample(noise=u) * logits) + xp.sum(q)
                + xp.sum(i.log_prob(action)) + xp.sum(D.TanhDelta(loc, low=-2.0, high=1.0).rsample() ** 2))

    return loss, net.params, (obs, noise, action, index, u)


def test_tape_over_every_raw_backend(raw_xp):
    xp = raw_xp
    loss, params, data = _loss_and_inputs()
    v_ref, g_ref = value_and_grad(loss)(params, *data)
    conv = lambda a: xp.from_numpy(a) if a.dtype.kind == "f" else xp.from_numpy(a, dtype=xp.int64)  # noqa: E731
    v, g = value_and_grad(loss)(tree_map(conv, params), *[conv(a) for a in data])
    tol = dict(rtol=xp.rtol * 100, atol=xp.atol * 100) if not xp.is_float64 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(float(v), float(v_ref), **tol)
    for a, b in zip(tree_leaves(g), tree_leaves(g_ref)):
        assert_allclose(a, b, xp=xp.ns, **tol)
