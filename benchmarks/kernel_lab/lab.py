#!/usr/bin/env python3
"""The kernel lab: numbered versions of a conv routine side by side (OP_N.cu, N = 1, 2, ...),
each checked against the engine's CPU op, counted by the CUDA emulator without a GPU (and
modelled on an H100 as in benchmarks/emu_profile.py), and timed with CUDA events, L2
flushed, where a GPU is present. Version 1 is the engine's kernel; a winner is promoted into
csrc/cuda by hand, once a GPU has timed it.

    CCN_BUILD_DIR=build/emu PYTHONPATH=python python benchmarks/kernel_lab/lab.py img_acts --layer conv1
    ... --gpu     (nvcc builds, a full-size check and timings; needs a GPU)
    python tools/cuda_emu/kernel_resources.py benchmarks/kernel_lab/OP_N.cu   (registers, spills)

The emulator's check runs the whole grid on a reduced image (same filter, stride, padding,
channels, filters) at batch 128 and at an odd batch; the counters come from a few sampled
blocks at the layer's full size (batch 128, or --count-batch: an odd one shows coalescing of
rows that start at any 4-byte offset)."""
import argparse
import ctypes
import glob
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EMU = os.path.join(ROOT, "tools", "cuda_emu")
OUT = os.path.join(ROOT, "build", "kernel_lab")
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, EMU)

# op -> (the CPU op's name in ccn._core, operand a, operand b, output): shapes as in ops/conv.h.
OPS = {"filter_acts": ("filter_acts", "images", "filters", "hid"),
       "img_acts": ("img_acts", "hid", "filters", "images"),
       "weight_acts": ("weight_acts", "images", "hid", "filters")}


def shapes(layer, batch, img=None):
    from shapes import ALEXNET_CONV, conv_out
    name, c, size, f, fs, pad, stride, groups = next(l for l in ALEXNET_CONV if l[0] == layer)
    size = img or size
    m = conv_out(size, fs, pad, stride)
    geometry = [c, size, size, fs, f, pad, stride, m, m, groups, batch]
    dims = {"images": (c * size * size, batch), "filters": (c // groups * fs * fs, f), "hid": (f * m * m, batch)}
    flops = 2.0 * batch * f * m * m * (c // groups) * fs * fs
    return geometry, dims, flops


def small_image(layer):
    """An image with 4 modules a side for the layer's filter, stride and padding."""
    from shapes import ALEXNET_CONV
    _, _, _, _, fs, pad, stride, _ = next(l for l in ALEXNET_CONV if l[0] == layer)
    return max(fs, fs + 3 * stride - 2 * pad)


def build(op, version, gpu):
    os.makedirs(OUT, exist_ok=True)
    src = os.path.join(HERE, f"{op}_{version}.cu")
    lib = os.path.join(OUT, f"{op}_{version}{'_gpu' if gpu else ''}.so")
    if gpu:
        subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-O3", "-arch=sm_90", "-std=c++17", "-I" + HERE,
                        src, "-o", lib], check=True)
        return lib
    import transform
    gen = os.path.join(OUT, f"{op}_{version}.cpp")
    with open(gen, "w") as f:
        f.write(f'#line 1 "{src}"\n' + transform.transform(open(src).read()))
    emu_obj = os.path.join(OUT, "emu.o")
    # The lab's headers too may launch kernels: transformed copies come first on the include path.
    headers = os.path.join(OUT, "include")
    os.makedirs(headers, exist_ok=True)
    for h in glob.glob(os.path.join(HERE, "*.cuh")):
        with open(os.path.join(headers, os.path.basename(h)), "w") as f:
            f.write(f'#line 1 "{h}"\n' + transform.transform(open(h).read()))
    flags = ["g++", "-O2", "-g", "-fPIC", "-std=c++17", "-fvisibility=hidden", "-I" + os.path.join(EMU, "include"),
             "-I" + headers]
    if not os.path.exists(emu_obj) or os.path.getmtime(emu_obj) < os.path.getmtime(os.path.join(EMU, "emu.cpp")):
        subprocess.run(flags + ["-c", os.path.join(EMU, "emu.cpp"), "-o", emu_obj], check=True)
    # Instrumented for the emulator's checker, linked without the sanitizer's runtime (emu.cpp has the hooks).
    subprocess.run(flags + ["-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0", "-c", gen,
                            "-o", gen + ".o"], check=True)
    subprocess.run(["g++", "-shared", gen + ".o", emu_obj, "-o", lib, "-ldl"], check=True)
    return lib


class Version:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.lab_alloc.restype = ctypes.c_void_p
        self.lib.lab_alloc.argtypes = [ctypes.c_size_t]
        for name in ("lab_upload", "lab_download"):
            getattr(self.lib, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        self.lib.lab_free.argtypes = [ctypes.c_void_p]
        self.lib.lab_run.argtypes = [ctypes.c_void_p] * 3 + [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_char_p)]
        self.lib.lab_handles.argtypes = [ctypes.POINTER(ctypes.c_int)]
        if hasattr(self.lib, "lab_time"):
            self.lib.lab_time.restype = ctypes.c_float
            self.lib.lab_time.argtypes = [ctypes.c_void_p] * 3 + [ctypes.POINTER(ctypes.c_int), ctypes.c_int]

    def device(self, a):
        p = self.lib.lab_alloc(a.nbytes)
        self.lib.lab_upload(p, a.ctypes.data, a.nbytes)
        return p

    def run(self, op, geometry, arrays, repeats=0):
        """The output (and the median ms of `repeats` timed runs on a GPU)."""
        _, a_name, b_name, out_name = OPS[op]
        g = (ctypes.c_int * 11)(*geometry)
        if not self.lib.lab_handles(g):
            return None, None
        a, b = self.device(arrays[a_name]), self.device(arrays[b_name])
        out = np.full(arrays[out_name].shape, np.nan, np.float32)
        o = self.device(out)
        msg = ctypes.c_char_p()
        if self.lib.lab_run(a, b, o, g, ctypes.byref(msg)):
            raise RuntimeError(msg.value.decode())
        self.lib.lab_download(out.ctypes.data, o, out.nbytes)
        ms = self.lib.lab_time(a, b, o, g, repeats) if repeats else None
        for p in (a, b, o):
            self.lib.lab_free(p)
        return out, ms


def reference(op, geometry, arrays):
    from ccn import _core
    c, size, _, fs, f, pad, stride, m, _, groups, _ = geometry
    g = _core.ConvGeometry(channels=c, img_size_y=size, img_size_x=size, filter_size=fs, num_filters=f, padding=pad,
                           stride=stride, modules_y=m, modules_x=m, groups=groups, local=False)
    fn, a_name, b_name, out_name = OPS[op]
    out = np.zeros(arrays[out_name].shape, np.float32)
    getattr(_core, fn)(arrays[a_name], arrays[b_name], out, g)
    return out


def check(version, op, layer, batch, img):
    geometry, dims, _ = shapes(layer, batch, img)
    rng = np.random.default_rng(batch)
    arrays = {k: rng.standard_normal(v, dtype=np.float32) for k, v in dims.items()}
    out, _ = version.run(op, geometry, arrays)
    if out is None:
        return None
    ref = reference(op, geometry, arrays)
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def worker(args):
    """One version in this process: the check (full grids) or the counters (sampled blocks)."""
    lib = build(args.op, args.version, args.gpu)
    v = Version(lib)
    result = {}
    if args.worker == "check":
        img = None if args.gpu else small_image(args.layer)
        for batch in (128, 37):
            result[f"error_batch{batch}"] = check(v, args.op, args.layer, batch, img)
        if args.gpu:
            geometry, dims, _ = shapes(args.layer, 128)
            rng = np.random.default_rng(0)
            _, ms = v.run(args.op, geometry, {k: rng.standard_normal(d, dtype=np.float32) for k, d in dims.items()}, 20)
            result["gpu_ms"] = ms
    else:
        geometry, dims, flops = shapes(args.layer, args.count_batch)
        arrays = {k: np.ones(d, np.float32) for k, d in dims.items()}
        if v.run(args.op, geometry, arrays)[0] is not None:
            from emu_profile import model
            # The op's kernel: the run's first launch (weightActs adds its chunks in a second).
            launch = next(json.loads(line) for line in open(os.environ["CCN_EMU_REPORT"]) if line.strip())
            est = model(launch, flops, 4.0 * sum(np.prod(d) for d in dims.values()))
            result.update(est, kernel=launch["kernel"])
    print("LAB " + json.dumps(result))


def run_worker(op, version, layer, mode, gpu, sample, count_batch):
    env = dict(os.environ)
    if mode == "count":
        report = os.path.join(OUT, f"{op}_{version}.jsonl")
        if os.path.exists(report):
            os.unlink(report)
        env.update(CCN_EMU_REPORT=report, CCN_EMU_SAMPLED_ONLY="1", CCN_EMU_SAMPLE=str(sample))
        env.setdefault("CCN_EMU_SEED", "1")  # the same sampled blocks for every version and run
    cmd = [sys.executable, __file__, op, "--layer", layer, "--worker", mode, "--version", str(version),
           "--count-batch", str(count_batch)]
    p = subprocess.run(cmd + (["--gpu"] if gpu else []), capture_output=True, text=True, env=env)
    lines = [l for l in p.stdout.splitlines() if l.startswith("LAB ")]
    if p.returncode or not lines:
        return {"failed": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1][4:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op", choices=sorted(OPS))
    ap.add_argument("--layer", default="conv1")
    ap.add_argument("--versions", help="comma-separated (default: all)")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--sample", type=int, default=8, help="blocks counted per launch")
    ap.add_argument("--count-batch", type=int, default=128, help="the batch of the counted full-size run")
    ap.add_argument("--worker", choices=["check", "count"], help=argparse.SUPPRESS)
    ap.add_argument("--version", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    versions = ([int(v) for v in args.versions.split(",")] if args.versions else
                sorted(int(os.path.basename(p)[len(args.op) + 1:-3]) for p in glob.glob(os.path.join(HERE, f"{args.op}_*.cu"))))
    print(f"| version | max rel. error b128 / b37 | kernel | sector eff. | wavefront eff. | conflicts | issue eff. | L2 MB | "
          f"H100 model us | bound |{' GPU ms |' if args.gpu else ''}")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if args.gpu else ""))
    for v in versions:
        ok = run_worker(args.op, v, args.layer, "check", args.gpu, args.sample, args.count_batch)
        cnt = {} if args.gpu else run_worker(args.op, v, args.layer, "count", False, args.sample, args.count_batch)
        if "failed" in ok or "failed" in cnt:
            print(f"| {v} | FAILED: {ok.get('failed') or cnt.get('failed')} |")
            continue
        if ok.get("error_batch128") is None:
            print(f"| {v} | (does not handle {args.layer}) |")
            continue
        err = f"{ok['error_batch128']:.1e} / {ok['error_batch37']:.1e}"
        row = (f"| {v} | {err} | `{cnt.get('kernel', '-')}` | {cnt.get('sector_eff', 0):.3f} | "
               f"{cnt.get('wave_eff', 0):.4f} | {cnt.get('conflicts', 0)} | {cnt.get('issue_eff', 0):.3f} | {cnt.get('l2_bytes', 0) / 1e6:.0f} | "
               f"{cnt.get('t_us', 0):.0f} | {cnt.get('bound', '-')} |") if cnt else f"| {v} | {err} | - | - | - | - | - | - | - | - |"
        print(row + (f" {ok['gpu_ms']:.3f} |" if args.gpu else ""), flush=True)


if __name__ == "__main__":
    main()
