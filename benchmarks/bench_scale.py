#!/usr/bin/env python3
"""Data-parallel scaling: measured on this machine, and modelled for clusters.

    python benchmarks/bench_scale.py --layer-def=layers.cfg --layer-params=layer-params.cfg --batch=128
    python benchmarks/bench_scale.py --model-only --layer-def=layers/alexnet.cfg \
        --layer-params=layers/alexnet-params.cfg --data-dims=3,224,224

Measured: training steps (forward, backward, gradient sum, update) of a layer file on
random data with the same global minibatch, as 1 process x 2 engine threads and as
2 MPI ranks x 1 thread each (mpirun; each rank takes half of every minibatch and the
gradients are summed with MPI all-reduce, as convnet.py does).

Modelled: for the same net at --per-gpu images per GPU, the bytes all-reduced per step
(every weight and bias gradient, fp32), the time of a ring all-reduce of them,
2 (p - 1) / p * bytes / bandwidth + 2 (p - 1) * latency, on p GPUs over each link, set against
the step's compute time (the net's forward + backward FLOPs at a stated fraction of the
GPU's fp32 peak). Without overlap a step costs compute + comm; with the all-reduce of each
layer started as soon as its gradient is ready, only the part of comm that does not fit
under the rest of the backward pass (about 2/3 of the compute) is added.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Links: (name, bytes/s per direction as NCCL's ring reaches it, latency per step in s)
LINKS = [("NVLink (H100, NVSwitch)", 360e9, 5e-6), ("100 Gb/s Ethernet/IB", 11e9, 10e-6)]
GPU_PEAK_FP32 = 67e12   # H100 SXM, fp32 without tensor cores
COMPUTE_EFFICIENCY = 0.5  # fraction of that peak a well-tuned fp32 conv net step reaches


def load(args):
    from ccn import config
    dims = tuple(int(x) for x in args.data_dims.split(","))
    layers = config.load_layers(args.layer_def, args.layer_params, {0: dims, 1: 1})
    for layer in layers:  # one device: the model places nothing
        layer["gpu"] = 0
        layer.pop("replicas", None)
    return layers, dims


def worker(args):
    """One process of a measurement: steps on random data, img/s printed as JSON by rank 0."""
    from ccn import _core, config, distributed
    world = distributed.world()
    _core.set_num_threads(args.threads)
    layers, dims = load(args)
    net = _core.Net(layers, ["cpu"], 0)
    net.set_shard(world.rank, world.size)
    config.set_learning_params(net, layers, 0.0)
    rng = np.random.default_rng(0)
    classes = next(l for l in layers if l["type"] == "cost.logreg")
    classes = {l["name"]: l for l in layers}[classes["inputs"][1]]["outputs"]
    x = rng.standard_normal((int(np.prod(dims)), args.batch)).astype(np.float32)
    y = rng.integers(0, classes, (1, args.batch)).astype(np.float32)
    net.stage_batch([x, y])
    net.begin_batch()
    parallel = distributed.DataParallel(net, ["cpu"], world)

    def step():
        parallel.train_slice(0, args.batch)

    for _ in range(2):
        step()
    rates = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        rates.append(args.steps * args.batch / (time.perf_counter() - t0))
    if world.rank == 0:
        print(json.dumps({"rates": rates}))


def measure(args, ranks, threads):
    command = [sys.executable, os.path.abspath(__file__), "--worker", f"--threads={threads}",
               f"--layer-def={args.layer_def}", f"--layer-params={args.layer_params}", f"--batch={args.batch}",
               f"--data-dims={args.data_dims}", f"--steps={args.steps}", f"--reps={args.reps}"]
    if ranks > 1:
        mpirun = os.path.join(sysconfig.get_path("scripts"), "mpirun")
        mpirun = mpirun if os.path.isfile(mpirun) else shutil.which("mpirun")
        if mpirun is None:
            return None
        command = [mpirun, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + command
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["rates"]


def flops_per_image(layers):
    """Forward multiply-adds x 2 of the conv, local and fc layers; a training step is ~3x."""
    by_name = {layer["name"]: layer for layer in layers}
    total = 0
    for layer in layers:
        if layer["type"] in ("conv", "local"):
            filter_rows = layer["filterChannels"] * layer["filterSize"] ** 2
            total += 2 * filter_rows * layer["filters"] * layer["modulesY"] * layer["modulesX"]
        elif layer["type"] == "fc":
            total += 2 * sum(by_name[i]["outputs"] for i in layer["inputs"]) * layer["outputs"]
    return total


def gradient_bytes(layers):
    from ccn import _core
    net = _core.Net(layers, ["cpu"], 0)
    count = 0
    for name in net.weight_layer_names():
        params = net.get_params(name)
        count += sum(w.size for w in params["weights"]) + params["biases"].size
    return 4 * count


def model(args):
    layers, _ = load(args)
    nbytes = gradient_bytes(layers)
    step_flops = 3 * flops_per_image(layers) * args.per_gpu
    compute = step_flops / (GPU_PEAK_FP32 * COMPUTE_EFFICIENCY)
    backward = compute * 2 / 3
    print(f"\nmodel: {os.path.basename(args.layer_def)} at {args.per_gpu} images per GPU: "
          f"{nbytes / 1e6:.1f} MB of gradients all-reduced per step; compute {step_flops / 1e9:.0f} GFLOP "
          f"= {compute * 1e3:.2f} ms at {COMPUTE_EFFICIENCY:.0%} of {GPU_PEAK_FP32 / 1e12:.0f} TFLOP/s fp32")
    print("| GPUs | link | all-reduce ms | step ms, no overlap | efficiency | step ms, overlapped | efficiency |")
    print("|---|---|---|---|---|---|---|")
    for p in (8, 64):
        for name, bandwidth, latency in LINKS:
            comm = 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency
            plain = compute + comm
            overlapped = compute + max(0.0, comm - backward)
            print(f"| {p} | {name} | {comm * 1e3:.2f} | {plain * 1e3:.2f} | {compute / plain:.0%} | "
                  f"{overlapped * 1e3:.2f} | {compute / overlapped:.0%} |")
    # where communication starts to dominate: comm(p) = compute, p -> large: 2 * bytes / bw
    for name, bandwidth, _ in LINKS:
        ratio = 2 * nbytes / bandwidth / compute
        print(f"{name}: the bandwidth term of a ring all-reduce alone costs {ratio:.2f}x a step's compute at large p "
              f"({'communication dominates' if ratio > 1 else 'compute dominates'}; "
              f"{'overlap hides it' if ratio * compute < backward else 'overlap cannot hide it all'})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer-def", default=os.path.join(REPO, "layers.cfg"))
    p.add_argument("--layer-params", default=os.path.join(REPO, "layer-params.cfg"))
    p.add_argument("--data-dims", default="1,28,28")
    p.add_argument("--batch", type=int, default=128, help="global minibatch (split over the ranks)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--per-gpu", type=int, default=128, help="images per GPU for the model")
    p.add_argument("--model-only", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if not args.model_only:
        print(f"# bench_scale: {os.path.basename(args.layer_def)} global batch {args.batch}, "
              f"{args.steps} steps x {args.reps} reps, on {os.cpu_count()} cores")
        one = measure(args, 1, 2)
        two = measure(args, 2, 1)
        print(f"1 rank x 2 threads: {np.median(one):8.1f} img/s  (reps: {', '.join(f'{r:.0f}' for r in one)})")
        if two is None:
            print("2 ranks x 1 thread: skipped (no mpirun: pip install 'ccn[mpi]')")
        else:
            print(f"2 ranks x 1 thread: {np.median(two):8.1f} img/s  (reps: {', '.join(f'{r:.0f}' for r in two)})  "
                  f"ratio {np.median(two) / np.median(one):.2f}")
    model(args)


if __name__ == "__main__":
    main()
