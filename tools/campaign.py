#!/usr/bin/env python3
"""Fault campaign: hostile layer files, random binding calls, kill -9 during training and
damaged checkpoints. Prints the counts; exits 1 if anything crashed, hung, left a traceback,
loaded a damaged or foreign checkpoint silently, or lost a checkpoint.

    python tools/campaign.py [--layer-files 1000] [--binding-calls 10000]   # installed ccn
    (a dev build: CCN_BUILD_DIR=build/dev PYTHONPATH=python python tools/campaign.py ...)
                                               [--kills 20] [--corruptions 50] [--seed 0]

Layer files and binding calls run in a child process, one JSON line per case, so that a
crash (the child dies by a signal) or a hang (no line within --case-timeout seconds) is
counted and the campaign goes on with the next case. Outcomes:
  layer files   ok (the net built and took a training step) | error (one ConfigError /
                ValueError / RuntimeError line, as convnet.py reports it) | traceback (any
                other exception: convnet.py would print a traceback)
  binding calls ok | error (a Python exception: the bindings' way to refuse)
"""
import argparse
import collections
import copy
import inspect
import json
import os
import pickle
import random
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = """[data]
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
initW=0.0001
neuron=relu

[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
channels=8

[rnorm1]
type=cmrnorm
inputs=pool1
channels=8
size=5

[fc10]
type=fc
inputs=rnorm1
outputs=10
initW=0.01

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
"""

PARAMS = """[conv1]
epsW=0.001
epsB=0.002
momW=0.9
momB=0.9
wc=0.0005

[rnorm1]
scale=0.001
pow=0.75

[fc10]
epsW=exp[0.001;10]
epsB=0.002
momW=0.9
momB=0.9
wc=0.0005

[logprob]
coeff=1
"""

HOSTILE_VALUES = ["0", "-1", "1000", "65536", "2147483648", "9223372036854775808", "1e308", "nan", "inf", "",
                  "abc", "dexp[0.1;10;2147483648]", "relu[", "data,data", "\x00", "\u00e9", "1.5", "conv1",
                  "exp[0;0]", "-0", "0x10", "3,3", "labels", "probs,labels", "tanh[nan,1]"]


# -- layer files ---------------------------------------------------------------------------------------
def mutate(text, rng):
    lines = text.split("\n")
    kind = rng.randrange(10)
    if kind == 0:  # a key's value replaced
        idx = rng.choice([i for i, l in enumerate(lines) if "=" in l])
        lines[idx] = lines[idx].split("=", 1)[0] + "=" + rng.choice(HOSTILE_VALUES)
    elif kind == 1:
        del lines[rng.randrange(len(lines))]
    elif kind == 2:
        idx = rng.randrange(len(lines))
        lines.insert(idx, lines[idx])
    elif kind == 3:
        idx = rng.randrange(len(lines))
        lines[idx] = "  " + lines[idx]
    elif kind == 4:
        return "\ufeff" + text if rng.random() < 0.5 else text[:rng.randrange(len(text))]
    elif kind == 5:
        data = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return data.decode("utf-8", "replace")
    elif kind == 6:  # sections swapped
        sections = text.split("\n\n")
        i, j = rng.randrange(len(sections)), rng.randrange(len(sections))
        sections[i], sections[j] = sections[j], sections[i]
        return "\n\n".join(sections)
    elif kind == 7:  # a key of another section
        keys = [l for l in lines if "=" in l]
        lines.insert(rng.randrange(len(lines)), rng.choice(keys))
    elif kind == 8:
        idx = rng.choice([i for i, l in enumerate(lines) if "=" in l])
        lines[idx] = lines[idx].replace("=", rng.choice([":", " = ", "==", ""]), 1)
    else:  # two mutations
        return mutate(mutate(text, rng), rng)
    return "\n".join(lines)


def layer_case(i, seed, tmp):
    import numpy as np
    from ccn import _core, config
    rng = random.Random(seed * 1000003 + i)
    net, params = (mutate(NET, rng), PARAMS) if rng.random() < 0.6 else (NET, mutate(PARAMS, rng))
    paths = [os.path.join(tmp, "net.cfg"), os.path.join(tmp, "params.cfg")]
    for path, text in zip(paths, (net, params)):
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    try:
        layers = config.load_layers(paths[0], paths[1], {0: (3, 32, 32), 1: 1})
        n = _core.Net(layers, ["cpu"], 1)
        data = [np.random.default_rng(i).standard_normal((3072, 8)).astype(np.float32),
                np.arange(8, dtype=np.float32).reshape(1, 8) % 10]
        n.train_step(data)
        return "ok", ""
    except (ValueError, OSError, RuntimeError) as e:  # what convnet.py reports in one line
        return "error", str(e).splitlines()[0][:120] if str(e) else type(e).__name__
    except Exception as e:
        return "traceback", f"{type(e).__name__}: {e}"[:200]


# -- binding calls -------------------------------------------------------------------------------------
def _random_array(rng, np):
    shape = tuple(rng.choice([0, 1, 2, 3, 7, 16, 64]) for _ in range(rng.choice([1, 1, 2, 2, 2, 3, 4])))
    dtype = rng.choice([np.float32] * 8 + [np.float64, np.int32])
    a = (np.random.default_rng(rng.randrange(1 << 30)).standard_normal(shape) * rng.choice([1, 1e30])).astype(dtype)
    if a.size and a.dtype.kind == "f" and rng.random() < 0.1:
        a.flat[rng.randrange(a.size)] = rng.choice([float("nan"), float("inf")])
    if a.ndim >= 2 and rng.random() < 0.1:
        a = a.T  # not contiguous
    return a


def _random_int(rng):
    return rng.choice([0, 1, 2, 3, 5, 16, -1, -7, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 62])


def _random_value(annotation, rng, np, core):
    text = str(annotation)
    if "Geometry" in text:
        cls = getattr(core, text.rsplit(".", 1)[-1].strip("'>"))
        return _random_geometry(cls, rng, np, core)
    if "SupportsInt" in text or text == "int":
        return _random_int(rng)
    if "SupportsFloat" in text:
        return rng.choice([0.0, 1.0, -1.0, 0.5, 1e38, float("nan"), float("inf"), 1e-45])
    if text == "bool":
        return rng.random() < 0.5
    if text == "str":
        return rng.choice(["cpu", "cuda:0", "cuda:9", "", "gpu", "cpu:1"])
    if "Sequence" in text:
        return [_random_int(rng) for _ in range(rng.randrange(4))]
    return rng.choice([_random_array(rng, np)] * 6 + ["relu", "max", "tanh[1,1]", "bogus", None, 3])


def _random_geometry(cls, rng, np, core):
    params = _parameters(cls.__init__)
    kwargs = {name: _random_value(ann, rng, np, core) for name, ann in params if name != "self"}
    for name in list(kwargs):
        if rng.random() < 0.3 and name in kwargs:
            del kwargs[name]
    for attempt in (kwargs, {name: rng.randint(1, 8) for name, ann in params if "Int" in ann}):
        try:
            return cls(**attempt)
        except Exception:
            pass
    return None


def _parameters(fn):
    """[(name, annotation text)] from a pybind11 function's first signature line."""
    doc = (fn.__doc__ or "").strip().splitlines()
    for line in doc:
        m = re.match(r"\s*(?:\d+\.\s*)?\w+\((.*)\)\s*->", line)
        if m:
            out = []
            for part in re.split(r",\s*(?![^\[]*\])", m.group(1)):
                if ":" in part:
                    name, ann = part.split(":", 1)
                    out.append((name.strip().lstrip("*"), ann.split("=")[0].strip()))
            return out
    return []


SKIPPED = {"set_num_threads", "synchronize", "release_cached_memory", "reset_peak_stats", "empty"}


def binding_case(i, seed):
    import numpy as np
    from ccn import _core
    rng = random.Random(seed * 7919 + i)
    names = sorted(n for n in dir(_core) if not n.startswith("_") and n not in SKIPPED
                   and callable(getattr(_core, n)) and not inspect.isclass(getattr(_core, n)))
    name = rng.choice(names)
    fn = getattr(_core, name)
    args = [_random_value(ann, rng, np, _core) for _, ann in _parameters(fn)]
    if args and rng.random() < 0.2:
        args = args[:rng.randrange(len(args))]
    signal.alarm(30)  # a hang inside Python code; one inside C++ is caught by the supervisor
    try:
        fn(*args)
        return "ok", name
    except Exception as e:
        return "error", f"{name}: {type(e).__name__}"
    finally:
        signal.alarm(0)


# -- the child process and its supervisor ---------------------------------------------------------------
def worker(kind, start, count, seed):
    tmp = tempfile.mkdtemp(prefix="ccn-campaign-")
    for i in range(start, start + count):
        outcome, detail = layer_case(i, seed, tmp) if kind == "layers" else binding_case(i, seed)
        print(json.dumps({"i": i, "outcome": outcome, "detail": detail}), flush=True)


def supervise(kind, total, seed, case_timeout):
    counts, examples = collections.Counter(), collections.defaultdict(list)
    i = 0
    env = dict(os.environ)  # the ccn this script runs with: installed, or PYTHONPATH=python with CCN_BUILD_DIR
    while i < total:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", kind, "--start", str(i),
                                 "--count", str(total - i), "--seed", str(seed)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if not sel.select(case_timeout):
                proc.kill()
                counts["hang"] += 1
                examples["hang"].append(i)
                i += 1
                break
            line = proc.stdout.readline()
            if not line:
                rc = proc.wait()
                if i < total:  # died by a signal: a crash; a Python exit code: this script's own bug
                    counts["crash" if rc < 0 else "campaign bug"] += 1
                    examples["crash"].append((i, rc))
                    i += 1
                break
            rec = json.loads(line)
            counts[rec["outcome"]] += 1
            if rec["outcome"] == "traceback" and len(examples["traceback"]) < 5:
                examples["traceback"].append((rec["i"], rec["detail"]))
            i = rec["i"] + 1
        proc.stdout.close()
        proc.wait()
    return counts, examples


# -- kill -9 -------------------------------------------------------------------------------------------
def kills(n, seed):
    from ccn import checkpoint
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="ccn-kills-")
    for name, text in (("net.cfg", NET), ("params.cfg", PARAMS)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    env = dict(os.environ)  # the ccn this script runs with: installed, or PYTHONPATH=python with CCN_BUILD_DIR
    base = [sys.executable, os.path.join(ROOT, "convnet.py"), "--data-provider=dummy", "--gpu=cpu", "--mini=32",
            "--test-freq=1"]
    counts = collections.Counter()
    for k in range(n):
        save = os.path.join(tmp, f"run{k}")
        first = [*base, f"--layer-def={tmp}/net.cfg", f"--layer-params={tmp}/params.cfg", f"--save-path={save}",
                 "--epochs=1000"]
        proc = subprocess.Popen(first, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(2.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        runs = os.listdir(save) if os.path.isdir(save) else []
        if not runs:
            counts["no run yet"] += 1
            continue
        run_dir = os.path.join(save, runs[0])
        counts["orphan tmp after kill"] += sum(name.endswith(".tmp") for name in os.listdir(run_dir))
        try:
            state, _, _ = checkpoint.load(run_dir)
        except ValueError:
            counts["lost checkpoint" if checkpoint.list_checkpoints(run_dir) else "killed before the first"] += 1
            continue
        counts["killed"] += 1
        resume = subprocess.run([*base, "-f", run_dir, f"--epochs={state['epoch'] + 1}"], capture_output=True,
                                text=True, env=env, timeout=300)
        if resume.returncode != 0 or "Traceback" in resume.stderr:
            counts["resume failed"] += 1
            continue
        final, _, _ = checkpoint.load(run_dir)
        rows = open(os.path.join(run_dir, "metrics.csv")).read().splitlines()[1:]
        keys = [tuple(r.split(",")[:4]) for r in rows]
        counts["duplicate metrics rows"] += len(keys) - len(set(keys))
        counts["metrics rows != checkpoint"] += len(rows) != final["metrics_rows"]
        counts["orphan tmp after resume"] += sum(name.endswith(".tmp") for name in os.listdir(run_dir))
    return counts, tmp


# -- damaged checkpoints ---------------------------------------------------------------------------------
def corruptions(n, seed, run_root):
    import numpy as np
    from ccn import checkpoint
    rng = random.Random(seed + 1)
    source = next((checkpoint.list_checkpoints(os.path.join(run_root, r, d))[-1]
                   for r in sorted(os.listdir(run_root)) if os.path.isdir(os.path.join(run_root, r))
                   for d in os.listdir(os.path.join(run_root, r))
                   if checkpoint.list_checkpoints(os.path.join(run_root, r, d))), None)
    data = open(source, "rb").read()
    original, _, _ = checkpoint.load(source)
    tmp = tempfile.mkdtemp(prefix="ccn-corrupt-")
    marker = os.path.join(tmp, "code-ran")
    counts = collections.Counter()

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    def same(a, b):
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, np.ndarray):
            return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
        return a == b

    for k in range(n):
        damaged = bytearray(data)
        kind = k % 7
        if kind == 0:
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        elif kind == 2:
            damaged = damaged[:rng.randrange(len(damaged))]
        elif kind == 3:
            at = rng.randrange(len(damaged))
            damaged[at:at + 4096] = bytes(len(damaged[at:at + 4096]))
        elif kind == 4:
            damaged += os.urandom(rng.randint(1, 64))
        elif kind == 5:
            damaged[rng.randrange(64)] ^= 1 << rng.randrange(8)  # the header
        else:
            damaged = bytearray(pickle.dumps({"magic": "ccn-checkpoint", "version": 1, "x": RunsCode()}))
        path = os.path.join(tmp, "1.1")
        with open(path, "wb") as f:
            f.write(bytes(damaged))
        counts["corruptions"] += 1
        try:
            state, _, _ = checkpoint.load(path)
        except ValueError:
            counts["refused"] += 1
            continue
        except Exception as e:
            counts["traceback"] += 1
            print(f"  corruption {k}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        counts["loaded unchanged" if same(state, original) else "silent load"] += 1
    counts["foreign code ran"] += os.path.exists(marker)
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer-files", type=int, default=1000)
    p.add_argument("--binding-calls", type=int, default=10000)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--corruptions", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-timeout", type=float, default=60.0)
    p.add_argument("--worker", choices=["layers", "bindings"], help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.start, args.count, args.seed)
    bad = 0
    for kind, total in (("layers", args.layer_files), ("bindings", args.binding_calls)):
        start = time.time()
        counts, examples = supervise(kind, total, args.seed, args.case_timeout)
        print(f"{kind}: {total} cases in {time.time() - start:.0f}s: {dict(sorted(counts.items()))}")
        for what in ("crash", "hang", "traceback"):
            if examples[what]:
                print(f"  {what}: {examples[what][:5]}")
        bad += counts["crash"] + counts["hang"] + counts["traceback"] + counts["campaign bug"]
    kill_counts, kill_root = kills(args.kills, args.seed)
    print(f"kill -9: {args.kills} kills: {dict(sorted(kill_counts.items()))}")
    bad += sum(kill_counts[k] for k in ("lost checkpoint", "resume failed", "duplicate metrics rows",
                                        "metrics rows != checkpoint", "orphan tmp after resume"))
    if args.corruptions and args.kills:  # the damaged copies are made from a checkpoint of those runs
        c = corruptions(args.corruptions, args.seed, kill_root)
        print(f"checkpoints: {args.corruptions} corruptions: {dict(sorted(c.items()))}")
        bad += c["silent load"] + c["traceback"] + c["foreign code ran"]
    print("campaign:", "PASS" if not bad else f"FAIL ({bad} bad outcomes)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
