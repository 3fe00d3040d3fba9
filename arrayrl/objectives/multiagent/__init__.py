"""Multi-agent losses (TorchRL's ``torchrl.objectives.multiagent``)."""

from .mappo import IPPOLoss, MAPPOLoss
from .qmixer import QMixerLoss

__all__ = ["QMixerLoss", "MAPPOLoss", "IPPOLoss"]
