"""GPU data parallelism across processes through NCCL: two MPI ranks, one GPU each, train
like one process on one GPU with the same minibatch. Runs where two GPUs, NCCL and mpirun
are present; skips with the reason elsewhere (the NCCL path itself is compiled in CI)."""
import os

import numpy as np
import pytest

from ccn import _core
from ccn.cli import convnet_main
import test_mpi

pytestmark = [
    pytest.mark.skipif(not _core.has_nccl, reason="this build has no NCCL path (CUDA and nccl.h at build time)"),
    pytest.mark.skipif(_core.cuda_device_count() < 2, reason="needs two visible GPUs"),
    pytest.mark.skipif(test_mpi.MPIRUN is None, reason="needs mpi4py and mpirun (pip install 'ccn[mpi]')"),
]


def test_two_gpus_train_like_one(tmp_path):
    _, args = test_mpi.prepare(tmp_path)
    args = [a if not a.startswith("--gpu") else "--gpu=0" for a in args]
    assert convnet_main(args + [f"--save-path={tmp_path / 'one'}", "--max-batches=3"]) == 0
    one, _ = test_mpi.params_of(tmp_path / "one")
    done = test_mpi.mpi(2, args + [f"--save-path={tmp_path / 'two'}", "--max-batches=3"])
    assert done.returncode == 0, done.stderr[-2000:]
    two, _ = test_mpi.params_of(tmp_path / "two")
    test_mpi.assert_same_params(one, two)
