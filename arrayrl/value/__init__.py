"""Value estimators: TorchRL 0.14.1's ``torchrl.objectives.value`` written once against the array API.

* :mod:`arrayrl.value.functional`: ``td0_return_estimate`` ... ``generalized_advantage_estimate``,
  ``vtrace_advantage_estimate``, ``reward2go`` with TorchRL's names, argument order and keywords; every recursive
  estimator is one exact reverse scan (:func:`arrayrl.ops.reverse_discounted_scan`), differentiable on the tape.
* :mod:`arrayrl.value.estimators`: ``TD0Estimator``, ``TD1Estimator``, ``TDLambdaEstimator``, ``GAE``,
  ``MultiAgentGAE``, ``VTrace`` on nested-dict batches (``forward`` returns a new dict).
* :mod:`arrayrl.value.registry`: ``ValueEstimators`` (aliases ``"td0"``, ``"td1"``, ``"tdlambda"``, ``"gae"``,
  ``"magae"``, ``"vtrace"``), ``default_value_kwargs`` and the registry used by the losses.
"""

from . import functional
from .estimators import (
    GAE,
    TD0Estimate,
    TD0Estimator,
    TD1Estimate,
    TD1Estimator,
    TDLambdaEstimate,
    TDLambdaEstimator,
    MultiAgentGAE,
    ValueEstimatorBase,
    VTrace,
)
from .functional import (
    generalized_advantage_estimate,
    reward2go,
    td0_advantage_estimate,
    td0_return_estimate,
    td1_advantage_estimate,
    td1_return_estimate,
    td_lambda_advantage_estimate,
    td_lambda_return_estimate,
    vec_generalized_advantage_estimate,
    vec_td1_advantage_estimate,
    vec_td1_return_estimate,
    vec_td_lambda_advantage_estimate,
    vec_td_lambda_return_estimate,
    vtrace_advantage_estimate,
)
from .registry import (
    UnknownValueEstimatorError,
    ValueEstimators,
    build_value_estimator,
    coerce_value_type,
    default_value_kwargs,
    dispatch_value_estimator,
    get_value_estimator_entry,
    register_value_estimator,
)

from . import estimators as _estimators
from . import registry as _registry

__all__ = ["functional", *_estimators.__all__, *_registry.__all__, *functional.__all__]
