#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the layer-file parser, the checkpoint
loader and the conv bindings. Each target may only return or raise the errors the project
reports in one line (ValueError and its subclasses, OSError, and for the bindings TypeError
and RuntimeError); anything else, a crash or a hang is a finding, to be made a test.

    pip install atheris
    CCN_BUILD_DIR=build/dev PYTHONPATH=python python tools/fuzz_atheris.py layers -max_total_time=60
    ... checkpoint -max_total_time=60 / ... bindings -max_total_time=60 -timeout=20

Arguments after the target name go to libFuzzer (-runs, -max_total_time, -timeout, a corpus
directory, a crash file to replay).
"""
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import numpy as np
    from ccn import _core, checkpoint, config

TMP = tempfile.mkdtemp(prefix="ccn-fuzz-")
LAYERS = os.path.join(TMP, "layers.cfg")
PARAMS = os.path.join(TMP, "params.cfg")
DEFAULT_PARAMS = b"[fc10]\nepsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0.0005\n"
DEFAULT_LAYERS = (b"[data]\ntype=data\ndataIdx=0\n\n[labels]\ntype=data\ndataIdx=1\n\n"
                  b"[conv1]\ntype=conv\ninputs=data\nchannels=3\nfilters=8\nfilterSize=5\npadding=2\n\n"
                  b"[fc10]\ntype=fc\ninputs=conv1\noutputs=10\n\n[probs]\ntype=softmax\ninputs=fc10\n\n"
                  b"[logprob]\ntype=cost.logreg\ninputs=labels,probs\n")


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def fuzz_layers(data):
    """Half the inputs are a layer-definition file, half a layer-params file."""
    fuzzed, rest = data[1:], data[:1]
    params_side = bool(rest and rest[0] & 1)
    _write(LAYERS, DEFAULT_LAYERS if params_side else fuzzed)
    _write(PARAMS, fuzzed if params_side else DEFAULT_PARAMS)
    try:
        config.load_layers(LAYERS, PARAMS, {0: (3, 32, 32), 1: 1})
    except ValueError:
        pass


def fuzz_checkpoint(data):
    path = os.path.join(TMP, "1.1")
    _write(path, data)
    try:
        checkpoint.load(path)
    except ValueError:
        pass


def fuzz_bindings(data):
    fdp = atheris.FuzzedDataProvider(data)
    ints = [fdp.ConsumeIntInRange(-4, 70000) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 9) for _ in range(9)]
    shape = [fdp.ConsumeIntInRange(0, 64) for _ in range(6)]
    try:
        g = _core.ConvGeometry(channels=ints[0], img_size_y=ints[1], img_size_x=ints[2], filter_size=ints[3],
                               num_filters=ints[4], padding=ints[5], stride=ints[6], groups=ints[7] or 1,
                               local=bool(ints[8] & 1))
        images = np.ones((shape[0], shape[1] or 1), np.float32)
        filters = np.ones((shape[2], shape[3]), np.float32)
        targets = np.ones((shape[4], shape[5] or 1), np.float32)
        op = (_core.filter_acts, _core.img_acts, _core.weight_acts)[ints[8] % 3]
        op(images, filters, targets, g)
    except (ValueError, TypeError, RuntimeError):
        pass


def _checkpoint_seed():
    state = {"op": {"mini": 8}, "layers": [{"name": "data", "type": "data"},
                                           {"name": "fc", "type": "fc", "inputs": ["data"], "outputs": 2}],
             "params": {"fc": {"weights": [np.ones((3, 2), np.float32)], "biases": np.zeros(2, np.float32)}},
             "rng_counter": 0, "epoch": 1, "batchnum": 1, "batches_done": 1, "train_outputs": [], "test_outputs": []}
    return checkpoint.encode(state)


SEEDS = {"layers": lambda: b"\0" + DEFAULT_LAYERS, "checkpoint": _checkpoint_seed, "bindings": lambda: bytes(range(64))}
TARGETS = {"layers": fuzz_layers, "checkpoint": fuzz_checkpoint, "bindings": fuzz_bindings}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        print(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]", file=sys.stderr)
        return 2
    target, args = TARGETS[sys.argv[1]], sys.argv[2:]
    if not any(not a.startswith("-") for a in args):  # no corpus given: start from valid inputs
        corpus = os.path.join(TMP, "corpus")
        os.makedirs(corpus)
        _write(os.path.join(corpus, "seed"), SEEDS[sys.argv[1]]())
        args.append(corpus)
    atheris.Setup([sys.argv[0]] + args, target)
    atheris.Fuzz()


if __name__ == "__main__":
    sys.exit(main())
