"""Data parallelism across processes: `mpirun -np 2 python convnet.py` trains like one
process with the same minibatch size (each rank takes half of every minibatch, gradients
summed over the ranks), resumes with another number of ranks, and stops every rank with
one line when the ranks disagree or one of them fails. Skipped without mpi4py and mpirun
(pip install 'ccn[mpi]')."""
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from ccn import checkpoint
from ccn.cli import convnet_main
from trainer_fixtures import write_cifar, write_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpirun():
    for candidate in (os.path.join(sysconfig.get_path("scripts"), "mpirun"), shutil.which("mpirun")):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


try:
    import mpi4py  # noqa: F401
    MPIRUN = _mpirun()
except ImportError:
    MPIRUN = None
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="mpi4py and mpirun are not installed (pip install 'ccn[mpi]')")

NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=3
filters=8
filterSize=5
padding=2
stride=2
initW=0.01
neuron=relu
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
[fc32]
type=fc
inputs=pool1
outputs=32
initW=0.01
neuron=relu
[drop]
type=dropout
inputs=fc32
[fc10]
type=fc
inputs=drop
outputs=10
initW=0.01
[probs]
type=softmax
inputs=fc10
[logprob]
type=cost.logreg
inputs=labels,probs
"""
PARAMS = "".join(f"[{name}]\nepsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0.0005\n"
                 for name in ("conv1", "fc32", "fc10"))


def prepare(tmp_path):
    """CIFAR-format data of 128 cases per batch and the net; returns (tmp_path, convnet.py args)."""
    cifar = write_cifar(str(tmp_path / "cifar"), cases_per_batch=128)
    layers, params = write_net(tmp_path, NET, PARAMS)
    return tmp_path, [f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}",
                      "--data-provider=cifar", "--train-range=1-5", "--test-range=6", "--mini=128",
                      "--gpu=cpu", "--seed=5", "--epochs=1"]


@pytest.fixture
def setup(tmp_path):
    return prepare(tmp_path)


def mpi(ranks, args=None, timeout=240):
    """Runs convnet.py under mpirun: ranks is a count, or a list of argument lists (one rank each)."""
    per_rank = [args] * ranks if isinstance(ranks, int) else ranks
    command = [MPIRUN, "--allow-run-as-root", "--oversubscribe"]
    for i, rank_args in enumerate(per_rank):
        command += ([":"] if i else []) + ["-np", "1", sys.executable, os.path.join(REPO, "convnet.py"), *rank_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def params_of(run_root):
    (run_dir,) = os.listdir(run_root)
    state, _, _ = checkpoint.load(os.path.join(run_root, run_dir))
    return state, os.path.join(run_root, run_dir)


def assert_same_params(a, b):
    for name in a["params"]:
        for wa, wb in zip(a["params"][name]["weights"], b["params"][name]["weights"]):
            np.testing.assert_allclose(wb, wa, rtol=1e-4, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(b["params"][name]["biases"], a["params"][name]["biases"], rtol=1e-4, atol=1e-7)


def test_two_ranks_train_like_one_and_resume_with_one(setup):
    tmp_path, args = setup
    assert convnet_main(args + [f"--save-path={tmp_path / 'one'}", "--max-batches=4"]) == 0
    one, _ = params_of(tmp_path / "one")

    done = mpi(2, args + [f"--save-path={tmp_path / 'two'}", "--max-batches=3"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "x 2 MPI ranks" in done.stdout and done.stdout.count("convnet: training on") == 1  # rank 0 speaks
    assert len(os.listdir(tmp_path / "two")) == 1  # one run directory: rank 0 writes
    two, run_dir = params_of(tmp_path / "two")
    for (_, _, costs_one, n_one), (_, _, costs_two, n_two) in zip(one["train_outputs"], two["train_outputs"]):
        assert n_one == n_two == 128
        np.testing.assert_allclose(costs_two["logprob"][0], costs_one["logprob"][0], rtol=1e-5)

    # the 2-rank checkpoint resumes in one process: 3 + 1 batches == 4 batches in one
    assert convnet_main(["-f", run_dir, "--max-batches=4"]) == 0
    resumed, _ = params_of(tmp_path / "two")
    assert resumed["batches_done"] == one["batches_done"] == 4
    assert_same_params(one, resumed)


def test_ranks_that_disagree_stop_at_start(setup):
    tmp_path, args = setup
    save = f"--save-path={tmp_path / 'runs'}"
    done = mpi([args + [save], args + [save, "--seed=6"]])
    assert done.returncode != 0
    assert "MPI ranks disagree on the options" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_failing_rank_stops_the_whole_job(setup):
    tmp_path, args = setup
    save = f"--save-path={tmp_path / 'runs'}"
    broken = [a if not a.startswith("--layer-params") else "--layer-params=/nonexistent.cfg" for a in args]
    done = mpi([args + [save], broken + [save]], timeout=120)  # rank 0 would wait for rank 1 forever
    assert done.returncode != 0
    assert "convnet: error (rank 1)" in done.stderr and "nonexistent.cfg" in done.stderr
    assert "Traceback" not in done.stderr
