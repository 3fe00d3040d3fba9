"""``_kernels.int_range`` (the index-range check's min/max): the NumPy ufunc route agrees with the generic one."""
import numpy as np
import pytest

from arrayrl import _kernels

array_api_strict = pytest.importorskip("array_api_strict")


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4), (2, 3, 5)])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_numpy_route_matches_generic_and_hand_values(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    lo_v = 0 if np.dtype(dtype).kind == "u" else -9
    x = rng.integers(lo_v, 10, size=shape).astype(dtype)
    want = (int(x.min()), int(x.max()))  # hand: the array's own extremes
    got = _kernels.int_range(x)
    generic = _kernels.int_range(array_api_strict.asarray(x))  # the namespace route
    assert got == want == generic
    assert all(type(v) is int for v in got)


def test_extremes_at_the_ends():
    x = np.array([[5, 1, 2], [3, 4, -8]], dtype=np.int64)
    assert _kernels.int_range(x) == (-8, 5)
    assert _kernels.int_range(x.T) == (-8, 5)  # a non-contiguous view
