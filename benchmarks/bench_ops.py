#!/usr/bin/env python3
"""Per-op timings of the engine against PyTorch on the same device, in the same run.

    python benchmarks/bench_ops.py --device=cpu --layers=alexnet --batch=32
    python benchmarks/bench_ops.py --device=cuda --layers=alexnet --batch=128

For each op: our median time, the FLOP rate (or bandwidth for memory-bound ops) and the
ratio torch_ms / our_ms (> 1: we are faster). PyTorch is optional; on CUDA it runs with
cuDNN and TF32 off. Layouts are each engine's native one (ours: channels, rows, cols,
images; PyTorch: images, channels, rows, cols); no transposes are timed.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shapes import LAYER_SETS, conv_out, pool_out  # noqa: E402

from ccn import _core  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def median_ms(fn, sync, repeats, min_seconds=0.2):
    fn()
    sync()
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start_all < min_seconds and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Bench:
    def __init__(self, device, batch, repeats):
        self.device, self.batch, self.repeats = device, batch, repeats
        self.ours_dev = "cpu" if device == "cpu" else "cuda:0"
        self.rows = []
        self.rng = np.random.default_rng(0)
        if torch is not None:
            self.tdev = torch.device("cpu" if device == "cpu" else "cuda")
            if device != "cpu":
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False

    def array(self, *shape):
        a = self.rng.standard_normal(shape).astype(np.float32)
        return a if self.device == "cpu" else _core.Tensor(a, self.ours_dev)

    def tensor(self, *shape):
        return torch.randn(*shape, device=self.tdev)

    def sync_ours(self):
        _core.synchronize(self.ours_dev)

    def sync_torch(self):
        if self.device != "cpu":
            torch.cuda.synchronize()

    def run(self, name, ours, theirs, work, unit):
        """work: FLOPs (unit 'GFLOP/s') or bytes moved (unit 'GB/s')."""
        ms = median_ms(ours, self.sync_ours, self.repeats)
        tms = median_ms(theirs, self.sync_torch, self.repeats) if (torch is not None and theirs) else None
        rate = work / (ms * 1e-3) / 1e9
        self.rows.append((name, ms, rate, unit, tms))
        ratio = f"{tms / ms:6.2f}" if tms else "     -"
        tstr = f"{tms:9.3f}" if tms else "        -"
        print(f"{name:<28} {ms:9.3f} ms {rate:9.1f} {unit:<7} torch {tstr} ms  ratio {ratio}", flush=True)

    # -- families ------------------------------------------------------------------------------
    def conv(self, spec):
        name, c, img, f, fs, pad, stride, groups = spec
        n = self.batch
        m = conv_out(img, fs, pad, stride)
        g = _core.ConvGeometry(channels=c, img_size_y=img, img_size_x=img, filter_size=fs, num_filters=f,
                               padding=pad, stride=stride, modules_y=m, modules_x=m, groups=groups, local=False)
        images, filters = self.array(c * img * img, n), self.array(c // groups * fs * fs, f)
        hid, img_grad, w_grad = self.array(f * m * m, n), self.array(c * img * img, n), self.array(c // groups * fs * fs, f)
        flops = 2.0 * n * f * m * m * (c // groups) * fs * fs
        tx = tw = tg = None
        if torch is not None:
            tx, tw, tg = self.tensor(n, c, img, img), self.tensor(f, c // groups, fs, fs), self.tensor(n, f, m, m)
        conv = lambda: F.conv2d(tx, tw, stride=stride, padding=pad, groups=groups)  # noqa: E731
        # PyTorch pads symmetrically and floors; for these shapes the output sizes agree.
        self.run(f"{name} fprop", lambda: _core.filter_acts(images, filters, hid, g), torch and conv, flops, "GFLOP/s")
        self.run(f"{name} bprop-images", lambda: _core.img_acts(hid, filters, img_grad, g),
                 torch and (lambda: torch.nn.grad.conv2d_input(tx.shape, tw, tg, stride=stride, padding=pad, groups=groups)),
                 flops, "GFLOP/s")
        self.run(f"{name} bprop-weights", lambda: _core.weight_acts(images, hid, w_grad, g),
                 torch and (lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, tg, stride=stride, padding=pad, groups=groups)),
                 flops, "GFLOP/s")

    def pool(self, spec):
        name, c, img, size, stride = spec
        n = self.batch
        o = pool_out(img, size, stride)
        g = _core.PoolGeometry(channels=c, img_size_y=img, img_size_x=img, size_x=size, start=0, stride=stride,
                               outputs_y=o, outputs_x=o)
        images, out, grads, back = self.array(c * img * img, n), self.array(c * o * o, n), self.array(c * o * o, n), self.array(c * img * img, n)
        _core.local_pool(images, out, g, "max")
        bytes_fwd = 4.0 * n * c * (img * img + o * o)
        tx = self.tensor(n, c, img, img) if torch is not None else None
        self.run(f"{name} max fprop", lambda: _core.local_pool(images, out, g, "max"),
                 torch and (lambda: F.max_pool2d(tx, size, stride, ceil_mode=True)), bytes_fwd, "GB/s")
        if torch is not None:
            txr = tx.clone().requires_grad_(True)
            ty = F.max_pool2d(txr, size, stride, ceil_mode=True)
            tgo = torch.randn_like(ty)
        self.run(f"{name} max bprop", lambda: _core.local_max_undo(images, out, grads, back, g),
                 torch and (lambda: torch.autograd.grad(ty, txr, tgo, retain_graph=True)), 2 * bytes_fwd, "GB/s")

    def norm(self, spec):
        name, c, img, size = spec
        n = self.batch
        g = _core.NormGeometry(channels=c, img_size_y=img, img_size_x=img, size=size, add_scale=1e-4 / size,
                               pow_scale=0.75, min_div=2.0, blocked=False)
        images, denoms, out, grads, back = (self.array(c * img * img, n) for _ in range(5))
        nbytes = 4.0 * n * c * img * img * 3
        tx = self.tensor(n, c, img, img) if torch is not None else None
        self.run(f"{name} cmrnorm fprop", lambda: _core.response_norm_cross_map(images, denoms, out, g),
                 torch and (lambda: F.local_response_norm(tx, size, alpha=1e-4, beta=0.75, k=2.0)), nbytes, "GB/s")
        _core.response_norm_cross_map(images, denoms, out, g)
        if torch is not None:
            txr = tx.clone().requires_grad_(True)
            ty = F.local_response_norm(txr, size, alpha=1e-4, beta=0.75, k=2.0)
            tgo = torch.randn_like(ty)
        self.run(f"{name} cmrnorm bprop", lambda: _core.response_norm_cross_map_undo(grads, images, out, denoms, back, g),
                 torch and (lambda: torch.autograd.grad(ty, txr, tgo, retain_graph=True)), nbytes * 5 / 3, "GB/s")

    def fc(self, spec):
        name, nin, nout = spec
        n = self.batch
        w, x, y, gx, gw = self.array(nin, nout), self.array(nin, n), self.array(nout, n), self.array(nin, n), self.array(nin, nout)
        flops = 2.0 * n * nin * nout
        if torch is not None:
            tw, tx, tg = self.tensor(nout, nin), self.tensor(n, nin), self.tensor(n, nout)
        self.run(f"{name} fprop", lambda: _core.gemm(w, x, y, trans_a=True), torch and (lambda: F.linear(tx, tw)), flops, "GFLOP/s")
        self.run(f"{name} bprop-inputs", lambda: _core.gemm(w, y, gx), torch and (lambda: tg @ tw), flops, "GFLOP/s")
        self.run(f"{name} bprop-weights", lambda: _core.gemm(x, y, gw, trans_b=True), torch and (lambda: tg.t() @ tx), flops, "GFLOP/s")


def gemm_peak(bench):
    """SGEMM rate of the engine's GEMM on a large square product: the reference for 'fraction of peak'."""
    n = 2048
    a, b, c = bench.array(n, n), bench.array(n, n), bench.array(n, n)
    ms = median_ms(lambda: _core.gemm(a, b, c), bench.sync_ours, 3)
    return 2.0 * n ** 3 / (ms * 1e-3) / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--layers", default="alexnet", choices=sorted(LAYER_SETS) + ["all"])
    p.add_argument("--batch", type=int, default=None, help="default: 32 on cpu, 128 on cuda")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", default="", help="comma list of families: conv,pool,norm,fc")
    args = p.parse_args(argv)
    batch = args.batch or (32 if args.device == "cpu" else 128)
    if args.device == "cuda" and not (_core.has_cuda_backend and _core.cuda_device_count() > 0):
        sys.exit("bench_ops: no CUDA device")
    if torch is not None and args.device == "cpu":
        torch.set_num_threads(_core.num_threads())
    bench = Bench(args.device, batch, args.repeats)
    print(f"# bench_ops: device={args.device} batch={batch} threads={_core.num_threads()} "
          f"torch={torch.__version__ if torch is not None else 'absent'}")
    peak = gemm_peak(bench)
    print(f"# engine SGEMM 2048^3: {peak:.1f} GFLOP/s (reference for the fraction of peak)")
    families = set(args.only.split(",")) if args.only else {"conv", "pool", "norm", "fc"}
    sets = sorted(LAYER_SETS) if args.layers == "all" else [args.layers]
    for set_name in sets:
        convs, pools, norms, fcs = LAYER_SETS[set_name]
        print(f"## {set_name}")
        for fam, specs, fn in (("conv", convs, bench.conv), ("pool", pools, bench.pool),
                               ("norm", norms, bench.norm), ("fc", fcs, bench.fc)):
            if fam in families:
                for spec in specs:
                    fn(spec)
    print("\n| op | ms | rate | unit | of SGEMM peak | torch ms | ratio (torch/ours) |")
    print("|---|---|---|---|---|---|---|")
    for name, ms, rate, unit, tms in bench.rows:
        frac = f"{rate / peak:.0%}" if unit == "GFLOP/s" else "-"
        print(f"| {name} | {ms:.3f} | {rate:.1f} | {unit} | {frac} | {tms:.3f} | {tms / ms:.2f} |" if tms else
              f"| {name} | {ms:.3f} | {rate:.1f} | {unit} | {frac} | - | - |")


if __name__ == "__main__":
    main()
