#!/usr/bin/env python3
"""End-to-end training speed of a layer file: our engine against the same net in PyTorch,
in the same run, on the same device, with the same batch size and precision (fp32).

    python benchmarks/bench_train.py --layer-def=layers.cfg --layer-params=layer-params.cfg --batch=128
    python benchmarks/bench_train.py --layer-def=layers/alexnet.cfg --layer-params=layers/alexnet-params.cfg --batch=32

Both train on random data of the net's input size (a training step: forward, backward,
SGD-with-momentum update). Each engine runs in its own child process so that peak memory
(max resident set on the CPU, allocator peak on CUDA) is its own. Reported: the median
images/s over --reps timed repetitions of --steps steps each, and the ratio ours/torch.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load_layers(args):
    from ccn import config
    dims = tuple(int(x) for x in args.data_dims.split(","))
    return config.load_layers(args.layer_def, args.layer_params, {0: dims, 1: 1}), dims


def num_classes(layers):
    by_name = {layer["name"]: layer for layer in layers}
    cost = next(layer for layer in layers if layer["type"] == "cost.logreg")
    return by_name[cost["inputs"][1]]["outputs"]


def run_ours(args):
    from ccn import _core, config
    layers, dims = load_layers(args)
    devices = ["cpu" if args.device == "cpu" else "0"] * (1 + max(layer.get("gpu", 0) for layer in layers))
    net = _core.Net(layers, devices, 0)
    rng = np.random.default_rng(0)
    config.set_learning_params(net, layers, 0.0)
    x = rng.standard_normal((int(np.prod(dims)), args.batch)).astype(np.float32)
    y = rng.integers(0, num_classes(layers), (1, args.batch)).astype(np.float32)

    def step():
        net.train_step([x, y])

    def sync():
        _core.synchronize("cpu" if args.device == "cpu" else "cuda:0")

    times = timed(step, sync, args)
    peak = _core.allocator_stats("cpu" if args.device == "cpu" else "cuda:0")["peak_bytes_in_use"]
    return times, peak


def build_torch(layers, torch):
    """The layer list as a torch module graph (same ops: conv, ceil-mode pools, LRN, fc, dropout)."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = nn.ModuleDict()
            for layer in layers:
                t, name = layer["type"], layer["name"]
                if t == "conv":
                    self.mods[name] = nn.Conv2d(layer["channels"], layer["filters"], layer["filterSize"],
                                                layer["stride"], layer["padding"], groups=layer["groups"])
                elif t == "fc":
                    ins = sum(by_name[i]["outputs"] for i in layer["inputs"])
                    self.mods[name] = nn.Linear(ins, layer["outputs"])

        def forward(self, x):
            acts = {}
            for layer in layers:
                t, name, ins = layer["type"], layer["name"], [acts.get(i) for i in layer["inputs"]]
                if t == "data":
                    acts[name] = x if layer["dataIdx"] == 0 else None
                elif t == "conv":
                    acts[name] = self.mods[name](ins[0])
                elif t == "fc":
                    acts[name] = self.mods[name](torch.cat([i.flatten(1) for i in ins], 1))
                elif t == "neuron":
                    acts[name] = F.relu(ins[0])
                elif t == "pool":
                    fn = F.max_pool2d if layer["pool"] == "max" else F.avg_pool2d
                    acts[name] = fn(ins[0], layer["sizeX"], layer["stride"], ceil_mode=True)
                elif t in ("cmrnorm", "rnorm"):
                    acts[name] = F.local_response_norm(ins[0], layer["size"], alpha=layer["scale"] * layer["size"],
                                                       beta=layer["pow"], k=layer.get("minDiv", 1.0))
                elif t == "dropout":
                    acts[name] = F.dropout(ins[0], 1 - layer["keep"], self.training)
                elif t == "concat":
                    acts[name] = torch.cat(ins, 1)
                elif t == "softmax":
                    acts[name] = ins[0]  # logits: cross_entropy applies log-softmax
                elif t == "cost.logreg":
                    acts["__logits__"] = acts[layer["inputs"][1]]
            return acts["__logits__"]

    by_name = {layer["name"]: layer for layer in layers}
    return Net()


def run_torch(args):
    import torch
    import torch.nn.functional as F
    layers, dims = load_layers(args)
    device = torch.device("cpu" if args.device == "cpu" else "cuda")
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("CCN_NUM_THREADS", os.cpu_count())))
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    model = build_torch(layers, torch).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, *dims, device=device)
    y = torch.randint(0, num_classes(layers), (args.batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    def sync():
        if args.device != "cpu":
            torch.cuda.synchronize()

    times = timed(step, sync, args)
    peak = torch.cuda.max_memory_allocated() if args.device != "cpu" else 0
    return times, peak


def timed(step, sync, args):
    for _ in range(args.warmup):
        step()
    sync()
    rates = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.steps * args.batch / (time.perf_counter() - t0))
    return rates


def child(args):
    rates, peak = (run_ours if args.engine == "ours" else run_torch)(args)
    if args.device == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rates": rates, "peak": peak}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer-def", default="layers.cfg")
    p.add_argument("--layer-params", default="layer-params.cfg")
    p.add_argument("--data-dims", default=None, help="C,H,W of the input (default: 1,28,28, or 3,224,224 for alexnet files)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="training steps per repetition")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (the median is reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--engine", choices=["ours", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.data_dims is None:
        args.data_dims = "3,224,224" if "alexnet" in os.path.basename(args.layer_def) else "1,28,28"
    if args.engine:
        return child(args)
    results = {}
    for engine in ("ours", "torch"):
        cmd = [sys.executable, os.path.abspath(__file__), f"--engine={engine}"] + [a for a in (argv or sys.argv[1:])]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            if engine == "torch" and "No module named 'torch'" in out.stderr:
                print("torch is not installed: PyTorch column skipped")
                continue
            sys.exit(f"bench_train: the {engine} run failed:\n{out.stderr}")
        results[engine] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"# bench_train: {args.layer_def} device={args.device} batch={args.batch} "
          f"steps={args.steps} reps={args.reps}")
    for engine, r in results.items():
        med = statistics.median(r["rates"])
        print(f"{engine:<6} {med:9.1f} img/s  (reps: {', '.join(f'{x:.0f}' for x in r['rates'])})  "
              f"peak memory {r['peak'] / 2**20:.0f} MiB")
    if len(results) == 2:
        ratio = statistics.median(results["ours"]["rates"]) / statistics.median(results["torch"]["rates"])
        print(f"ratio ours/torch: {ratio:.2f}")


if __name__ == "__main__":
    main()
