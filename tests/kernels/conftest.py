"""Fixtures shared by the kernel tests."""

from __future__ import annotations

import pytest

from arrayrl import _pool


@pytest.fixture
def fresh_pool():
    """An empty, enabled buffer pool at the default cap for one test; the previous state is restored after it."""
    old = _pool.set_buffer_pool(True, max_bytes=_pool.DEFAULT_MAX_BYTES)
    _pool.clear_buffer_pool()
    yield
    _pool.set_buffer_pool(old, max_bytes=_pool.DEFAULT_MAX_BYTES)
    _pool.clear_buffer_pool()
