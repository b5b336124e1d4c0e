#!/usr/bin/env python3
"""Time to a target test accuracy on the CPU: our engine and the same net in PyTorch, with
the same data (the fashion-mnist provider), initial weight scales, minibatch, learning-rate
schedule, momentum, weight decay and dropout, trained one after the other.

    python benchmarks/time_to_accuracy.py --target=0.92 --max-epochs=20

cuda-convnet's rule  inc = mom*inc + eps*mean_grad - wc*eps*w;  w += inc  is PyTorch's SGD
with lr = eps, momentum = mom, weight_decay = wc (on weights; biases have no decay and their
own eps), so both follow the same trajectory in exact arithmetic. Each epoch ends with a test
on the 10,000 test images; the clock counts training and testing, not data loading.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import build_torch  # noqa: E402

from ccn import _core, config, data  # noqa: E402


def batches(dp):
    """All cases of one pass over the provider's batch range, as (images, labels) arrays."""
    xs, ys = [], []
    for _ in dp.batch_range:
        _, _, (x, y) = dp.get_next_batch()
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)


def minibatches(x, y, mini):
    for s in range(0, x.shape[1], mini):
        yield np.ascontiguousarray(x[:, s:s + mini]), np.ascontiguousarray(y[:, s:s + mini])


def run_ours(layers, train, test, args):
    net = _core.Net(layers, ["cpu"], args.seed)

    def train_epoch(x, y, progress_at):
        for i, (xb, yb) in enumerate(minibatches(x, y, args.mini)):
            config.set_learning_params(net, layers, progress_at(i))
            net.train_step([xb, yb])

    def test_error(x, y):
        wrong = 0.0
        for xb, yb in minibatches(x, y, args.mini):
            net.fprop([xb, yb], False)
            wrong += net.costs()["logprob"][1]
        return wrong / x.shape[1]

    return loop("ours", train, test, train_epoch, test_error, args)


def run_torch(layers, train, test, args):
    import torch
    import torch.nn.functional as F
    torch.manual_seed(args.seed)
    torch.set_num_threads(_core.num_threads())
    model = build_torch(layers, torch)
    by_name = {layer["name"]: layer for layer in layers}
    groups = []
    with torch.no_grad():
        for name, mod in model.mods.items():
            layer = by_name[name]
            std = layer["initW"][0] if isinstance(layer["initW"], list) else layer["initW"]
            mod.weight.normal_(0, std)
            mod.bias.fill_(layer.get("initB", 0.0))
            groups.append({"params": [mod.weight], "layer": layer, "kind": "W", "weight_decay": layer["wc"][0],
                           "momentum": layer["momW"][0], "lr": 0.0})
            groups.append({"params": [mod.bias], "layer": layer, "kind": "B", "weight_decay": 0.0,
                           "momentum": layer["momB"], "lr": 0.0})
    opt = torch.optim.SGD(groups, lr=0.0)

    def train_epoch(x, y, progress_at):
        model.train()
        for i, (xb, yb) in enumerate(minibatches(x, y, args.mini)):
            for g in opt.param_groups:
                sched = g["layer"]["epsW"][0] if g["kind"] == "W" else g["layer"]["epsB"]
                g["lr"] = config.schedule_value(sched, progress_at(i))
            xt = torch.from_numpy(xb.T.reshape(-1, *args.dims))
            yt = torch.from_numpy(yb[0].astype(np.int64))
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xt), yt).backward()
            opt.step()

    def test_error(x, y):
        model.eval()
        wrong = 0
        with torch.no_grad():
            for xb, yb in minibatches(x, y, args.mini):
                pred = model(torch.from_numpy(xb.T.reshape(-1, *args.dims))).argmax(1).numpy()
                wrong += int((pred != yb[0].astype(np.int64)).sum())
        return wrong / x.shape[1]

    return loop("torch", train, test, train_epoch, test_error, args)


def loop(engine, train, test, train_epoch, test_error, args):
    (x, y), (tx, ty) = train, test
    steps_per_epoch = -(-x.shape[1] // args.mini)
    total = steps_per_epoch * args.max_epochs
    clock, reached = 0.0, None
    shuffle = np.random.default_rng(args.seed)
    for epoch in range(1, args.max_epochs + 1):
        order = shuffle.permutation(x.shape[1])  # the same order for both engines
        xe, ye = x[:, order], y[:, order]
        t0 = time.perf_counter()
        train_epoch(xe, ye, lambda i: ((epoch - 1) * steps_per_epoch + i) / total)
        err = test_error(tx, ty)
        clock += time.perf_counter() - t0
        print(f"{engine} epoch {epoch:2d}: test error {err:.4f}  ({clock:7.1f} s)", flush=True)
        if reached is None and 1 - err >= args.target:
            reached = (epoch, clock)
            break
    return reached


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layer-def", default="layers.cfg")
    p.add_argument("--layer-params", default="layer-params.cfg")
    p.add_argument("--target", type=float, default=0.92)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--mini", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", default="ours,torch")
    args = p.parse_args(argv)
    train_dp = data.get_provider("fashion-mnist", None, None, test=False, seed=args.seed, shuffle=False)
    test_dp = data.get_provider("fashion-mnist", None, None, test=True, seed=args.seed, shuffle=False)
    args.dims = train_dp.get_data_dims(0)
    layers = config.load_layers(args.layer_def, args.layer_params, {0: args.dims, 1: 1})
    train, test = batches(train_dp), batches(test_dp)
    train_dp.close()
    test_dp.close()
    results = {}
    for engine in args.engines.split(","):
        results[engine] = (run_ours if engine == "ours" else run_torch)(layers, train, test, args)
    print(f"\n| engine | epochs to {args.target:.0%} test accuracy | seconds |\n|---|---|---|")
    for engine, r in results.items():
        print(f"| {engine} | {r[0] if r else f'not within {args.max_epochs}'} | {f'{r[1]:.0f}' if r else '-'} |")


if __name__ == "__main__":
    main()
