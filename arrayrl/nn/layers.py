"""Dense layers: :class:`Linear`, :class:`MLP` (TorchRL's ``torchrl.modules.MLP`` layout), :class:`Ensemble`,
:class:`NormalParamExtractor` and the positive scale mappings of ``tensordict.nn.mappings``.

Layout matches torch so weights copy 1:1: a linear layer is ``{"weight": [out, in], "bias": [out]}`` and computes
``y = x @ weight.T + bias``; an MLP is a tree keyed by the index of each linear layer in TorchRL's ``nn.Sequential``
(``"0"``, ``"2"``, ``"4"``..., activations sit at the odd indices), exactly ``torchrl.modules.MLP(...).state_dict()``.

Ensembles: a parameter tree whose leaves carry a leading member axis (``weight: [N, out, in]``, ``bias: [N, out]``)
runs as one batched matmul per layer, no Python loop over members. The input is either shared by all members
(``[*B, in]``, output ``[N, *B, out]``; TorchRL's ``vmap`` with ``in_dims=(None, 0)``) or stacked per member
(``stacked_input=True``: ``[N, *B, in]``; ``in_dims=(0, 0)``).

Checks (shapes and dtypes only, never data; cheap enough for every call): ``apply`` checks every parameter leaf of
the tree against the layer's sizes -- presence, no unexpected keys, exact shapes (a ``(1,)`` bias is an error, not a
broadcast) -- with messages naming the path (``params['2']['bias']: expected shape (64,), got (1,)``), and the
inputs' feature size. The module's own tree (what ``module(x)`` and the keyed modules pass when acting) is checked
once per tree object (a newly assigned tree at its first use; see ``_Layer._ensemble_of``); an MLP's input check
runs once per input signature (array type, dtype, last dimension: all it looks at; see ``_check_input``). Size
arguments accept any integer-like (``operator.index``: ``np.int64`` from ``action_space.n`` included) and reject
bools, floats and negative values by name. ``dtype``/``xp``/``device`` given at construction are the defaults of
:meth:`init` too (``MLP(..., dtype=np.float32).init(g)`` is float32); ``generator`` may be an arrayrl
:class:`~arrayrl.random.Generator` or a NumPy/torch generator to wrap (:func:`arrayrl.random.as_generator`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from .. import ops
from .._backend import namespace_of
from .._checks import check_array, check_floating
from ..random import _index, as_generator
from .module import Module
from .params import _format_path, _shape_str, linear_params, stack

__all__ = [
    "ACTIVATIONS",
    "get_activation",
    "Linear",
    "MLP",
    "Ensemble",
    "NormalParamExtractor",
    "mappings",
    "biased_softplus",
    "inv_softplus",
    "linear",
]


# ------------------------------------------------------------------------------------------------ activations
def _tanh(x: Any) -> Any:
    return namespace_of(x).tanh(x)


def _identity(x: Any) -> Any:
    return x


def _elu(x: Any, alpha: float = 1.0) -> Any:
    return ops.elu(x, alpha=alpha)


def _leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    return ops.leaky_relu(x, negative_slope=negative_slope)


def _softplus(x: Any, beta: float = 1.0, threshold: float = 20.0) -> Any:
    """``torch.nn.Softplus``/``F.softplus``: ``log1p(exp(beta x)) / beta``, and ``x`` where ``beta x > threshold``."""
    return ops.softplus(x, beta=beta, threshold=threshold)


#: activation name -> function of one array (keyword options as in the torch module's constructor).
ACTIVATIONS: dict[str, Callable[..., Any]] = {
    "tanh": _tanh,
    "relu": ops.relu,
    "elu": _elu,
    "leaky_relu": _leaky_relu,
    "silu": ops.silu,
    "sigmoid": ops.sigmoid,
    "softplus": _softplus,
    "identity": _identity,
}

# activations that ops.linear fuses into the layer (function -> ops.linear's activation name)
_FUSABLE: dict[Callable[..., Any], str] = {ops.relu: "relu", _tanh: "tanh"}

# torch.nn class names accepted in place of the strings (no torch import needed).
_TORCH_NAMES = {
    "Tanh": "tanh",
    "ReLU": "relu",
    "ELU": "elu",
    "LeakyReLU": "leaky_relu",
    "SiLU": "silu",
    "Sigmoid": "sigmoid",
    "Softplus": "softplus",
    "Identity": "identity",
}


def get_activation(activation: Any, kwargs: dict | None = None) -> Callable[[Any], Any]:
    """Resolve ``activation`` to a function of one array.

    Accepts a name of :data:`ACTIVATIONS` (``"tanh"``, ``"relu"``, ``"elu"``, ``"leaky_relu"``, ``"silu"``,
    ``"sigmoid"``, ``"softplus"``, ``"identity"``), the matching ``torch.nn`` class (``nn.Tanh``, ``nn.ReLU``,
    ``nn.ELU``, ``nn.LeakyReLU``, ``nn.SiLU``...; recognised by name, torch is not imported) or any callable on
    arrays. ``kwargs`` are the constructor options of the torch module (``alpha`` for ELU, ``negative_slope`` for
    LeakyReLU); ``inplace`` is accepted and ignored.
    """
    kwargs = {k: v for k, v in (kwargs or {}).items() if k != "inplace"}
    name = None
    if isinstance(activation, str):
        name = activation.lower()
    elif isinstance(activation, type) and activation.__name__ in _TORCH_NAMES:
        name = _TORCH_NAMES[activation.__name__]
    if name is not None:
        if name not in ACTIVATIONS:
            raise ValueError(f"activation_class: unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        fn = ACTIVATIONS[name]
    elif callable(activation) and not isinstance(activation, type):
        fn = activation
    else:
        raise TypeError(
            f"activation_class: expected a name in {sorted(ACTIVATIONS)}, a torch.nn activation class or a function, "
            f"got {activation!r}"
        )
    if not kwargs:
        return fn
    return lambda x: fn(x, **kwargs)


# ------------------------------------------------------------------------------------------------ linear
def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def linear(params: dict, x: Any, xp: Any = None, activation: str | None = None) -> Any:
    """``act(x @ weight.T + bias)`` on a 2-D ``x`` (``[M, in]``) or an ensemble ``x`` (``[N, M, in]`` or shared
    ``[M, in]`` with ``weight: [N, out, in]``), as one fused tape node (:func:`arrayrl.ops.linear`; ``activation``
    ``None``, ``"relu"`` or ``"tanh"``). Shapes are checked by the callers; ``xp`` is accepted for compatibility
    (the namespace follows the arrays)."""
    return ops.linear(x, params["weight"], params.get("bias"), activation)


def _check_features(x: Any, n: int, name: str) -> None:
    check_array(x, name)
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{name}: expected a last dimension of size {n} (in_features), got shape {_shape_str(x.shape)}")


#: ``(in_features, array type, dtype, last dimension)`` of inputs already accepted by :func:`_check_input`
_INPUTS_OK: set = set()
_INPUTS_OK_MAX = 1024  # (cleared when full: a bound, not an eviction policy)


def _check_input(x: Any, n: int) -> None:
    """``check_floating(x, "input")`` and ``_check_features(x, n, "input")``, run once per signature (array type,
    dtype, last dimension; what the checks look at) and remembered: acting calls a network on arrays of one
    signature thousands of times."""
    try:
        key = (n, type(x), x.dtype, x.shape[-1:])
        if key in _INPUTS_OK:
            return
    except (AttributeError, TypeError):  # not an array, or an unhashable dtype: the checks say what is wrong
        key = None
    check_floating(x, "input")
    _check_features(x, n, "input")
    if key is not None:
        if len(_INPUTS_OK) >= _INPUTS_OK_MAX:
            _INPUTS_OK.clear()
        _INPUTS_OK.add(key)


def _sizes(value: Any, name: str, minimum: int = 0) -> tuple:
    """An integer-like or a sequence of integer-likes as a tuple of ints (``name[i]`` named in errors)."""
    try:
        return (_index(value, name, minimum),)
    except TypeError:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name}: expected an integer or a sequence of integers, got {type(value).__name__} "
                            f"{value!r}") from None
    return tuple(_index(v, f"{name}[{i}]", minimum) for i, v in enumerate(value))


def _is_integer(value: Any) -> bool:
    """True for an integer-like that is not a bool (``int``, ``np.int64``...)."""
    try:
        _index(value, "value", minimum=-(2**63))
        return True
    except (TypeError, ValueError):
        return False


def _shape_of(x: Any, where: str) -> tuple:
    """``x.shape`` as a tuple; ``TypeError`` naming ``where`` for a leaf that is not an array."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{where}: expected an array, got {type(x).__name__}")
    return tuple(shape)


def _check_keys(tree: Any, expected: Sequence[str], where: str, what: str) -> None:
    """``tree`` is a dict with exactly the keys ``expected`` (``KeyError`` for a missing one, ``ValueError`` for an
    unexpected one, ``TypeError`` for a non-dict)."""
    if not isinstance(tree, dict):
        raise TypeError(f"{where}: expected a dict with keys {list(expected)} ({what}), got {type(tree).__name__}")
    if len(tree) == len(expected) and all(k in tree for k in expected):
        return
    missing = [k for k in expected if k not in tree]
    if missing:
        raise KeyError(f"{where}: missing {missing} ({what}); keys present: {list(tree)}")
    raise ValueError(f"{where}: unexpected keys {[k for k in tree if k not in expected]} ({what} has {list(expected)})")


_WEIGHT_BIAS, _WEIGHT = ("weight", "bias"), ("weight",)


def _check_linear(layer: Any, where: str, n_in: int, n_out: int, bias: bool, lead: tuple) -> None:
    """One linear layer's leaves: exactly ``weight [*lead, out, in]`` and, if ``bias``, ``bias [*lead, out]``.

    The fast path (a correct layer) is a few dict lookups and two shape comparisons; the messages are built only
    when something is wrong."""
    wshape, bshape = lead + (n_out, n_in), (lead + (n_out,) if bias else None)
    try:
        if (type(layer) is dict and len(layer) == 1 + bias and layer["weight"].shape == wshape
                and (not bias or layer["bias"].shape == bshape)):
            return
    except (KeyError, AttributeError):
        pass
    _check_keys(layer, _WEIGHT_BIAS if bias else _WEIGHT, where, f"a linear layer {n_in} -> {n_out}, bias={bias}")
    for key, want in (("weight", wshape), ("bias", bshape)):
        if want is not None:
            got = _shape_of(layer[key], f"{where}[{key!r}]")
            if got != want:
                raise ValueError(f"{where}[{key!r}]: expected shape {_shape_str(want)}, got {_shape_str(got)}")


def _ensemble_size(first_weight: Any, where: str) -> int | None:
    """``None`` for a plain tree (2-D weights), ``N`` for an ensemble (3-D weights, leading axis ``N``)."""
    shape = _shape_of(first_weight, where)
    if len(shape) == 2:
        return None
    if len(shape) == 3:
        return int(shape[0])
    raise ValueError(f"{where}: expected shape (out, in) or (N, out, in) (an ensemble), got {_shape_str(shape)}")


class _Layer(Module):
    """A module whose constructor arguments ``xp``/``dtype``/``device`` are also the defaults of :meth:`init`, and
    whose generators go through :func:`arrayrl.random.as_generator` (NumPy/torch generators wrapped)."""

    _init_xp: Any = None
    _init_dtype: Any = None
    _init_device: Any = None
    _checked: Any = None  # (tree, ensemble size) of the last check of the module's own tree (see _ensemble_of)

    def _build_params(self, generator: Any, xp: Any, dtype: Any, device: Any, params: Any = None) -> None:
        """Remember the construction's defaults; draw the default :attr:`params` (unless ``params`` is given)."""
        self._init_xp, self._init_dtype, self._init_device = xp, dtype, device
        if params is None:
            self._default_params(generator, xp, dtype, device)
        else:
            self.params = params

    def _ensemble_of(self, params: Any) -> int | None:
        """Check ``params`` against the layer's sizes (``_first_weight`` / ``_check_params``); its ensemble size
        (``None`` for a plain tree).

        Fast path for acting: the module's own tree (``params is self.params``, what ``module(x)`` and the keyed
        modules pass) is checked once per tree *object* and remembered, so repeated calls with the same tree skip
        the check; assigning a new tree (an optimiser step, ``loss.params = new``) checks again on its first use.
        Trees are never modified in place by arrayrl; a caller that writes into ``module.params[...]`` in place
        bypasses this check (and gets the backend's own error for a wrong shape)."""
        checked = self._checked
        if checked is not None and checked[0] is params:
            return checked[1]
        n = _ensemble_size(*self._first_weight(params))
        # every layer type defines _check_params(params, lead) (the multi-agent nets have their own signature)
        self._check_params(params, () if n is None else (n,))  # type: ignore[attr-defined]
        if params is self.params:
            self._checked = (params, n)
        return n

    def _first_weight(self, params: Any) -> tuple[Any, str]:
        """The first weight of ``params`` and its path name (each layer type knows where it is)."""
        raise NotImplementedError

    def init(self, generator: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Any:
        """A fresh parameter tree (see :meth:`Module.init`). ``dtype`` defaults to the one given at construction;
        without a generator, ``xp`` and ``device`` do too (a given generator decides the namespace and device)."""
        if generator is None:
            xp = self._init_xp if xp is None else xp
            device = self._init_device if device is None else device
        else:
            generator = as_generator(generator, "generator")
        dtype = self._init_dtype if dtype is None else dtype
        return super().init(generator, xp=xp, dtype=dtype, device=device)


def _flatten_batch(x: Any, xp: Any, n_members: int | None, stacked_input: bool, in_features: int) -> tuple:
    """Reshape the input to ``[M, in]`` (or ``[N, M, in]``); return it with the batch shape to restore.

    An input that already has that shape is returned as is (no reshape node on the tape)."""
    if n_members is not None and stacked_input:
        if x.ndim < 2 or x.shape[0] != n_members:
            raise ValueError(
                f"input: stacked_input=True expects a leading ensemble axis of size {n_members}, got shape {tuple(x.shape)}"
            )
        batch = tuple(x.shape[1:-1])
        return (x if x.ndim == 3 else xp.reshape(x, (n_members, _prod(batch), in_features))), batch
    batch = tuple(x.shape[:-1])
    return (x if x.ndim == 2 else xp.reshape(x, (_prod(batch), in_features))), batch


def _restore_batch(y: Any, xp: Any, n_members: int | None, batch: tuple, out_shape: tuple) -> Any:
    lead = (n_members,) if n_members is not None else ()
    shape = lead + batch + out_shape
    if tuple(y.shape) == shape:
        return y
    return namespace_of(y).reshape(y, shape)


class Linear(_Layer):
    """A dense layer ``y = x @ weight.T + bias`` with torch's layout and default init.

    Args:
        in_features, out_features: sizes (integer-likes ``>= 0``).
        bias: add a bias (default ``True``).
        generator, xp, dtype, device: how the default :attr:`params` are drawn (see :meth:`Module.init`).

    Shapes: ``x [*B, in] -> [*B, out]``; ensemble params ``[N, out, in]`` give ``[N, *B, out]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, generator: Any = None,
                 xp: Any = None, dtype: Any = None, device: Any = None):
        self.in_features, self.out_features = _index(in_features, "in_features"), _index(out_features, "out_features")
        self.bias = bool(bias)
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        return linear_params(generator, self.in_features, self.out_features, bias=self.bias, dtype=dtype)

    def _check_params(self, params: Any, lead: tuple) -> None:
        _check_linear(params, "params", self.in_features, self.out_features, self.bias, lead)

    def _first_weight(self, params: Any) -> tuple[Any, str]:
        """The weight that tells a plain tree from an ensemble, with its path (the tree's keys checked)."""
        if type(params) is not dict or "weight" not in params:
            _check_keys(params, _WEIGHT_BIAS if self.bias else _WEIGHT, "params", repr(self))
        return params["weight"], "params['weight']"

    def apply(self, params: dict, x: Any, *, stacked_input: bool = False) -> Any:
        return self._forward(params, (x,), stacked_input, self._ensemble_of(params))

    def _forward(self, params: dict, inputs: tuple, stacked_input: bool, n: int | None) -> Any:
        """The forward pass on checked parameters (``n``: ensemble size or ``None``)."""
        (x,) = inputs
        check_floating(x, "input")
        _check_features(x, self.in_features, "input")
        _check_stacked(stacked_input, n)
        xp = namespace_of(x, params["weight"], params.get("bias"))
        x2, batch = _flatten_batch(x, xp, n, stacked_input, self.in_features)
        return _restore_batch(linear(params, x2, xp), xp, n, batch, (self.out_features,))

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={self.bias})"


def _check_stacked(stacked_input: bool, n: int | None) -> None:
    if stacked_input and n is None:
        raise ValueError("stacked_input: True needs ensemble parameters (a leading member axis on every leaf), "
                         "got a plain parameter tree")


# ------------------------------------------------------------------------------------------------ MLP
def _kwargs_list(kwargs: dict | Sequence[dict] | None, n: int, name: str) -> list[dict]:
    if kwargs is None:
        return [{} for _ in range(n)]
    if isinstance(kwargs, dict):
        return [dict(kwargs) for _ in range(n)]
    kwargs = list(kwargs)
    if len(kwargs) != n:
        raise ValueError(f"{name}: expected a dict or a list of {n} dicts, got a list of {len(kwargs)}")
    return [dict(k) for k in kwargs]


class MLP(_Layer):
    """A multi-layer perceptron with the arguments and layer layout of ``torchrl.modules.MLP``.

    ``depth + 1`` linear layers ``in_features -> num_cells[0] -> ... -> num_cells[-1] -> out_features``, each
    followed by ``activation_class`` except the last (unless ``activate_last_layer``). With several inputs
    ``mlp(a, b)`` concatenates them along the last axis (as TorchRL); a tuple ``out_features`` reshapes the output
    to ``[*B, *out_features]``.

    With ``"relu"`` or ``"tanh"`` (no options) the whole stack runs as one :func:`arrayrl.ops.mlp` primitive: on
    NumPy one tape node with a joint VJP (values and gradients those of the per-layer path; tests/nn/test_fused_mlp.py);
    other activations run layer by layer (relu/tanh layers still fused into their :func:`arrayrl.ops.linear`).

    Args:
        in_features: input size (required: arrayrl has no lazy layers).
        out_features: an int or a shape (tuple).
        depth: number of hidden layers (``None``: taken from ``num_cells``; ``0`` is a single linear layer).
        num_cells: hidden sizes, an int (needs ``depth``; default 32 when only ``depth`` is given) or a sequence.
        activation_class: ``"tanh"`` (default), ``"relu"``, ``"elu"``, ``"leaky_relu"``, ``"silu"``, ``"sigmoid"``,
            ``"softplus"``, ``"identity"``, the matching ``torch.nn`` class, or a function of one array.
        activation_kwargs: a dict, or a list of ``depth + activate_last_layer`` dicts (e.g. ``{"alpha": 0.5}``).
        bias_last_layer: whether the last linear layer has a bias (default ``True``).
        activate_last_layer: apply the activation after the last layer too (default ``False``).
        generator, xp, dtype, device: how the default :attr:`params` are drawn.

    Not supported (TorchRL options): ``norm_class``, ``dropout``, ``layer_class``, ``single_bias_last_layer``.

    Parameter tree: ``{str(index): {"weight": [out, in], "bias": [out]}}`` with TorchRL's ``nn.Sequential`` indices.
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | Sequence[int] | None = None,
        depth: int | None = None,
        num_cells: int | Sequence[int] | None = None,
        activation_class: Any = "tanh",
        activation_kwargs: dict | Sequence[dict] | None = None,
        bias_last_layer: bool = True,
        activate_last_layer: bool = False,
        *,
        generator: Any = None,
        xp: Any = None,
        dtype: Any = None,
        device: Any = None,
    ):
        if in_features is None:
            raise ValueError("in_features: required (arrayrl has no lazy layers)")
        if out_features is None:
            raise ValueError("out_features: must be specified for MLP")
        depth = None if depth is None else _index(depth, "depth")
        if num_cells is None:
            num_cells = [] if depth is None else [32] * depth
        elif _is_integer(num_cells):
            if depth is None:
                raise ValueError("num_cells: an integer num_cells needs depth= too")
            num_cells = [_index(num_cells, "num_cells")] * depth
        else:
            num_cells = list(_sizes(num_cells, "num_cells"))
        if depth is not None and len(num_cells) != depth:
            raise ValueError(f"depth: {depth} conflicts with num_cells of length {len(num_cells)}")
        self.in_features = _index(in_features, "in_features")
        self._out_shape = _sizes(out_features, "out_features")
        self.out_features = self._out_shape[0] if _is_integer(out_features) else self._out_shape
        self.num_cells = num_cells
        self.depth = len(num_cells)
        self.bias_last_layer = bool(bias_last_layer)
        self.activate_last_layer = bool(activate_last_layer)
        self.activation_class = activation_class
        n_act = self.depth + int(self.activate_last_layer)
        self._activations = [get_activation(activation_class, kw) for kw in _kwargs_list(activation_kwargs, n_act, "activation_kwargs")]
        # relu and tanh (without options) run fused into their linear layer (one tape node, see ops.linear)
        self._fused = [_FUSABLE.get(fn) for fn in self._activations]
        # (key, in, out, bias, activated) for each linear layer, with TorchRL's nn.Sequential indices
        sizes_in = [self.in_features] + num_cells
        sizes_out = num_cells + [_prod(self._out_shape)]
        self.layers: list[tuple[str, int, int, bool, bool]] = []
        index = 0
        for i, (a, b) in enumerate(zip(sizes_in, sizes_out)):
            last = i == self.depth
            activated = (not last) or self.activate_last_layer
            self.layers.append((str(index), a, b, self.bias_last_layer if last else True, activated))
            index += 2 if activated else 1
        # every activation fusable: the whole stack runs as one ops.mlp primitive (one tape node on NumPy), with
        # each layer's fused activation name (None for the last layer when it is not activated)
        fused = iter(self._fused)
        stack_acts = tuple(next(fused) if activated else None for *_, activated in self.layers)
        self._stack_acts = None if None in self._fused else stack_acts
        self._keys = tuple(key for key, *_ in self.layers)
        self._keyset = frozenset(self._keys)
        self._wheres = tuple(_format_path("params", (key,)) for key in self._keys)  # error-message paths
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        return {key: linear_params(generator, a, b, bias=bias, dtype=dtype) for key, a, b, bias, _ in self.layers}

    def _first_weight(self, params: Any) -> tuple[Any, str]:
        """The weight that tells a plain tree from an ensemble, with its path (the tree's keys checked)."""
        if type(params) is not dict or params.keys() != self._keyset:
            _check_keys(params, self._keys, "params", f"the layers of {self!r}")
        first = params[self._keys[0]]
        if type(first) is not dict or "weight" not in first:
            _, n_in, n_out, bias, _ = self.layers[0]
            _check_linear(first, self._wheres[0], n_in, n_out, bias, ())  # raises the key error
        return first["weight"], self._wheres[0] + "['weight']"

    def _check_params(self, params: Any, lead: tuple) -> None:
        for (key, n_in, n_out, bias, _), where in zip(self.layers, self._wheres):
            _check_linear(params[key], where, n_in, n_out, bias, lead)

    def apply(self, params: dict, *inputs: Any, stacked_input: bool = False) -> Any:
        """Forward pass. ``params`` may be an ensemble tree (leading axis ``N`` on every leaf); ``stacked_input``
        says whether the inputs carry that axis too. Several inputs are concatenated along the last axis."""
        return self._forward(params, inputs, stacked_input, self._ensemble_of(params))

    def _forward(self, params: dict, inputs: tuple, stacked_input: bool, n: int | None) -> Any:
        """The forward pass on checked parameters (``n``: ensemble size or ``None``)."""
        x = self._concat_inputs(inputs, params)
        _check_stacked(stacked_input, n)
        stack = None if self._stack_acts is None else [(params[key]["weight"], params[key].get("bias"))
                                                       for key in self._keys]
        if x.ndim == 2 and not stacked_input and stack is not None and len(self._out_shape) == 1:
            # the common case (acting, a target network, a critic ensemble on a shared input): [M, in] -> [M, out]
            # or [N, M, out], nothing to reshape
            return ops.mlp(x, stack, self._stack_acts)
        # the namespace is only needed to reshape; the layers take the namespace of their arrays
        xp = namespace_of(x) if x.ndim != (3 if n is not None and stacked_input else 2) else None
        h, batch = _flatten_batch(x, xp, n, stacked_input, self.in_features)
        if stack is not None:
            h = ops.mlp(h, stack, self._stack_acts)
            return _restore_batch(h, xp, n, batch, self._out_shape)
        j = 0
        for key, _, _, _, activated in self.layers:
            layer = params[key]
            if activated:
                fused = self._fused[j]
                h = ops.linear(h, layer["weight"], layer.get("bias"), fused)
                if fused is None:
                    h = self._activations[j](h)
                j += 1
            else:
                h = ops.linear(h, layer["weight"], layer.get("bias"))
        return _restore_batch(h, xp, n, batch, self._out_shape)

    def _concat_inputs(self, inputs: tuple, params: dict) -> Any:
        """The one input, or the inputs concatenated along the last axis (checked: floating, same leading shape,
        last dimensions summing to ``in_features``)."""
        if not inputs:
            raise TypeError("MLP.apply: expected at least one input array")
        if len(inputs) == 1:
            x = inputs[0]
            _check_input(x, self.in_features)
            return x
        for i, a in enumerate(inputs):
            check_floating(a, f"inputs[{i}]")
            if a.ndim < 1:
                raise ValueError(f"inputs[{i}]: expected at least 1 dimension (features last), got shape ()")
        ref = tuple(inputs[0].shape[:-1])
        for i, a in enumerate(inputs[1:], start=1):
            if tuple(a.shape[:-1]) != ref:
                raise ValueError(
                    f"inputs[{i}]: expected leading shape {_shape_str(ref)} (that of inputs[0]) to concatenate, got "
                    f"{_shape_str(a.shape)}"
                )
        widths = tuple(int(a.shape[-1]) for a in inputs)
        if sum(widths) != self.in_features:
            raise ValueError(f"inputs: the last dimensions {widths} of the {len(inputs)} inputs sum to {sum(widths)}, "
                             f"expected in_features={self.in_features}")
        xp = namespace_of(*inputs, *[v for key in self._keys for v in params[key].values()])
        return xp.concat(list(inputs), axis=-1)

    def __repr__(self) -> str:
        act = self.activation_class if isinstance(self.activation_class, str) else getattr(
            self.activation_class, "__name__", repr(self.activation_class))
        return (
            f"MLP(in_features={self.in_features}, out_features={self.out_features}, num_cells={self.num_cells}, "
            f"activation_class={act!r}, activate_last_layer={self.activate_last_layer}, "
            f"bias_last_layer={self.bias_last_layer})"
        )


class Ensemble(_Layer):
    """``num_members`` independent parameter sets of ``module`` stacked on a leading axis, run in one batched pass.

    ``params`` leaves are ``[N, ...]``; ``apply(params, x)`` returns ``[N, *B, out]`` for a shared ``x [*B, in]``
    and for ``x [N, *B, in]`` with ``stacked_input=True``. Works for :class:`Linear` and :class:`MLP` (their
    ``apply`` batches over the leading weight axis). Members are drawn one after the other from the generator;
    ``xp``/``dtype``/``device`` default to those ``module`` was built with.

    Use :meth:`from_params` to stack existing trees (e.g. copied from TorchRL's ``qvalue_network_params``).
    """

    def __init__(self, module: Module, num_members: int, *, generator: Any = None, xp: Any = None,
                 dtype: Any = None, device: Any = None, params: Any = None):
        if not isinstance(module, (Linear, MLP)):
            raise TypeError(f"module: Ensemble supports Linear and MLP, got {type(module).__name__}")
        self.module, self.num_members = module, _index(num_members, "num_members", minimum=1)
        xp = module._init_xp if xp is None else xp
        dtype = module._init_dtype if dtype is None else dtype
        device = module._init_device if device is None else device
        if params is not None:
            self._check_members(params)
        self._build_params(generator, xp, dtype, device, params)

    @classmethod
    def from_params(cls, module: Module, trees: Sequence[Any]) -> "Ensemble":
        """An ensemble whose members are the given parameter trees (stacked exactly)."""
        return cls(module, len(trees), params=stack(list(trees)))

    def _init(self, generator: Any, dtype: Any) -> Any:
        return stack([self.module._init(generator, dtype) for _ in range(self.num_members)])

    def apply(self, params: Any, *inputs: Any, stacked_input: bool = False) -> Any:
        """``module.apply`` on the stacked tree, whose every leaf must carry the leading axis ``num_members``."""
        self._check_members(params)
        return self.module._forward(params, inputs, stacked_input, self.num_members)

    def _check_members(self, params: Any) -> None:
        """Every leaf is ``[num_members, *member_shape]`` (a plain tree or another ensemble size is an error)."""
        weight, where = self.module._first_weight(params)
        if _ensemble_size(weight, where) != self.num_members:
            raise ValueError(f"{where}: expected a leading ensemble axis of size {self.num_members}, got shape "
                             f"{_shape_str(weight.shape)}")
        self.module._check_params(params, (self.num_members,))

    def __repr__(self) -> str:
        return f"Ensemble({self.module!r}, num_members={self.num_members})"


# ------------------------------------------------------------------------------------------------ scale mappings
def inv_softplus(bias: float) -> float:
    """``log(max(expm1(bias), 1e-6))`` (``tensordict.nn.utils.inv_softplus``), computed in float64.

    TorchRL computes it in torch's default dtype (usually float32), so the constant can differ by about 1e-8 from
    a TorchRL module built without ``torch.set_default_dtype(torch.float64)``.
    """
    return math.log(max(math.expm1(bias), 1e-6))


def biased_softplus(bias: float, min_val: float = 0.01) -> Callable[[Any], Any]:
    """``x -> softplus(x + inv_softplus(bias - min_val)) + min_val`` (so that ``f(0) == bias``; torch's softplus
    threshold of 20)."""
    shift = inv_softplus(bias - min_val)

    def f(x: Any) -> Any:
        return _softplus(x + shift) + min_val

    return f


def _expln(x: Any) -> Any:
    """``exp(x)`` for ``x <= 0``, ``log1p(x) + 1`` otherwise (both branches evaluated on safe inputs)."""
    xp = namespace_of(x)
    neg = x <= 0
    zero = xp.zeros_like(x)
    return xp.where(neg, xp.exp(xp.where(neg, x, zero)), xp.log1p(xp.where(neg, zero, x)) + 1.0)


def _exp(x: Any) -> Any:
    return namespace_of(x).exp(x)


_MAPPINGS: dict[str, Callable[[Any], Any]] = {
    "softplus": _softplus,
    "exp": _exp,
    "relu": ops.relu,
    "none": _identity,
    "expln": _expln,
}


def mappings(key: str) -> Callable[[Any], Any]:
    """A positive mapping by name, as ``tensordict.nn.mappings``: ``"softplus"``, ``"exp"``, ``"relu"``,
    ``"expln"``, ``"none"``, ``"biased_softplus"`` (bias 1.0), ``"biased_softplus_{bias}"`` and
    ``"biased_softplus_{bias}_{min_val}"`` (``min_val`` defaults to 0.01)."""
    if key in _MAPPINGS:
        return _MAPPINGS[key]
    if key.startswith("biased_softplus"):
        parts = key.split("_")
        if len(parts) == 2:
            return biased_softplus(1.0)
        if len(parts) == 3:
            return biased_softplus(float(parts[2]))
        if len(parts) == 4:
            return biased_softplus(float(parts[2]), min_val=float(parts[3]))
        raise ValueError(f"scale_mapping: invalid number of arguments in {key!r}")
    raise ValueError(f"scale_mapping: unknown mapping {key!r}; expected one of {sorted(_MAPPINGS)} or biased_softplus_<bias>[_<min>]")


class NormalParamExtractor(Module):
    """Split the last axis into ``(loc, scale)`` halves; ``scale = max(mapping(scale), scale_lb)``.

    As ``tensordict.nn.NormalParamExtractor``: default mapping ``"biased_softplus_1.0"`` (``softplus(x + b) + 0.01``
    with ``b`` such that ``f(0) = 1``), ``scale_lb = 1e-4``. Extra inputs are passed through:
    ``apply(params, x, *others) -> (loc, scale, *others)``. No parameters (``params == {}``).

    Shapes: ``x [*B, 2 * A] -> loc [*B, A], scale [*B, A]``; an odd last dimension is an error (torch's ``chunk``
    would silently return unequal halves).
    """

    def __init__(self, scale_mapping: str = "biased_softplus_1.0", scale_lb: float = 1e-4):
        self.scale_mapping_name = scale_mapping
        self.scale_mapping = mappings(scale_mapping)
        self.scale_lb = float(scale_lb)
        self.params = {}

    def apply(self, params: Any, x: Any, *others: Any) -> tuple:
        check_floating(x, "input")
        if x.ndim < 1 or x.shape[-1] % 2:
            raise ValueError(f"input: expected an even last dimension (loc and scale halves), got shape {tuple(x.shape)}")
        xp = namespace_of(x)
        half = x.shape[-1] // 2
        loc, raw_scale = x[..., :half], x[..., half:]
        scale = xp.clip(self.scale_mapping(raw_scale), min=self.scale_lb)
        return (loc, scale, *others)

    def __repr__(self) -> str:
        return f"NormalParamExtractor(scale_mapping={self.scale_mapping_name!r}, scale_lb={self.scale_lb})"
