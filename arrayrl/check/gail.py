"""``arrayrl check`` provider part: GAILLoss vs TorchRL 0.14.1 and ``reference/losses/gail.py`` (merged into
:data:`arrayrl.check.actor_critic.BUILDERS`, hence into :data:`arrayrl.check.losses.CHECKS`).

Components (each runs ``n_cases`` random cases on ``[B]`` or ``[B, T]`` batches of expert and collector
observation/action pairs, options drawn per case: ``use_grad_penalty``, ``gp_lambda``, ``reduction``, ``shape``):

* ``loss.GAILLoss[torchrl]``: arrayrl with ``torchrl_compat=True`` (the interpolation coefficient of the gradient
  penalty drawn per element, the observation's then the action's, as TorchRL): TorchRL's two
  ``Uniform(0, 1).sample`` draws (``torch.rand``) are recorded and replayed;
* ``loss.GAILLoss[paper]``: arrayrl's default (one coefficient per sample, shared by the observation and the action,
  WGAN-GP): TorchRL's ``torch.rand`` is replaced by a per-sample draw made constant along each row, and arrayrl is
  given that per-sample draw (``[*B, 1]``).

Both sides use the same discriminator (an MLP with ``tanh`` hidden layers and a sigmoid output on ``[obs, act]``,
TorchRL's weights copied); the gradient of ``sum(loss)`` w.r.t. its parameters (through the penalty's double
backward) is compared. TorchRL builds float32 labels, which torch's ``BCELoss`` refuses next to float64
probabilities: its ``loss_function`` is swapped for a BCE casting the labels (0/1, exact) to the probabilities' dtype
(tests/objectives/test_gail.py does the same; a documented divergence: arrayrl's labels follow D's dtype).

Reference (oracle only): every case is fed to ``reference.losses.gail.gail_loss`` with TorchRL's weights, the
flattened batch and the replayed coefficients (``loss`` and, with the penalty, ``gp_loss``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["BUILDERS", "gail_case"]

NO, NA = 3, 2
LAYERS = ("0", "2", "4")


def _A() -> Any:
    from . import actor_critic

    return actor_critic


def _L() -> Any:
    from . import losses

    return losses


def gail_case(rng: np.random.Generator, **opts: Any) -> Any:
    """GAILLoss (option ``convention``: ``"torchrl"`` or ``"paper"``; drawn: ``use_grad_penalty``, ``gp_lambda``,
    ``reduction``, ``shape``)."""
    import torch
    import torchrl.objectives as TO
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP

    from .. import ops
    from .._backend import namespace_of
    from ..nn import MLP, KeyedModule
    from ..objectives.gail import GAILLoss

    A, L = _A(), _L()
    pick = L._pick
    conv = pick(rng, opts, "convention", ("torchrl", "paper"))
    gp = pick(rng, opts, "use_grad_penalty", (True, False))
    lam = pick(rng, opts, "gp_lambda", (1.0, 4.0, 10.0))
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    shape = pick(rng, opts, "shape", ((5,), (4, 3)))
    compat = conv == "torchrl"

    class Disc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = TMLP(in_features=NO + NA, out_features=1, num_cells=[8, 8], activation_class=torch.nn.Tanh)

        def forward(self, o: Any, a: Any) -> Any:
            return torch.sigmoid(self.mlp(torch.cat([o, a], -1)))

    class CastBCE(torch.nn.Module):
        """torch's BCE with TorchRL's float32 labels cast to the probabilities' dtype."""

        def forward(self, p: Any, y: Any) -> Any:
            return torch.nn.functional.binary_cross_entropy(p, y.to(p.dtype), reduction="none")

    tmod = TensorDictModule(Disc(), in_keys=["observation", "action"], out_keys=["d_logits"])
    tl = TO.GAILLoss(tmod, use_grad_penalty=gp, gp_lambda=lam, reduction=red)
    tl.loss_function = CastBCE()
    with torch.no_grad():  # larger weights than torch's init: probabilities and input gradients away from 1/2, 0
        for p in L._torch_flat(tl.discriminator_network_params).values():
            p.copy_(torch.as_tensor(rng.normal(scale=0.6, size=tuple(p.shape))))
    online = {"discriminator_network": L._tree(tl.discriminator_network_params, "mlp.")}
    batch = {"observation": rng.normal(size=shape + (NO,)), "action": rng.normal(size=shape + (NA,)),
             "collector_observation": rng.normal(size=shape + (NO,)) + 0.5,
             "collector_action": rng.normal(size=shape + (NA,)) - 0.3}
    td = TensorDict({k: A._t(v) for k, v in batch.items()}, list(shape))
    u = rng.uniform(size=shape + (1,))  # the per-sample coefficient (paper)
    draws: list = []  # TorchRL's own draws, kept here whatever ``fix_draws`` makes of the recorded ones
    torch_rand = torch.rand

    def rand(size: tuple, dtype: Any) -> Any:
        """TorchRL's ``torch.rand``: its own draw (torchrl) or the per-sample ``u`` along each row (paper)."""
        if tuple(size[:-1]) != shape:
            raise AssertionError(f"TorchRL drew torch.rand{size}, expected {shape} + (features,)")
        x = torch_rand(size, dtype=dtype) if compat else \
            torch.as_tensor(np.broadcast_to(u, size).copy(), dtype=dtype or torch.get_default_dtype())
        draws.append(x.numpy().copy())
        return x

    def build(convert: Callable) -> tuple:
        draws.clear()  # built before each TorchRL call (compare_with_torchrl)
        mlp = MLP(in_features=NO + NA, out_features=1, num_cells=[8, 8], activation_class="tanh")

        def fn(p: Any, o: Any, a: Any) -> Any:
            return ops.sigmoid(mlp.apply(p, namespace_of(o, a).concat([o, a], axis=-1)))

        disc = KeyedModule(fn, params=mlp.params, in_keys=["observation", "action"], out_keys=["d_logits"])
        al = GAILLoss(disc, use_grad_penalty=gp, gp_lambda=lam, reduction=red, torchrl_compat=compat)
        al.params = convert(online)
        return al, convert(batch)

    def per_sample(d: list) -> list:
        if not d:
            return d
        if len(d) != 2 or any(not np.array_equal(x, np.broadcast_to(x[..., :1], x.shape)) for x in d):
            raise AssertionError(f"GAIL[paper]: expected two row-constant draws, got {[x.shape for x in d]}")
        return [d[0][..., :1].copy()]  # arrayrl's per-sample draw [*B, 1]

    def reference() -> dict:
        flat = {k: v.detach().numpy() for k, v in L._torch_flat(tl.discriminator_network_params, "mlp.").items()}
        weights = [(flat[f"{k}.weight"], flat[f"{k}.bias"]) for k in LAYERS]
        if len(draws) != 2 * gp:
            raise AssertionError(f"TorchRL made {len(draws)} torch.rand draws (use_grad_penalty={gp})")
        n = int(np.prod(shape))
        rows = {k: v.reshape(n, -1) for k, v in batch.items()}
        u_o = draws[0].reshape(n, NO) if gp else None
        u_a = draws[1].reshape(n, NA) if gp else None
        loss, gpl = L._oracle("losses.gail").gail_loss(
            weights, rows["observation"], rows["action"], rows["collector_observation"], rows["collector_action"],
            use_grad_penalty=gp, gp_lambda=lam, u_obs=u_o, u_act=u_a, reduction=red)
        return {"loss": loss, "gp_loss": gpl} if gp else {"loss": loss}

    return L.LossCase(f"GAILLoss[{conv}]", opts, tl, td, build,
                      [("discriminator_network_params", ("discriminator_network",), "mlp.")],
                      {"loss": ("discriminator_network",)}, reference, td_error=False, replay_draws=True,
                      fix_draws=None if compat else per_sample, recorder={"rand": rand})


#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "GAILLoss[torchrl]": (gail_case, {"convention": "torchrl"}),
    "GAILLoss[paper]": (gail_case, {"convention": "paper"}),
}
