"""Multi-agent losses (TorchRL's ``torchrl.objectives.multiagent``)."""

from .qmixer import QMixerLoss

__all__ = ["QMixerLoss"]
