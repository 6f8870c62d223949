"""Fixtures shared by the tiny-model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread while a module's tiny-model tests run.

    The tiny model's matmuls are far too small to gain from threads, and on a busy 2-core
    machine two threads spin against other processes: generation gets ~20x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
