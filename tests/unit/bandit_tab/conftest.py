"""The bandit tab tests' host: the toy host on a random tiny model, shared by a module's tests."""

from __future__ import annotations

import pytest

from lib_ext.toyworld.host import ToyHost


@pytest.fixture(scope="module")
def host():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is much faster than two fighting on a busy machine
    yield ToyHost.random(seed=0)
    torch.set_num_threads(threads)
