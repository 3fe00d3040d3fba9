"""Value-decomposition mixers for cooperative multi-agent Q-learning: :class:`VDNMixer` and :class:`QMixer`.

Both follow TorchRL 0.14.1's ``torchrl.modules.models.multiagent`` contract: the input is the per-agent chosen action
value ``[*B, n_agents, 1]`` (the agent dimension is the **penultimate** one) and, for QMIX, the global state
``[*B, *state_shape]``; the output is ``Q_tot`` of shape ``[*B, 1]``.

* VDN (Sunehag et al. 2017, arXiv:1706.05296): ``Q_tot = sum_i Q_i``.
* QMIX (Rashid et al. 2018, arXiv:1803.11485), with ``s`` the flattened state (``S`` features), embedding ``E``::

      W1 = |hyper_w_1(s)|  reshaped [n, E]        b1 = hyper_b_1(s)            [E]
      h  = elu(q W1 + b1)                          q = [Q_1 .. Q_n]            [1, n]
      Wf = |hyper_w_final(s)|  reshaped [E, 1]     V = V.2(relu(V.0(s)))       [1]
      Q_tot = h Wf + V

  The absolute values make ``Q_tot`` monotone in every ``Q_i``. Parameters use torch's ``state_dict`` layout
  (``{"hyper_w_1": {"weight": [n*E, S], "bias": [n*E]}, ..., "V": {"0": {...}, "2": {...}}}``), so
  :func:`arrayrl.interop.params_from_torch` copies a TorchRL ``QMixer`` 1:1.

Sizes (``n_agents``, ``mixing_embed_dim``, the entries of ``state_shape``) accept any integer-like ``>= 1``
(``np.int64`` included); bools and floats are rejected by name. :meth:`QMixer.apply` checks every parameter leaf's
presence and exact shape (``params['V']['2']['bias']: expected shape (1,), got ...``) before mixing.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .._backend import namespace_of
from .._checks import check_array, check_floating
from ..random import _index
from ..tree import tree_leaves
from .layers import _check_keys, _check_linear, _Layer, _sizes
from .layers import linear as _linear
from .params import _format_path, linear_params

__all__ = ["Mixer", "VDNMixer", "QMixer"]


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Mixer(_Layer):
    """Base mixer: checks ``chosen_action_value [*B, n_agents, 1]`` (and the state), calls :meth:`mix`, checks the
    output ``[*B, 1]``.

    Args:
        n_agents: number of agents (size of the penultimate input dimension).
        needs_state: whether :meth:`apply` takes a state.
        state_shape: trailing shape of the state (``()`` if no state).
        device: device of the default parameters.
    """

    def __init__(self, n_agents: int, needs_state: bool, state_shape: Sequence[int], device: Any = None):
        self.n_agents = _index(n_agents, "n_agents", minimum=1)
        self.needs_state = bool(needs_state)
        self.state_shape = _sizes(state_shape, "state_shape", minimum=1) if needs_state else ()
        self.device = device

    def apply(self, params: Any, chosen_action_value: Any, state: Any = None) -> Any:
        """``Q_tot`` ``[*B, 1]`` from ``chosen_action_value`` ``[*B, n_agents, 1]`` (and ``state`` ``[*B, *state_shape]``).

        Raises:
            ValueError: the agent dimension is not the penultimate one (or its size is not ``n_agents``), the state
                has the wrong trailing shape or batch shape, a state is given to a state-free mixer or missing.
        """
        check_array(chosen_action_value, "chosen_action_value")
        check_floating(chosen_action_value, "chosen_action_value")
        q = chosen_action_value
        if q.ndim < 2 or tuple(q.shape[-2:]) != (self.n_agents, 1):
            raise ValueError(
                f"chosen_action_value: expected shape (*B, {self.n_agents}, 1) (agents in the penultimate dimension, "
                f"a trailing singleton), got {_shape_str(q.shape)}"
            )
        batch = tuple(q.shape[:-2])
        if self.needs_state:
            if state is None:
                raise ValueError(f"state: {type(self).__name__} needs a state of shape (*B, {', '.join(map(str, self.state_shape))})")
            check_floating(state, "state")  # an integer state would be cast silently by the hypernetwork
            k = len(self.state_shape)
            if tuple(state.shape[state.ndim - k :]) != self.state_shape or tuple(state.shape[: state.ndim - k]) != batch:
                raise ValueError(
                    f"state: expected shape {_shape_str(batch + self.state_shape)} (batch {_shape_str(batch)} of "
                    f"chosen_action_value, then state_shape {_shape_str(self.state_shape)}), got {_shape_str(state.shape)}"
                )
        elif state is not None:
            raise ValueError(f"state: {type(self).__name__} takes no state, got an array of shape {_shape_str(state.shape)}")
        out = self.mix(params, q, state)
        if tuple(out.shape) != batch + (1,):  # pragma: no cover - internal consistency
            raise ValueError(f"mixer output: expected shape {_shape_str(batch + (1,))}, got {_shape_str(out.shape)}")
        return out

    def mix(self, params: Any, chosen_action_value: Any, state: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class VDNMixer(Mixer):
    """VDN: ``Q_tot = sum_i Q_i`` (no parameters, no state). ``VDNMixer(n_agents, device=None)`` as TorchRL."""

    def __init__(self, n_agents: int, device: Any = None):
        super().__init__(n_agents=n_agents, needs_state=False, state_shape=(), device=device)
        self.params = {}

    def mix(self, params: Any, chosen_action_value: Any, state: Any) -> Any:
        xp = namespace_of(chosen_action_value)
        return xp.sum(chosen_action_value, axis=-2)


class QMixer(Mixer):
    """QMIX monotone mixing network with hypernetworks conditioned on the global state.

    ``QMixer(state_shape, mixing_embed_dim, n_agents, device=None, *, generator=None, xp=None, dtype=None)``; the
    default parameters are drawn as torch's ``nn.Linear`` (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``) from
    ``generator`` (seed 0 on ``xp`` -- NumPy -- if not given). See the module docstring for the formula.
    """

    def __init__(
        self,
        state_shape: Sequence[int],
        mixing_embed_dim: int,
        n_agents: int,
        device: Any = None,
        *,
        generator: Any = None,
        xp: Any = None,
        dtype: Any = None,
    ):
        super().__init__(n_agents=n_agents, needs_state=True, state_shape=state_shape, device=device)
        self.embed_dim = _index(mixing_embed_dim, "mixing_embed_dim", minimum=1)
        self.state_dim = int(math.prod(self.state_shape))
        S, E, n = self.state_dim, self.embed_dim, self.n_agents
        # (path, in, out) of every linear layer, all with a bias, in torch's construction order
        self._linears = ((("hyper_w_1",), S, E * n), (("hyper_w_final",), S, E), (("hyper_b_1",), S, E),
                         (("V", "0"), S, E), (("V", "2"), E, 1))
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        # torch's construction order: hyper_w_1, hyper_w_final, hyper_b_1, V.0, V.2
        w1, wf, b1, v0, v2 = (linear_params(generator, a, b, dtype=dtype) for _, a, b in self._linears)
        return {"hyper_w_1": w1, "hyper_w_final": wf, "hyper_b_1": b1, "V": {"0": v0, "2": v2}}

    def _check_params(self, params: Any) -> None:
        """Every linear layer of the tree present with its exact shapes (no unexpected keys)."""
        _check_keys(params, ("hyper_w_1", "hyper_w_final", "hyper_b_1", "V"), "params", "the layers of QMixer")
        _check_keys(params["V"], ("0", "2"), "params['V']", "QMixer's state-value network")
        for path, n_in, n_out in self._linears:
            layer = params[path[0]] if len(path) == 1 else params[path[0]][path[1]]
            _check_linear(layer, _format_path("params", path), n_in, n_out, True, ())

    def mix(self, params: Any, chosen_action_value: Any, state: Any) -> Any:
        from .. import ops

        self._check_params(params)

        xp = namespace_of(chosen_action_value, state, *tree_leaves(params))
        n, E = self.n_agents, self.embed_dim
        batch = tuple(chosen_action_value.shape[:-2])
        s = xp.reshape(state, (-1, self.state_dim))
        if s.dtype != chosen_action_value.dtype:
            s = xp.astype(s, chosen_action_value.dtype)
        q = xp.reshape(chosen_action_value, (-1, n, 1))
        # the two per-sample products q W1 ([1, n] x [n, E]) and h Wf ([1, E] x [E, 1]) are batched matmuls: on NumPy
        # 3-4x faster than the broadcast multiply-and-sum (whose reduction runs over a short non-contiguous axis)
        w1 = xp.reshape(xp.abs(_linear(params["hyper_w_1"], s)), (-1, n, E))
        b1 = _linear(params["hyper_b_1"], s)  # [-1, E]
        hidden = ops.elu(xp.reshape(xp.matmul(xp.reshape(q, (-1, 1, n)), w1), (-1, E)) + b1)  # [-1, E]
        wf = xp.abs(_linear(params["hyper_w_final"], s))  # [-1, E]
        v = _linear(params["V"]["2"], _linear(params["V"]["0"], s, activation="relu"))  # [-1, 1]
        y = xp.reshape(xp.matmul(xp.reshape(hidden, (-1, 1, E)), xp.reshape(wf, (-1, E, 1))), (-1, 1)) + v
        return xp.reshape(y, batch + (1,))
