"""Cross-validation providers of ``arrayrl check`` (the ``cli`` layer; see :mod:`arrayrl.cli`).

* :mod:`.value`: value estimators (functional and classes) vs TorchRL and ``reference/``;
* :mod:`.losses`: loss classes vs TorchRL (outputs, ``td_error``, every parameter gradient) and
  ``reference/losses``, plus the self-consistency checks (finite differences, every backend vs NumPy);
* :mod:`.actor_critic`: the PPO family, A2C, REINFORCE, MAPPO/IPPO, SAC (v1, v2), DiscreteSAC, DDPG, TD3, TD3BC
  cases (TorchRL's draws replayed), with the builders of :mod:`.redq_crossq_tqc`, :mod:`.cql_bc`, :mod:`.dt_rnd`
  (DT, OnlineDT, RND) and :mod:`.gail` (GAIL, both coefficient conventions) merged in; its components are merged
  into ``losses.CHECKS``;
* :mod:`._oracle`: where the float64 oracle ``reference/`` is found (a source checkout, or ``--reference DIR``);
  without it (an installed wheel) the reference comparisons are skipped and the report says so;
* :mod:`._common`: the error bookkeeping shared by the providers.

Each provider exposes ``CHECKS = {component name: fn(n_cases, rng, tick) -> dict}``. Nothing else in arrayrl
imports this package; it may use NumPy, and imports torch/torchrl inside its functions.
"""
