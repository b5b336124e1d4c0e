#!/usr/bin/env python3
"""One training step of a net placed two ways, compared weight by weight: a model-parallel
split (the layer file's gpu= placement over --devices) against the same net on one device
(--against), from the same seed and batch.

    CCN_BUILD_DIR=build/emu PYTHONPATH=python python benchmarks/split_check.py \\
        --layer-def=layers/alexnet-2gpu.cfg --layer-params=layers/alexnet-2gpu-params.cfg \\
        --devices=0,0 --against=0 --batch=8

Prints, per weight matrix (worst first), the largest difference over the largest update of
the step and over the largest weight, and how many matrices came out bit-identical. The
engine draws the initial weights from the seed on the host, so both placements start equal.
"""
import argparse
import time

import numpy as np

from ccn import _core, config


def one_step(layers, devices, batch, seed):
    """(initial, final) {name: weight arrays} after one training step on `devices`."""
    placed = layers if len(devices) > 1 else [dict(layer, gpu=0) for layer in layers]
    net = _core.Net(placed, devices, seed)
    config.set_learning_params(net, placed, 0.0)
    initial = {name: net.get_params(name) for name in net.weight_layer_names()}
    start = time.time()
    net.train_step(batch)
    print(f"{','.join(devices)}: one step in {time.time() - start:.1f} s", flush=True)
    final = {name: net.get_params(name) for name in net.weight_layer_names()}
    return initial, final


def matrices(params):
    for name, p in params.items():
        for i, w in enumerate(p["weights"]):
            yield f"{name}.weights[{i}]", w
        yield f"{name}.biases", p["biases"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer-def", required=True)
    ap.add_argument("--layer-params", required=True)
    ap.add_argument("--devices", required=True, help="the split, e.g. 0,0 or cpu,cpu")
    ap.add_argument("--against", default="cpu", help="the one device to compare with")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224, help="image side (3 channels)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    layers = config.load_layers(args.layer_def, args.layer_params, {0: (3, args.size, args.size), 1: 1})
    rng = np.random.default_rng(1)
    batch = [rng.standard_normal((3 * args.size * args.size, args.batch)).astype(np.float32),
             rng.integers(0, args.classes, (1, args.batch)).astype(np.float32)]
    init_a, final_a = one_step(layers, args.devices.split(","), batch, args.seed)
    init_b, final_b = one_step(layers, [args.against], batch, args.seed)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(matrices(init_a), matrices(init_b)))
    rows, identical = [], 0
    for (key, a), (_, b), (_, w0) in zip(matrices(final_a), matrices(final_b), matrices(init_b)):
        a, b, w0 = (x.astype(np.float64) for x in (a, b, w0))
        identical += np.array_equal(a, b)
        diff = np.abs(a - b).max()
        rows.append((diff / max(np.abs(b - w0).max(), 1e-30), diff / max(np.abs(b).max(), 1e-30), key))
    rows.sort(reverse=True)
    print(f"{identical} of {len(rows)} matrices bit-identical; worst:")
    for over_update, over_weight, key in rows[:5]:
        print(f"  {key:<22} max|diff| / max|update| {over_update:.2e}   max|diff| / max|w| {over_weight:.2e}")


if __name__ == "__main__":
    main()
