"""``advantage_norm`` in the PPO family (PPOLoss's, shared by A2C and MAPPO): cross-validated against TorchRL 0.14.1
(float64, several steps, the normaliser's buffers checked at every step; the loop is the A2C cross-validation's), and
the argument's semantics without TorchRL."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl.objectives.a2c import A2CLoss
from arrayrl.objectives.multiagent import MAPPOLoss
from arrayrl.objectives.ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from arrayrl.objectives.value_norm import RunningValueNorm

from test_ppo_terms import _cat_batch, _cat_loss


# ------------------------------------------------------------------------------------------------ TorchRL
@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("cls,norm,kw,akw", [
    ("clip", "popart", {"clip_epsilon": (0.1, 0.3)}, {}),
    ("clip", "percentile", {"critic_coeff": 0.7}, {}),
    ("ppo", "popart", {}, {}),
    ("klpen", "percentile", {}, {"torchrl_compat": True}),  # (TorchRL's gradient uses the updated beta)
])
def test_ppo_family_advantage_norm_vs_torchrl(cls, norm, kw, akw):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from test_a2c_reinforce_torchrl import _advantage_norm_vs_torchrl

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # (what the cross-validation modules' autouse fixture does)
    torch.manual_seed(0)
    try:
        _advantage_norm_vs_torchrl(cls, norm, {"entropy_coeff": 0.05, **kw}, akw)
    finally:
        torch.set_default_dtype(old)


# ------------------------------------------------------------------------------------------------ semantics
def _no_adv(b):
    return {k: v for k, v in b.items() if k != "advantage"}


@pytest.mark.parametrize("cls", [PPOLoss, ClipPPOLoss, KLPENPPOLoss])
def test_advantage_is_divided_by_the_updated_scale(cls):
    """Training mode, advantage computed inside: the state folds in the value target, then ``A / scale``; eval mode
    and a precomputed advantage leave the state as it is and still divide by its scale."""
    b = _no_adv(_cat_batch(B=6))
    norm = RunningValueNorm()
    loss = _cat_loss(cls, advantage_norm=norm, entropy_bonus=False)
    plain = _cat_loss(cls, entropy_bonus=False)
    plain.params = loss.params
    assert loss.training and loss.advantage_norm is norm and loss.advantage_norm_state is None
    ref = plain(b)
    out = loss(b)
    state = loss.advantage_norm_state
    assert float(state["count"]) == 6.0
    scale = float(norm.scale(state)[0])
    assert abs(scale - 1.0) > 0.05  # (the scaling is not a no-op)
    if cls is PPOLoss:  # the objective is linear in A
        np.testing.assert_allclose(float(out["loss_objective"]), float(ref["loss_objective"]) / scale, rtol=1e-12)
    np.testing.assert_allclose(float(out["loss_critic"]), float(ref["loss_critic"]), rtol=1e-12)
    loss.eval()
    loss(b)
    assert loss.advantage_norm_state is state
    loss.train()
    loss({**b, "advantage": np.ones((6, 1)), "value_target": np.zeros((6, 1))})  # precomputed: no update
    assert float(loss.advantage_norm_state["count"]) == 6.0
    loss(b)
    assert float(loss.advantage_norm_state["count"]) == 12.0


def test_advantage_norm_errors_and_who_owns_it():
    with pytest.raises(ValueError, match="mutually exclusive"):
        _cat_loss(normalize_advantage=True, advantage_norm=RunningValueNorm())
    with pytest.raises(TypeError, match="advantage_norm: expected an arrayrl"):
        _cat_loss(advantage_norm=object())
    # one implementation: PPOLoss's (A2C and MAPPO inherit it, no mixin of their own)
    for cls in (A2CLoss, MAPPOLoss):
        assert cls._advantage is PPOLoss._advantage and cls._set_advantage_norm is PPOLoss._set_advantage_norm
    assert MAPPOLoss._critic_terms is PPOLoss._critic_terms
