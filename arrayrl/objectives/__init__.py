"""TorchRL's ``torchrl.objectives`` written once against the array API standard.

Loss classes (TorchRL's constructor arguments, key names, outputs and default value estimators) built from arrayrl
networks, their pure functional cores (:mod:`arrayrl.objectives.functional`) and the shared helpers
(:mod:`arrayrl.objectives.utils`).
"""

from . import actor_critic, dreamer_utils, functional, policy_gradient, value_norm
from .a2c import A2CLoss
from .common import LossModule
from .ddpg import DDPGLoss
from .dqn import DistributionalDQNLoss, DQNLoss
from .gail import GAILLoss
from .dreamer import DreamerActorLoss, DreamerEnv, DreamerModelLoss, DreamerValueLoss
from .dreamer_v3 import DreamerV3ActorLoss, DreamerV3Loss, DreamerV3ModelLoss, DreamerV3ValueLoss
from .dreamer_utils import (
    categorical_kl_balanced,
    categorical_kl_terms,
    symexp,
    symlog,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)
from .iql import DiscreteIQLLoss, IQLLoss
from .multiagent import IPPOLoss, MAPPOLoss, QMixerLoss
from .ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from .bc import BCLoss
from .cql import CQLLoss, DiscreteCQLLoss
from .crossq import CrossQLoss
from .decision_transformer import DTLoss, OnlineDTLoss
from .redq import REDQLoss
from .reinforce import ReinforceLoss
from .rnd import RNDLoss, RunningMeanStd
from .sac import DiscreteSACLoss, SACLoss
from .td3 import TD3BCLoss, TD3Loss
from .tqc import TQCLoss
from .utils import (
    HardUpdate,
    SoftUpdate,
    TargetNetUpdater,
    distance_loss,
    hold_out_net,
    hold_out_params,
    next_state_value,
    reduce_loss,
)
from .value_norm import KLAdaptiveLR, PercentileValueNorm, PopArtValueNorm, RunningValueNorm, ValueNorm


def __getattr__(name: str):  # ValueEstimators / default_value_kwargs live in arrayrl.value
    if name in ("ValueEstimators", "default_value_kwargs"):
        from .. import value as _value

        return getattr(_value, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LossModule",
    "DQNLoss",
    "DistributionalDQNLoss",
    "IQLLoss",
    "DiscreteIQLLoss",
    "QMixerLoss",
    "PPOLoss",
    "ClipPPOLoss",
    "KLPENPPOLoss",
    "A2CLoss",
    "ReinforceLoss",
    "SACLoss",
    "DiscreteSACLoss",
    "DDPGLoss",
    "TD3Loss",
    "TD3BCLoss",
    "REDQLoss",
    "CrossQLoss",
    "TQCLoss",
    "CQLLoss",
    "DiscreteCQLLoss",
    "BCLoss",
    "DTLoss",
    "OnlineDTLoss",
    "RNDLoss",
    "GAILLoss",
    "DreamerModelLoss",
    "DreamerActorLoss",
    "DreamerValueLoss",
    "DreamerEnv",
    "DreamerV3ModelLoss",
    "DreamerV3ActorLoss",
    "DreamerV3Loss",
    "DreamerV3ValueLoss",
    "RunningMeanStd",
    "MAPPOLoss",
    "IPPOLoss",
    "KLAdaptiveLR",
    "ValueNorm",
    "PopArtValueNorm",
    "RunningValueNorm",
    "PercentileValueNorm",
    "SoftUpdate",
    "HardUpdate",
    "TargetNetUpdater",
    "distance_loss",
    "reduce_loss",
    "hold_out_net",
    "hold_out_params",
    "next_state_value",
    "functional",
    "policy_gradient",
    "value_norm",
    "actor_critic",
    "dreamer_utils",
    "symlog",
    "symexp",
    "two_hot_encode",
    "two_hot_decode",
    "two_hot_cross_entropy",
    "categorical_kl_balanced",
    "categorical_kl_terms",
    "ValueEstimators",
    "default_value_kwargs",
]
