"""Per-sample float64 loops for the value-based losses (network-free: inputs are network OUTPUTS).

Modules: :mod:`.common` (distance, reduction, action gathering), :mod:`.dqn`, :mod:`.distributional`,
:mod:`.qmixer`, :mod:`.iql`, :mod:`.ppo`.
"""

from . import a2c, common, cql_bc, ddpg_td3, dt_rnd, gail, distributional, dqn, iql, ppo, qmixer, redq_crossq_tqc, sac
from . import dreamer

__all__ = ["common", "dqn", "distributional", "qmixer", "iql", "ppo", "a2c", "sac", "ddpg_td3", "redq_crossq_tqc", "cql_bc", "dt_rnd", "gail"]
