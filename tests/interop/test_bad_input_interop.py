"""arrayrl.interop on awkward and bad inputs: array layouts torch cannot alias, dtypes without an equivalent, wrong
containers, mismatched weight trees.

Conversions that once *aborted the interpreter* (torch's ``from_dlpack`` on a negative-stride NumPy view) run in a
subprocess, so a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torchrl

import arrayrl.nn as nn  # noqa: E402
from arrayrl.interop import (  # noqa: E402
    convert,
    from_tensordict,
    from_torch,
    params_from_torch,
    params_to_torch,
    to_tensordict,
    to_torch,
)

# Every 2-D and 3-D view with steps in {-2, -1, 1, 2} on each axis, transposed or not: values checked against NumPy
# itself (the source of the view), for to_torch, to_tensordict, params_to_torch and array-api-strict -> torch.
_VIEWS_SCRIPT = textwrap.dedent(
    """
    import itertools
    import numpy as np, torch, array_api_strict as strict
    from arrayrl.interop import convert, params_to_torch, to_tensordict, to_torch

    count = 0
    for shape in [(4, 6), (3, 4, 5)]:
        base = np.arange(float(np.prod(shape))).reshape(shape)
        for steps in itertools.product([-2, -1, 1, 2], repeat=len(shape)):
            for transpose in (False, True):
                v = base[tuple(slice(None, None, s) for s in steps)]
                v = v.T if transpose else v
                t = to_torch(v)
                assert np.array_equal(t.numpy(), v), (steps, transpose)
                assert np.array_equal(to_tensordict({"a": {"b": v}})["a", "b"].numpy(), v)
                assert np.array_equal(convert(strict.asarray(v), torch).numpy(), v)
                if min(v.strides) > 0 and v.flags.writeable:  # positive strides: still zero-copy
                    assert np.shares_memory(t.numpy(), v), (steps, transpose)
                count += 1
    lin = torch.nn.Linear(3, 2)
    w = np.arange(6.0).reshape(2, 3)[::-1]
    params_to_torch({"weight": w, "bias": np.arange(2.0)[::-1]}, lin)
    assert np.array_equal(lin.weight.detach().numpy(), w.astype(np.float32))
    assert lin.bias.tolist() == [1.0, 0.0]
    print("views", count)
    """
)


def test_negative_and_strided_views_convert_without_aborting():
    """``np.arange(6.).reshape(2, 3)[::-1]`` used to SIGABRT inside ``torch.from_dlpack``."""
    proc = subprocess.run([sys.executable, "-c", _VIEWS_SCRIPT], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    assert "views 160" in proc.stdout


def test_layouts_torch_cannot_alias_are_copied():
    a = np.arange(6.0).reshape(2, 3)
    ro = a.copy()
    ro.flags.writeable = False
    t = to_torch(ro)
    assert not np.shares_memory(t.numpy(), ro)  # an in-place torch op must not write into a read-only buffer
    t.add_(1.0)
    assert ro[0, 0] == 0.0
    b = np.broadcast_to(np.arange(3.0), (4, 3))  # read-only, stride 0
    np.testing.assert_array_equal(to_torch(b).numpy(), b)
    be = a.astype(">f8")
    tb = to_torch(be)
    assert tb.dtype == torch.float64
    np.testing.assert_array_equal(tb.numpy(), a)
    np.testing.assert_array_equal(to_torch(np.zeros((0, 3), np.float32)).numpy(), np.zeros((0, 3), np.float32))
    assert to_torch(np.float32(2.5)).dtype == torch.float32


@pytest.mark.parametrize("bad", [np.array([1, None], dtype=object), np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])])
def test_to_torch_rejects_dtypes_without_a_torch_equivalent(bad):
    with pytest.raises(TypeError, match=r"x: NumPy dtype .* has no torch equivalent"):
        to_torch(bad)


@pytest.mark.parametrize("bad", ["abc", [1.0, 2.0], None, {"a": 1}])
def test_to_torch_rejects_non_arrays(bad):
    with pytest.raises(TypeError, match=r"x: expected an array .*got (str|list|NoneType|dict)"):
        to_torch(bad)


def test_from_torch_views_and_unrepresentable_tensors():
    t = torch.arange(12.0).reshape(3, 4)
    for view in (t.T, t[:, ::2], t.flip(0), t[1:, 1:].T, t.expand(2, 3, 4)):
        np.testing.assert_array_equal(from_torch(view), view.numpy())
        np.testing.assert_array_equal(np.asarray(from_torch(view, __import__("array_api_strict"))), view.numpy())
    z = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex64)
    np.testing.assert_array_equal(from_torch(z.conj()), np.conj(z.numpy()))  # conj bit: used to raise
    with pytest.raises(TypeError, match=r"t: torch dtype torch.bfloat16 has no NumPy"):
        from_torch(torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"t: expected a dense \(strided\) tensor, got layout torch.sparse_coo"):
        from_torch(torch.eye(2).to_sparse())
    with pytest.raises(TypeError, match=r"t: expected a torch.Tensor, got ndarray"):
        from_torch(np.zeros(2))
    assert from_torch(torch.ones(2, dtype=torch.bfloat16), torch).dtype == torch.bfloat16  # torch -> torch is fine


@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=3),
    data=st.data(),
)
def test_torch_views_roundtrip_through_numpy(shape, data):
    """Any torch slicing/permutation/conjugate view converts to NumPy with the same values (and back)."""
    t = torch.arange(float(np.prod(shape))).reshape(shape)
    if data.draw(st.booleans()):
        t = (t + 1j * t).to(torch.complex64).conj()  # a lazy conjugate view (used to raise in .numpy())
    perm = data.draw(st.permutations(range(len(shape))))
    steps = data.draw(st.lists(st.integers(1, 3), min_size=len(shape), max_size=len(shape)))
    v = t.permute(*perm)[tuple(slice(None, None, s) for s in steps)]
    if data.draw(st.booleans()):
        v = v.flip(0)
    a = from_torch(v)
    np.testing.assert_array_equal(a, v.resolve_conj().numpy())
    np.testing.assert_array_equal(to_torch(a).numpy(), a)


def test_tensordict_helpers_reject_bad_containers():
    with pytest.raises(TypeError, match="d: expected a \\(nested\\) dict, got list"):
        to_tensordict([np.zeros(2)])
    with pytest.raises(TypeError, match="x: expected an array"):
        to_tensordict({"a": "text"})
    with pytest.raises(TypeError, match="td: expected a TensorDict, got dict"):
        from_tensordict({"a": np.zeros(2)})
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        params_from_torch({"weight": np.zeros(2)})


def test_params_to_torch_checks_names_shapes_and_module():
    lin = torch.nn.Linear(3, 2)
    good = {"weight": np.zeros((2, 3)), "bias": np.zeros(2)}
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module, got dict"):
        params_to_torch(good, {"weight": 1})
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        params_to_torch({**good, "extra": np.zeros(1)}, lin)
    with pytest.raises(ValueError, match=r"params: 'bias' has shape \(1,\), the module expects \(2,\)"):
        params_to_torch({"weight": good["weight"], "bias": np.zeros(1)}, lin)  # no broadcast of a (1,) bias
    before = lin.weight.detach().clone()
    with pytest.raises(ValueError):
        params_to_torch({"weight": np.ones((2, 3)), "bias": np.zeros(3)}, lin)
    assert torch.equal(lin.weight.detach(), before)  # a failed copy leaves the module unchanged
    with pytest.raises(KeyError, match=r"missing \['bias', 'weight'\], unexpected \['0.bias', '0.weight'\]"):
        params_to_torch(nn.MLP(3, 2).params, lin)  # an MLP tree is nested under "0"
