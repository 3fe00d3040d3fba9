"""Networks as functional modules over parameter pytrees.

* :mod:`.params`: parameter-tree helpers (map, zip, flatten, count, copy, cast, to_device, soft/hard updates,
  stack/unstack for ensembles), torch-default initialisers and the orthogonal initialiser.
* :mod:`.layers`: :class:`Linear`, :class:`MLP` (``torchrl.modules.MLP`` layout), :class:`Ensemble`,
  :class:`NormalParamExtractor`, activations and scale mappings.
* :mod:`.keyed`: keyed modules over nested-dict batches (:class:`KeyedModule`, :class:`Sequential`,
  :class:`ProbabilisticActor`, :class:`ValueOperator`, :class:`QValueModule`, :class:`QValueActor`).

Every module has ``init(generator) -> params``, ``apply(params, ...)`` and a default ``params`` used by
``module(...)``.
"""

from .keyed import (
    KeyedModule,
    KeyedModuleBase,
    ProbabilisticActor,
    ProbabilisticModule,
    QValueActor,
    QValueModule,
    Sequential,
    ValueOperator,
)
from .layers import MLP, ACTIVATIONS, Ensemble, Linear, NormalParamExtractor, get_activation, linear, mappings
from .module import Module, ParamSlot
from .multiagent import QMixer, VDNMixer
from .norm import BatchNorm1d, BatchRenorm1d, NormMLP, StatefulValueOperator
from .recurrent import DreamerV3BlockGRU, DreamerV3BlockGRUCell, GRUCell, RMSNorm
from .rssm import RSSMPosteriorV3, RSSMPriorV3
from .rssm_v1 import DreamerActor, RSSMPosterior, RSSMPrior, RSSMRollout, StochasticKeyedModule
from . import params as _params
from .params import (
    cast_params,
    check_same_structure,
    copy_params,
    count_params,
    flatten_params,
    hard_update,
    linear_params,
    orthogonal,
    orthogonal_layers,
    params_map,
    params_zip,
    soft_update,
    stack,
    to_device,
    uniform_fan_in,
    unflatten_params,
    unstack,
)

__all__ = [
    "Module",
    "ParamSlot",
    "BatchNorm1d",
    "BatchRenorm1d",
    "NormMLP",
    "StatefulValueOperator",
    "GRUCell",
    "RMSNorm",
    "DreamerV3BlockGRUCell",
    "DreamerV3BlockGRU",
    "RSSMPriorV3",
    "RSSMPosteriorV3",
    "RSSMPrior",
    "RSSMPosterior",
    "RSSMRollout",
    "DreamerActor",
    "StochasticKeyedModule",
    "QMixer",
    "VDNMixer",
    "Linear",
    "MLP",
    "Ensemble",
    "NormalParamExtractor",
    "ACTIVATIONS",
    "get_activation",
    "linear",
    "mappings",
    "KeyedModuleBase",
    "KeyedModule",
    "Sequential",
    "ProbabilisticModule",
    "ProbabilisticActor",
    "ValueOperator",
    "QValueModule",
    "QValueActor",
    *_params.__all__,
]
