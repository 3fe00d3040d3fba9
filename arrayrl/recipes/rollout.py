"""From gymnasium vector environments to TorchRL transition batches.

:class:`VectorRollout` steps a ``gymnasium.vector.VectorEnv`` and returns, for each step, the transitions in
TorchRL's layout (a nested dict, leading axis = the environments that produced a transition)::

    {"observation": [B, *obs], "action": [B, *act],
     "next": {"observation": [B, *obs],          # the REAL next observation, also on termination/truncation
              "reward": [B, 1], "done": [B, 1],   # done = terminated | truncated
              "terminated": [B, 1]}}

Autoreset (read from ``envs.metadata["autoreset_mode"]``, gymnasium >= 1.0):

* ``NEXT_STEP`` (gymnasium's default): the step that follows a ``done`` resets that environment, ignores its action
  and returns the reset observation with reward 0. That step is not a transition: its row is dropped (so ``B`` may be
  smaller than ``num_envs``, even 0). The real final observation is the one returned by the ``done`` step itself.
* ``SAME_STEP``: the ``done`` step already returns the reset observation; the real final observation is
  ``info["final_obs"][i]`` (rows flagged by ``info["_final_obs"]``), which goes into ``("next", "observation")``.

``DISABLED`` (the caller resets by hand) is not supported.

Episode bookkeeping is done on the transitions themselves: :meth:`VectorRollout.step` returns the ``(return,
length)`` of every episode that ended in that step (the same numbers as gymnasium's ``RecordEpisodeStatistics``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._backend import backend_name, to_numpy

__all__ = ["VectorRollout", "StepResult", "autoreset_mode"]

_MODES = {"NextStep": "next_step", "SameStep": "same_step", "Disabled": "disabled"}


def autoreset_mode(envs: Any) -> str:
    """``"next_step"``, ``"same_step"`` or ``"disabled"``: the env's ``metadata["autoreset_mode"]`` (default
    ``"next_step"``, gymnasium's default, when the metadata does not say)."""
    mode = getattr(envs, "metadata", {}).get("autoreset_mode", "NextStep")
    mode = getattr(mode, "value", mode)
    if mode not in _MODES:
        raise ValueError(f"autoreset_mode: unknown mode {mode!r}; expected one of {sorted(_MODES)}")
    return _MODES[mode]


@dataclasses.dataclass
class StepResult:
    """What one vector step produced.

    Attributes:
        batch: the transitions (backend arrays), ``None`` when no environment produced one (NEXT_STEP resets).
        episodes: ``(return, length)`` of each episode that ended in this step, in environment order.
        info: the vector env's ``info`` dict of this step, as returned.
    """

    batch: dict | None
    episodes: list
    info: dict


class VectorRollout:
    """Steps ``envs`` and turns each step into a TorchRL transition batch (see the module docstring).

    Args:
        envs: a gymnasium vector env (``SyncVectorEnv``, ``AsyncVectorEnv``, ``gym.make_vec(...)``).
        xp, device: the namespace and device of the returned arrays (default: NumPy, the env's own arrays).
        reward_dtype: dtype of ``("next", "reward")`` (gymnasium returns float64; default float32, as the networks).

    Usage::

        rollout = VectorRollout(envs)
        obs = rollout.reset(seed=1)             # backend observation [num_envs, *obs]
        res = rollout.step(actions)             # actions: [num_envs] (any backend)
        rb.extend(res.batch) if res.batch is not None else None
        obs = rollout.observation               # the next policy input (reset observations included)
    """

    def __init__(self, envs: Any, *, xp: Any = None, device: Any = None, reward_dtype: Any = np.float32):
        self.envs = envs
        self.num_envs = int(envs.num_envs)
        self.mode = autoreset_mode(envs)
        if self.mode == "disabled":
            raise ValueError("VectorRollout: autoreset_mode DISABLED is not supported (use NEXT_STEP or SAME_STEP)")
        self.xp, self.device = xp, device
        self._native = xp is None or backend_name(xp) == "numpy"
        self.reward_dtype = reward_dtype
        self._obs: np.ndarray | None = None
        self._obs_x: Any = None  # self._obs on the backend (converted once per step, lazily)
        self._autoreset = np.zeros(self.num_envs, bool)  # NEXT_STEP: rows whose next step is a reset
        self._return = np.zeros(self.num_envs, np.float64)
        self._length = np.zeros(self.num_envs, np.int64)

    def _to_backend(self, x: np.ndarray) -> Any:
        return x if self._native else self.xp.asarray(x, device=self.device)

    def reset(self, seed: int | None = None) -> Any:
        """Reset every environment (``seed`` as gymnasium: env ``i`` gets ``seed + i``); the backend observation."""
        self._obs, _ = self.envs.reset(seed=seed)
        self._obs_x = None
        self._autoreset[:] = False
        self._return[:] = 0.0
        self._length[:] = 0
        return self.observation

    @property
    def observation(self) -> Any:
        """The current observation ``[num_envs, *obs]`` (the policy's input) on the backend."""
        if self._obs is None:
            raise RuntimeError("VectorRollout: call reset() first")
        if self._obs_x is None:
            self._obs_x = self._to_backend(self._obs)
        return self._obs_x

    def step(self, action: Any) -> StepResult:
        """Step every environment with ``action`` (``[num_envs, ...]``, any backend); see :class:`StepResult`."""
        if self._obs is None:
            raise RuntimeError("VectorRollout: call reset() first")
        action = action if isinstance(action, np.ndarray) else to_numpy(action)
        next_obs, reward, terminated, truncated, info = self.envs.step(action)
        done = terminated | truncated
        any_done = bool(done.any())
        real_next = next_obs
        if any_done and self.mode == "same_step":
            real_next = next_obs.copy()
            for i in np.flatnonzero(info["_final_obs"]):
                real_next[i] = info["final_obs"][i]
        batch = {
            "observation": self._obs,
            "action": action,
            "next": {
                "observation": real_next,
                "reward": reward.astype(self.reward_dtype).reshape(-1, 1),
                "done": done.reshape(-1, 1),
                "terminated": terminated.reshape(-1, 1),
            },
        }
        valid = None
        if self.mode == "next_step":
            if self._autoreset.any():  # drop the reset rows (their action was ignored)
                valid = ~self._autoreset
                batch = _select_rows(batch, valid)
            self._autoreset = done
        episodes = self._bookkeeping(reward, done, valid, any_done)
        self._obs, self._obs_x = next_obs, None
        if batch["observation"].shape[0] == 0:
            return StepResult(None, episodes, info)
        if not self._native:
            batch = _map(self._to_backend, batch)
        return StepResult(batch, episodes, info)

    def _bookkeeping(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray | None, any_done: bool) -> list:
        if valid is None:
            self._return += reward
            self._length += 1
        else:
            self._return += np.where(valid, reward, 0.0)
            self._length += valid
        if not any_done:
            return []
        ended = np.flatnonzero(done)
        episodes = [(float(self._return[i]), int(self._length[i])) for i in ended]
        self._return[ended] = 0.0
        self._length[ended] = 0
        return episodes


def _select_rows(batch: dict, rows: np.ndarray) -> dict:
    return _map(lambda x: x[rows], batch)


def _map(fn: Any, batch: dict) -> dict:
    return {k: _map(fn, v) if isinstance(v, dict) else fn(v) for k, v in batch.items()}
