"""Shared fixtures of the unit tier."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the models here are tiny, and on a busy 2-core machine a second spinning OpenMP thread
    made small convolutions many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
