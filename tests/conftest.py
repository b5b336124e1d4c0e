"""Shared fixtures: every op test runs on the CPU and, when a GPU is present, on CUDA."""
import zlib

import numpy as np
import pytest

from ccn import _core

DEVICES = ["cpu"] + (["cuda:0"] if _core.has_cuda_backend and _core.cuda_device_count() > 0 else [])


@pytest.fixture(params=["cpu", "cuda:0"])
def device(request):
    """The device an op test runs on; cuda skips (with a reason) where there is no GPU."""
    if request.param not in DEVICES:
        reason = "no CUDA backend in this build" if not _core.has_cuda_backend else "no GPU visible"
        pytest.skip(reason)
    return request.param


@pytest.fixture
def rng(request):
    """A NumPy generator seeded from the test's name, so failures reproduce."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
