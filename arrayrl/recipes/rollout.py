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

Observations: a vector env made with ``copy=False`` returns its own observation buffer, overwritten by its next
step; the rollout then copies it once per step (``ndarray.copy``, cheaper than the ``deepcopy`` gymnasium does with
``copy=True``), so every array it returns stays valid. An env whose ``copy`` attribute is true is not copied again.

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


@dataclasses.dataclass(slots=True)
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


def vector_env(env_id: str, num_envs: int) -> Any:
    """``num_envs`` copies of gymnasium's ``env_id`` in a ``SyncVectorEnv`` with SAME_STEP autoreset (CleanRL's
    gym 0.29 layout: every step is a transition) and ``copy=False``: :class:`VectorRollout` copies the observation
    itself (module docstring), cheaper than gymnasium's deepcopy."""
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=False)


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
        # copy the observations unless the env does (module docstring)
        self._copy_obs = not getattr(envs, "copy", False)
        self._obs: np.ndarray | None = None
        self._obs_x: Any = None  # self._obs on the backend (converted once per step, lazily)
        self._autoreset = np.zeros(self.num_envs, bool)  # NEXT_STEP: rows whose next step is a reset
        # episode bookkeeping: the running return of each env, and the vector step at which its episode started
        # (length = steps done - start, so that a step costs one addition, not two)
        self._return = np.zeros(self.num_envs, np.float64)
        self._start = np.zeros(self.num_envs, np.int64)
        self._steps = 0  # vector steps since reset()

    def _to_backend(self, x: np.ndarray) -> Any:
        return x if self._native else self.xp.asarray(x, device=self.device)

    def _own(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` as an array nobody else writes to (a copy if the env returned its internal buffer)."""
        return obs.copy() if self._copy_obs else obs

    def reset(self, seed: int | None = None) -> Any:
        """Reset every environment (``seed`` as gymnasium: env ``i`` gets ``seed + i``); the backend observation."""
        obs, _ = self.envs.reset(seed=seed)
        self._obs, self._obs_x = self._own(obs), None
        self._autoreset[:] = False
        self._return[:] = 0.0
        self._start[:] = 0
        self._steps = 0
        return self.observation

    @property
    def observation(self) -> Any:
        """The current observation ``[num_envs, *obs]`` (the policy's input) on the backend."""
        if self._obs_x is None:
            if self._obs is None:
                raise RuntimeError("VectorRollout: call reset() first")
            self._obs_x = self._to_backend(self._obs)
        return self._obs_x

    def step(self, action: Any) -> StepResult:
        """Step every environment with ``action`` (``[num_envs, ...]``, any backend); see :class:`StepResult`.

        Per step (the hot path, a few microseconds on top of the env): one ``|``, one ``astype``, one ``+=``, a copy
        of the observation for a ``copy=False`` env, and the ``[B, 1]`` views of the batch.
        """
        if self._obs is None:
            raise RuntimeError("VectorRollout: call reset() first")
        action = action if isinstance(action, np.ndarray) else to_numpy(action)
        next_obs, reward, terminated, truncated, info = self.envs.step(action)
        next_obs = self._own(next_obs)
        done = terminated | truncated
        real_next = next_obs
        if self.mode == "same_step":
            any_done = "_final_obs" in info  # gymnasium adds the final observations to `info` iff an episode ended
            if any_done:  # the done rows of next_obs are reset observations: the real ones are in `info`
                real_next = next_obs.copy()
                for i in np.flatnonzero(info["_final_obs"]):
                    real_next[i] = info["final_obs"][i]
        else:
            any_done = bool(np.count_nonzero(done))
        batch = {
            "observation": self._obs,
            "action": action,
            "next": {
                "observation": real_next,
                "reward": reward.astype(self.reward_dtype)[:, None],
                "done": done[:, None],
                "terminated": terminated[:, None],
            },
        }
        valid = None
        if self.mode == "next_step":
            if np.count_nonzero(self._autoreset) > 0:  # drop the reset rows (their action was ignored)
                valid = ~self._autoreset
                batch = _select_rows(batch, valid)
            self._autoreset = done
        episodes = self._bookkeeping(reward, done, valid, any_done)
        self._obs, self._obs_x = next_obs, None
        if valid is not None and batch["observation"].shape[0] == 0:
            return StepResult(None, episodes, info)
        if not self._native:
            batch = _map(self._to_backend, batch)
        return StepResult(batch, episodes, info)

    def _bookkeeping(self, reward: np.ndarray, done: np.ndarray, valid: np.ndarray | None, any_done: bool) -> list:
        """Add this step's rewards to the running returns; ``(return, length)`` of the episodes that ended.

        An episode that starts after step ``t`` (``self._steps`` then) has ``start = t`` under SAME_STEP (the done
        step already reset it) and ``t + 1`` under NEXT_STEP (step ``t + 1`` is the reset, not a transition); its
        length when it ends at step ``t'`` is ``t' - start``.
        """
        self._steps += 1
        self._return += reward if valid is None else np.where(valid, reward, 0.0)
        if not any_done:
            return []
        ended = np.flatnonzero(done)
        episodes = [(float(self._return[i]), self._steps - int(self._start[i])) for i in ended]
        self._return[ended] = 0.0
        self._start[ended] = self._steps + (self.mode == "next_step")
        return episodes


def _select_rows(batch: dict, rows: np.ndarray) -> dict:
    return _map(lambda x: x[rows], batch)


def _map(fn: Any, batch: dict) -> dict:
    return {k: _map(fn, v) if isinstance(v, dict) else fn(v) for k, v in batch.items()}
