"""VectorRollout against gymnasium's own semantics on CartPole-v1 (both autoreset modes).

The ground truth is a plain (non-vector) ``gym.make`` env per vector slot, seeded like the vector env's sub-env
(``seed + i``), stepped with the same actions and reset by hand at ``terminated or truncated``: its ``step`` returns
the real next observation. Under NEXT_STEP the vector env spends the step after a ``done`` resetting that slot (its
action is ignored): no transition for that slot then, and its ground-truth env is not stepped.
"""

from __future__ import annotations

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from arrayrl.recipes import VectorRollout, autoreset_mode  # noqa: E402

MODES = {"next_step": gym.vector.AutoresetMode.NEXT_STEP, "same_step": gym.vector.AutoresetMode.SAME_STEP}


def _vector_env(mode, num_envs, max_steps, stats=False, copy=True):
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=max_steps)] * num_envs,
                                    autoreset_mode=MODES[mode], copy=copy)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs) if stats else envs


def _ground_truth(num_envs, max_steps, seed, actions, mode):
    """Per vector step, the list of (env index, transition) that gymnasium's single envs produce."""
    envs = [gym.make("CartPole-v1", max_episode_steps=max_steps) for _ in range(num_envs)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    resetting = [False] * num_envs
    out = []
    for a in actions:
        rows = []
        for i, e in enumerate(envs):
            if mode == "next_step" and resetting[i]:
                resetting[i] = False  # the vector env's reset step: no transition
                continue
            nxt, r, term, trunc, _ = e.step(int(a[i]))
            rows.append((i, obs[i], int(a[i]), nxt, r, term, trunc))
            if term or trunc:
                obs[i] = e.reset()[0]
                resetting[i] = True
            else:
                obs[i] = nxt
        out.append(rows)
    return out


def _check_batch(b, rows):
    """``b`` holds exactly the ground-truth transitions ``rows``."""
    assert b["observation"].shape == (len(rows), 4) and b["next"]["reward"].shape == (len(rows), 1)
    assert b["next"]["reward"].dtype == np.float32
    for j, (i, obs, a, nxt, r, term, trunc) in enumerate(rows):
        np.testing.assert_array_equal(b["observation"][j], obs)
        assert b["action"][j] == a
        np.testing.assert_array_equal(b["next"]["observation"][j], nxt)  # the real next obs, also at done
        assert b["next"]["reward"][j, 0] == r
        assert b["next"]["terminated"][j, 0] == term
        assert b["next"]["done"][j, 0] == (term or trunc)


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "nocopy"])  # nocopy: the env returns its own buffer
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("max_steps", [5, 40])  # 5: truncations; 40: terminations too (random actions)
def test_transitions_match_gymnasium(mode, max_steps, copy):
    num_envs, seed, T = 2, 3, 150
    actions = np.random.default_rng(0).integers(0, 2, size=(T, num_envs))
    envs = _vector_env(mode, num_envs, max_steps, copy=copy)
    assert autoreset_mode(envs) == mode
    rollout = VectorRollout(envs)
    first_obs = rollout.reset(seed=seed)
    expected = _ground_truth(num_envs, max_steps, seed, actions, mode)
    n_trunc = n_term = n_dropped = 0
    kept = []  # every batch, checked again at the end: no later step may overwrite a returned array
    for t in range(T):
        res = rollout.step(actions[t])
        rows = expected[t]
        n_dropped += num_envs - len(rows)
        if not rows:
            assert res.batch is None
            continue
        b = res.batch
        _check_batch(b, rows)
        kept.append((b, rows))
        for i, obs, a, nxt, r, term, trunc in rows:
            n_trunc += trunc and not term
            n_term += term
            if term or trunc:  # SAME_STEP: the policy already sees the reset obs; NEXT_STEP: still the final one
                assert np.array_equal(rollout.observation[i], nxt) == (mode == "next_step")
    assert (n_trunc > 0) if max_steps == 5 else (n_term > 0)
    assert (n_dropped > 0) == (mode == "next_step")
    for b, rows in kept:
        _check_batch(b, rows)
    np.testing.assert_array_equal(first_obs, [expected[0][i][1] for i in range(num_envs)])


@pytest.mark.parametrize("copy", [True, False], ids=["copy", "nocopy"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_episode_returns_match_record_episode_statistics(mode, copy):
    envs = _vector_env(mode, 3, 20, stats=True, copy=copy)
    rollout = VectorRollout(envs)
    rollout.reset(seed=0)
    rng = np.random.default_rng(1)
    ours, theirs = [], []
    for _ in range(300):
        res = rollout.step(rng.integers(0, 2, size=3))
        ours += res.episodes
        ep = res.info.get("episode")
        if ep is not None:
            theirs += [(float(ep["r"][i]), int(ep["l"][i])) for i in np.flatnonzero(res.info["_episode"])]
    assert len(ours) > 20
    assert ours == theirs


def test_torch_backend_batches():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    rollout = VectorRollout(_vector_env("same_step", 2, 5), xp=xp, device=torch.device("cpu"))
    obs = rollout.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (2, 4)
    res = rollout.step(torch.zeros(2, dtype=torch.int64))  # actions on the backend are accepted
    b = res.batch
    assert isinstance(b["next"]["done"], torch.Tensor) and b["next"]["done"].dtype == torch.bool
    assert b["next"]["reward"].dtype == torch.float32 and b["action"].dtype == torch.int64


def test_errors():
    with pytest.raises(RuntimeError, match="reset"):
        VectorRollout(_vector_env("same_step", 1, 5)).step(np.zeros(1, np.int64))
    disabled = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")], autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="DISABLED"):
        VectorRollout(disabled)


def test_vector_env_is_the_layout_the_recipes_rely_on():
    """The recipes' env: SAME_STEP autoreset (every step a transition), no copy by gymnasium (the rollout copies),
    ``num_envs`` copies of ``env_id``; and a rollout over it keeps each stored observation intact."""
    from arrayrl.recipes import vector_env

    envs = vector_env("CartPole-v1", 3)
    try:
        assert envs.num_envs == 3 and envs.copy is False and autoreset_mode(envs) == "same_step"
        ro = VectorRollout(envs)
        ro.reset(seed=0)
        first = ro.step(np.zeros(3, np.int64)).batch
        kept = first["next"]["observation"].copy()
        ro.step(np.ones(3, np.int64))  # gymnasium writes its buffer again: the stored arrays must not change
        np.testing.assert_array_equal(first["next"]["observation"], kept)
    finally:
        envs.close()
