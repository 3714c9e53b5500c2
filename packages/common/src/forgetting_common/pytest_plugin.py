"""A pytest plugin every package's tests get (registered through the ``pytest11`` entry point).

``forgetting_data``: the real-data root named by ``FORGETTING_DATA``; a test that asks for it
is skipped, with the reason, where the variable is unset or lacks what the test needs::

    def test_real_mnist(forgetting_data):
        root = forgetting_data("MNIST/raw")   # skips unless $FORGETTING_DATA/MNIST/raw exists
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from forgetting_common.data.roots import DATA_ENV


@pytest.fixture
def forgetting_data() -> Callable[..., Path]:
    """A function ``(*needed) -> root``: skip unless ``$FORGETTING_DATA`` holds each needed path."""

    def require(*needed: str) -> Path:
        value = os.environ.get(DATA_ENV)
        if not value:
            pytest.skip(f"{DATA_ENV} is unset: no real datasets to read (set it to the shared data folder)")
        root = Path(value)
        for part in needed:
            if not (root / part).exists():
                pytest.skip(f"{DATA_ENV}={root} holds no {part}")
        return root

    return require
