#!/usr/bin/env python3
"""Runs every layer-definition / layer-params pair under a folder through convnet.py.

    python tools/compat_check.py --corpus DIR [--mini 8] [--timeout 600]      # installed ccn
    CCN_BUILD_DIR=build/dev PYTHONPATH=python python tools/compat_check.py --corpus DIR   # a dev build

Pairs follow cuda-convnet's naming: ``layers<X>.cfg`` goes with ``layer-params<X>.cfg`` and
with every ``layer-params<X>-<variant>.cfg`` beside it. For each pair the script finds the
net's input size by parsing it at the usual sizes (32 and 24 for CIFAR nets, 224 and 227 for
ImageNet nets, else 32), writes tiny data in the format the net needs (16 CIFAR images
per batch in cuda-convnet's own batch layout for 32 or 24 pixel nets, read whole or as
centre/random crops; the dummy provider at the net's size otherwise, dummy-lr-N with its
class tree for nets with a treefc layer, one-hot label matrices of the right rows for nets
that compare labels with an output layer), trains one data
batch of two minibatches on the CPU (one CPU device per gpu= index the net uses), tests
once, and prints one row per pair: pair, parsed, trained (yes; NaN: it ran but its
learning rates diverged on this data; n/a: a failure the originals share (their parsers
reject the file, their released code cannot run it, or its init functions need a module
the corpus does not hold, as the 2012
release's initw.py, which loads a checkpoint it does not include), a definition without a
params file, or replicas), test error, first error line. A net that parses at no candidate
size shows the parse error of the size that got furthest (an error of the params file, else
the one naming the latest section). The exit status is 0 when no pair failed otherwise.
"""
import argparse
import configparser
import os
import pickle
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATE_SIZES = (32, 24, 224, 227)
CASES_PER_BATCH = 16
ERROR_RE = re.compile(r"test \S+: cost [0-9.]+, error ([0-9.]+)")  # the first epoch line's test error


def find_pairs(corpus):
    """[(layers path, layer-params path or None)], by cuda-convnet's file naming: a params
    file goes with the definition whose suffix is the longest prefix of its own."""
    pairs = []
    for folder, _, files in sorted(os.walk(corpus)):
        definitions = {m.group(1): name for name in files if (m := re.fullmatch(r"layers(.*)\.cfg", name))}
        paired = {suffix: [] for suffix in definitions}
        for name in sorted(files):
            match = re.fullmatch(r"layer-params(.*)\.cfg", name)
            if not match:
                continue
            owners = [s for s in definitions if match.group(1) == s or match.group(1).startswith(s + "-")]
            if owners:
                paired[max(owners, key=len)].append(name)
        for suffix, name in sorted(definitions.items(), key=lambda item: item[1]):
            for params in paired[suffix] or [None]:
                pairs.append((os.path.join(folder, name), params and os.path.join(folder, params)))
    return pairs


def read_sections(path):
    """The sections of a layer file as Python's ConfigParser reads them (duplicates merged);
    no sections when it cannot be read as INI at all."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path or [])
    except configparser.Error:
        return configparser.RawConfigParser(strict=False)
    return parser


def rejected_by_originals(layer_def, layer_params=None):
    """Why cuda-convnet's own parsers refused this pair (None when they did not)."""
    from ccn import config
    parser = read_sections(layer_def)
    for section in parser.sections():
        kind = parser.get(section, "type", fallback="")
        if kind in ("rnorm", "cnorm", "cmrnorm") and not parser.has_option(section, "size"):
            return f"[{section}] ({kind}) has no size= (every version's norm parser requires it)"
        if kind == "pool" and parser.get(section, "pool", fallback="").strip() == "rand":
            return (f"[{section}] pool=rand: the 2012 release's RandomPoolLayer calls convLocalRandomPool, which "
                    "no released source defines (it could not be built; nothing says what it computed)")
    params = read_sections(layer_params)
    for section in params.sections():
        for key in ("schedW", "schedB"):
            text = params.get(section, key, fallback="default")
            try:
                config.parse_rate_schedule(text, 1.0)
            except ValueError:
                if "[" in text and any("=" not in item for item in text.split("[", 1)[1].rstrip("]").split(",")):
                    return (f"[{section}] {key}={text}: the 2012 release's parser takes schedules only as "
                            "name=value lists, and this one is short of values in any form")
    return None


def uses_replicas(layer_def):
    """Whether some layer lists several gpus (gpu=0,1: data-parallel replicas)."""
    with open(layer_def, encoding="utf-8", errors="replace") as f:
        return any(re.match(r"\s*gpu\s*=.*,", line) for line in f)


def devices_needed(layer_def):
    """1 + the largest gpu= index in the definition file (a replica list counts its largest)."""
    parser = read_sections(layer_def)
    top = 0
    for section in parser.sections():
        for entry in parser.get(section, "gpu", fallback="0").split(","):
            if entry.strip().isdigit():
                top = max(top, int(entry.strip()))
    return top + 1


def uses_class_tree(layer_def):
    """Whether some layer is a treefc (it reads the provider's class tree: dummy-lr-N here)."""
    with open(layer_def, encoding="utf-8", errors="replace") as f:
        return any(re.match(r"\s*type\s*=\s*treefc\s*$", line) for line in f)


def label_rows(layer_def):
    """The rows of the label matrices a net compares with an output layer (a cross-entropy
    or element-wise cost, or an eltsum of labels and outputs under a sum-of-squares cost):
    the outputs= of the layer the labels (dataIdx=1) meet; 0 for class indices (logreg)."""
    parser = read_sections(layer_def)
    labels = [s for s in parser.sections() if parser.get(s, "type", fallback="") == "data"
              and parser.get(s, "dataIdx", fallback="").strip() == "1"]
    for section in parser.sections():
        if parser.get(section, "type", fallback="") in ("cost.logreg", "data") or not labels:
            continue
        inputs = [name.strip() for name in parser.get(section, "inputs", fallback="").split(",")]
        if labels[0] in inputs:
            for other in inputs:
                outputs = parser.get(other, "outputs", fallback="").strip() if parser.has_section(other) else ""
                if other != labels[0] and outputs.isdigit():
                    return int(outputs)
    return 0


def input_size(layer_def, layer_params):
    """(the first candidate image size the net parses at, None) or, when none does, (None, the
    parse error of the size that got furthest: _how_far)."""
    from ccn import config
    from ccn.data.dummy import SMALL_CLASS_TREE
    from ccn.data.base import class_tree_parents
    tree = class_tree_parents(*SMALL_CLASS_TREE, 10, "dummy-lr") if uses_class_tree(layer_def) else None
    errors, labels = [], label_rows(layer_def) or 1
    for size in CANDIDATE_SIZES:
        try:
            config.load_layers(layer_def, layer_params, {0: (3, size, size), 1: labels}, tree)
            return size, None
        except Exception as e:  # noqa: BLE001 - any failure means "not this size"
            errors.append(str(e).splitlines()[0] if str(e) else type(e).__name__)
    return None, max(errors, key=lambda e: _how_far(e, layer_def, layer_params))


def _how_far(error, layer_def, layer_params):
    """How far parsing got before `error`: the position of the definition section it names,
    past all of them for an error of the params file (the geometry at this size was fine)."""
    if layer_params and os.path.basename(layer_params) in error:
        return 1 << 30
    named = [i for i, section in enumerate(read_sections(layer_def).sections()) if f"[{section}]" in error]
    return max(named, default=-1)


def write_cifar_batches(folder, rng):
    """cuda-convnet's own CIFAR layout: data uint8 (3072, N), batches.meta with data_mean."""
    os.makedirs(folder, exist_ok=True)
    total = np.zeros((3072, 1))
    for batchnum in range(1, 7):
        data = rng.integers(0, 256, size=(3072, CASES_PER_BATCH), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=CASES_PER_BATCH)]
        if batchnum <= 5:
            total += data.sum(axis=1, keepdims=True)
        with open(os.path.join(folder, f"data_batch_{batchnum}"), "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": f"batch {batchnum}"}, f)
    meta = {"data_mean": (total / (5 * CASES_PER_BATCH)).astype(np.float32), "num_vis": 3072,
            "label_names": [f"class {k}" for k in range(10)]}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump(meta, f)


def data_options(size, cifar_dir):
    if size == 32:
        return ["--data-provider=cifar", f"--data-path={cifar_dir}", "--train-range=1", "--test-range=6"]
    if size is not None and size < 32:
        return ["--data-provider=cifar-cropped", f"--inner-size={size}", f"--data-path={cifar_dir}",
                "--train-range=1", "--test-range=6"]
    size = size or 32
    return [f"--data-provider=dummy-cn-{3 * size * size}", f"--batch-size={CASES_PER_BATCH}",
            "--train-range=1", "--test-range=2"]


def data_options_for(layer_def, size, cifar_dir):
    """The provider options for this net: a net with a treefc layer gets dummy-lr-N (a class
    tree), one with a cross-entropy-style cost one-hot label matrices of its rows."""
    dummy = [f"--batch-size={CASES_PER_BATCH}", "--train-range=1", "--test-range=2"]
    if uses_class_tree(layer_def):
        return [f"--data-provider=dummy-lr-{3 * size * size}"] + dummy
    rows = label_rows(layer_def)
    if rows:
        return [f"--data-provider=dummy-cn-{3 * size * size}", f"--label-rows={rows}"] + dummy
    return data_options(size, cifar_dir)


def run_pair(layer_def, layer_params, cifar_dir, save_dir, mini, timeout):
    """(parsed, trained, test error or None, first error line or '')."""
    if layer_params is None:
        return False, False, None, "no layer-params file for this definition"
    size, parse_error = input_size(layer_def, layer_params)
    if size is None:
        return False, False, None, f"convnet: error: {parse_error}"
    devices = ",".join(["cpu"] * devices_needed(layer_def))
    cmd = [sys.executable, os.path.join(ROOT, "convnet.py"), f"--layer-def={layer_def}",
           f"--layer-params={layer_params}", f"--save-path={save_dir}", f"--mini={mini}", "--epochs=1",
           "--max-batches=1", f"--gpu={devices}", "--test-one=1"] + data_options_for(layer_def, size, cifar_dir)
    env = dict(os.environ)  # the ccn the caller has: installed, or PYTHONPATH=python with CCN_BUILD_DIR
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return True, False, None, f"timed out after {timeout} s"
    out = proc.stdout + proc.stderr
    errors = [line.strip() for line in out.splitlines() if "error:" in line or "Error" in line]
    match = ERROR_RE.search(out)
    test_error = float(match.group(1)) if match else None
    if proc.returncode == 0:
        return True, True, test_error, ""
    first = errors[0] if errors else (out.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    parsed = "training on" in out
    return parsed, False, test_error, first


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", required=True, help="folder searched (recursively) for layer files")
    p.add_argument("--mini", type=int, default=8, help="minibatch size (default 8: two minibatches)")
    p.add_argument("--timeout", type=int, default=600, help="seconds allowed per pair")
    args = p.parse_args(argv)
    pairs = find_pairs(args.corpus)
    if not pairs:
        print(f"compat_check: no layers*.cfg under {args.corpus}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="compat_check_") as tmp:
        cifar_dir = os.path.join(tmp, "cifar")
        write_cifar_batches(cifar_dir, np.random.default_rng(0))
        print(f"{'pair':<72} {'parsed':<6} {'trained':<7} {'error':<6} first error line")
        for layer_def, layer_params in pairs:
            name = os.path.relpath(layer_def, args.corpus)
            if layer_params:
                name += " + " + os.path.basename(layer_params)
            parsed, trained, err, first = run_pair(layer_def, layer_params, cifar_dir,
                                                   os.path.join(tmp, "runs"), args.mini, args.timeout)
            status = "yes" if trained else "no"
            reason = rejected_by_originals(layer_def, layer_params)
            if not trained and reason:
                status, first = "n/a", f"rejected by the originals' parsers too: {reason}"
            elif layer_params is None:
                status, first = "n/a", "no layer-params file for this definition (nothing to run)"
            elif not trained and "cannot import module" in first:
                status, first = "n/a", f"needs a Python module the corpus does not hold (its init functions): {first}"
            elif not trained and uses_replicas(layer_def):
                status, first = "n/a", f"needs data-parallel replicas (gpu=a,b,...): {first}"
            elif not trained and "NaN or Inf" in first:
                status = "NaN"  # it ran: forward, backward and updates; its rates diverge on this data
            rows.append((name, parsed, status, err, first))
            print(f"{name:<72} {'yes' if parsed else 'no':<6} {status:<7} "
                  f"{'' if err is None else f'{err:.3f}':<6} {first}", flush=True)
    counts = {status: sum(1 for r in rows if r[2] == status) for status in ("yes", "NaN", "no", "n/a")}
    parsed = sum(1 for r in rows if r[1])
    print(f"\nsummary: {len(rows)} pairs, {parsed} parsed, {counts['yes']} trained, {counts['NaN']} ran but "
          f"diverged (NaN/Inf on this data), {counts['no']} failed, {counts['n/a']} expected failures "
          "(the originals could not run them either, no params file, a missing init-function module, or replicas)")
    return 0 if counts["no"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
