"""Training recipes on gymnasium (the optional ``train`` extra: gymnasium, matplotlib, rich).

One algorithm per file, in CleanRL's style (a dataclass of options with the reference's defaults, the algorithm
written top to bottom), built only from arrayrl's networks, losses, target updaters and optimisers:

* :mod:`.dqn_cartpole`: ``dqn-cartpole``, CleanRL's ``dqn.py`` on CartPole-v1.

and the pieces they share: :class:`~.buffer.ReplayBuffer` (ring storage on any backend),
:class:`~.rollout.VectorRollout` (gymnasium vector env -> TorchRL transition batches), schedules and
epsilon-greedy exploration (:mod:`.schedules`), run logging (:mod:`.logging`), the recipe registry and the ``train``
command (:mod:`.cli`). Importing this package imports neither gymnasium nor matplotlib.
"""

from .buffer import ReplayBuffer
from .registry import RECIPES, get_recipe
from .rollout import StepResult, VectorRollout, autoreset_mode, vector_env
from .schedules import EpsilonGreedy, LinearSchedule, linear_schedule

__all__ = ["ReplayBuffer", "VectorRollout", "StepResult", "autoreset_mode", "vector_env", "EpsilonGreedy",
           "LinearSchedule", "linear_schedule", "RECIPES", "get_recipe"]
