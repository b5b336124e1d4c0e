#!/usr/bin/env python3
"""A performance model of the CUDA conv kernels without a GPU: AlexNet's conv layers at batch
128 run through the CUDA emulator (tools/cuda_emu), which counts, on a few sampled blocks of
each launch, global-memory sectors against the fewest possible (coalescing), shared-memory
wavefronts against the fewest possible (bank conflicts) and memory instructions per thread;
`ptxas -v` (tools/cuda_emu/kernel_resources.py) gives registers and occupancy.

    bash tools/cuda_emu/build.sh
    CCN_BUILD_DIR=build/emu PYTHONPATH=python python benchmarks/emu_profile.py [--write]

The H100 estimate of a kernel is the largest of
    compute: FLOPs / fp32 peak / issue efficiency (FMAs over FMAs + memory instructions),
    DRAM:    compulsory bytes (inputs read once, outputs written once) / HBM bandwidth / sector eff.,
    L2:      sectors the warps touch x 32 bytes (all blocks, from the samples) / L2 bandwidth.
It ignores latency, occupancy limits and integer work, so it is a lower bound: a GPU run
(benchmarks/gpu_check.sh) must say how close the kernels come. --write puts the table into
benchmarks/RESULTS.md (its own section; the rest is kept)."""
import argparse
import datetime
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "cuda_emu"))

# H100 SXM5: fp32 (non-tensor) peak, HBM3 bandwidth; L2 bandwidth is an assumption (~3x HBM).
PEAK_FLOPS, HBM_BYTES, L2_BYTES = 67e12, 3.35e12, 10e12
SECTION = "## CUDA conv kernels: emulator counters and an H100 roofline model (AlexNet, batch 128)"


def setup_emulator(sample):
    """Sampled blocks only, counters to a fresh file: read by the emulator at its first launch."""
    report = tempfile.NamedTemporaryFile(prefix="emu_profile_", suffix=".jsonl", delete=False).name
    os.environ.update(CCN_EMU_REPORT=report, CCN_EMU_SAMPLED_ONLY="1", CCN_EMU_SAMPLE=str(sample))
    os.environ.setdefault("CCN_EMU_SEED", "1")  # the same sampled blocks every run
    return report


def new_launches(report, seen):
    with open(report) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[seen:], len(lines)


def model(launch, flops, dram_bytes):
    """Efficiencies from the sampled blocks, and the H100 estimate (microseconds)."""
    g, s = launch["global"], launch["shared"]
    threads = launch["sampled_threads"]
    total_threads = 1
    for d in launch["grid"] + launch["block"]:
        total_threads *= d
    sector_eff = g["ideal_sectors"] / g["sectors"] if g["sectors"] else 1.0
    wave_eff = s["ideal_wavefronts"] / s["wavefronts"] if s["wavefronts"] else 1.0
    # Memory instructions per thread (a float4 access is one); a bank conflict's wavefronts
    # past the fewest possible are replays (a float4 request's 4 quarter-warp phases are not).
    replays = (s["wavefronts"] - s["ideal_wavefronts"]) * 32
    mem_instr = (g["loads"] + g["stores"] + s["loads"] + s["stores"] + replays) / threads if threads else 0.0
    fma = flops / 2 / total_threads
    issue_eff = fma / (fma + mem_instr) if fma else 1.0
    l2_bytes = g["sectors"] * 32 / threads * total_threads if threads else 0.0  # no L1 hits assumed
    t_compute = flops / PEAK_FLOPS / issue_eff if flops else 0.0
    t_dram = dram_bytes / HBM_BYTES / sector_eff
    t_l2 = l2_bytes / L2_BYTES
    bound = max((t_compute, "compute"), (t_dram, "DRAM"), (t_l2, "L2"))
    return dict(sector_eff=sector_eff, wave_eff=wave_eff, fma=fma, mem_instr=mem_instr, issue_eff=issue_eff,
                l2_bytes=l2_bytes, t_us=bound[0] * 1e6, bound=bound[1], conflicts=s["conflicts"])


def profile(batch, layers, rng, report):
    from ccn import _core
    from shapes import conv_out

    rows, seen = [], 0
    dev = "cuda:0"
    for name, c, img, f, fs, pad, stride, groups in layers:
        m = conv_out(img, fs, pad, stride)
        g = _core.ConvGeometry(channels=c, img_size_y=img, img_size_x=img, filter_size=fs, num_filters=f,
                               padding=pad, stride=stride, modules_y=m, modules_x=m, groups=groups, local=False)
        arr = lambda *shape: _core.Tensor(rng.standard_normal(shape, dtype="float32"), dev)  # noqa: E731
        n_img, n_flt, n_hid = c * img * img * batch, (c // groups) * fs * fs * f, f * m * m * batch
        images, filters, hid = arr(c * img * img, batch), arr((c // groups) * fs * fs, f), arr(f * m * m, batch)
        flops = 2.0 * batch * f * m * m * (c // groups) * fs * fs
        ops = [("fprop", lambda: _core.filter_acts(images, filters, hid, g), n_img + n_flt + n_hid),
               ("bprop-images", lambda: _core.img_acts(hid, filters, images, g), n_img + n_flt + n_hid),
               ("bprop-weights", lambda: _core.weight_acts(images, hid, filters, g), n_img + n_flt + n_hid)]
        for op, fn, elems in ops:
            fn()
            launches, seen = new_launches(report, seen)
            for i, launch in enumerate(launches):
                main = i == 0  # the conv kernel; a following sum_chunks adds weightActs' partial sums
                est = model(launch, flops if main else 0.0, 4.0 * elems if main else 0.0)
                if not main:  # streaming: every byte it requests comes from DRAM
                    est = model(launch, 0.0, est["l2_bytes"])
                rows.append(dict(layer=name, op=op, kernel=launch["kernel"], grid=launch["grid"],
                                 flops=flops if main else 0.0, dram_bytes=4.0 * elems if main else est["l2_bytes"],
                                 **est))
            print(f"{name} {op}: " + ", ".join(f"{r['kernel']} {r['t_us']:.0f} us ({r['bound']})"
                                               for r in rows[-len(launches):]), flush=True)
    return rows


def resources():
    try:
        import kernel_resources
        return {k["name"]: k for k in kernel_resources.collect()}
    except (SystemExit, Exception) as e:  # no nvcc: the table goes without registers
        print(f"(no ptxas figures: {e})", file=sys.stderr)
        return {}


def table(rows, res, batch, sample):
    out = [SECTION, "",
           f"- Date: {datetime.date.today()}. No GPU: the CUDA kernels ran in the emulator (tools/cuda_emu), "
           f"{sample} sampled blocks per launch; registers and occupancy from `ptxas -v` for sm_90.",
           "- Command: `bash tools/cuda_emu/build.sh && CCN_BUILD_DIR=build/emu PYTHONPATH=python "
           "python benchmarks/emu_profile.py --write`",
           "- Model (H100 SXM5: 67 TFLOP/s fp32, 3.35 TB/s HBM3, L2 taken as 10 TB/s): the largest of FLOPs / peak / "
           "issue eff., compulsory bytes / HBM / sector eff., sectors touched x 32 bytes / L2 (no L1 hits) Issue eff. = FMAs / "
           "(FMAs + memory instructions) per thread. A lower bound, not a measurement: no GPU has timed these "
           "kernels yet, and cuDNN's times for the same shapes are still to be measured beside them.",
           "- Sector eff.: fewest 32-byte sectors that hold the bytes a warp asks for / sectors it touches. "
           "Wavefront eff.: fewest shared-memory passes / passes (1 = no bank conflict).", "",
           f"| layer | op | kernel | GFLOP | DRAM MB | L2 MB | sector eff. | wavefront eff. | FMA/thread | "
           f"mem instr/thread | issue eff. | regs | occupancy | H100 model us | bound |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    total = 0.0
    for r in rows:
        k = res.get(r["kernel"], {})
        total += r["t_us"]
        regs, occ = (k["registers"], f"{k['occupancy']:.2f}") if k else ("-", "-")
        out.append(f"| {r['layer']} | {r['op']} | `{r['kernel']}` | {r['flops'] / 1e9:.2f} | {r['dram_bytes'] / 1e6:.1f} | "
                   f"{r['l2_bytes'] / 1e6:.0f} | {r['sector_eff']:.3f} | {r['wave_eff']:.3f} | {r['fma']:.0f} | "
                   f"{r['mem_instr']:.0f} | {r['issue_eff']:.3f} | {regs} | {occ} | {r['t_us']:.0f} | {r['bound']} |")
    out += ["", f"Model total, forward and backward, for the layers above: {total / 1e3:.2f} ms per batch of {batch}.", ""]
    return "\n".join(out)


def write_section(text, path=os.path.join(HERE, "RESULTS.md")):
    doc = open(path).read()
    if SECTION in doc:
        start = doc.index(SECTION)
        nxt = re.search(r"^## ", doc[start + len(SECTION):], re.M)
        end = start + len(SECTION) + nxt.start() if nxt else len(doc)
        doc = doc[:start] + text + ("\n" if nxt else "") + doc[end:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--layers", default="conv1,conv2,conv3,conv4,conv5")
    ap.add_argument("--sample", type=int, default=4, help="blocks counted (and run) per launch")
    ap.add_argument("--write", action="store_true", help="put the table into benchmarks/RESULTS.md")
    args = ap.parse_args()
    report = setup_emulator(args.sample)
    import numpy as np
    from ccn import _core
    from shapes import ALEXNET_CONV

    if not (_core.has_cuda_backend and _core.cuda_device_count() > 0):
        raise SystemExit("emu_profile: needs the emulated CUDA build (CCN_BUILD_DIR=build/emu)")
    wanted = args.layers.split(",")
    rows = profile(args.batch, [l for l in ALEXNET_CONV if l[0] in wanted], np.random.default_rng(0), report)
    text = table(rows, resources(), args.batch, args.sample)
    print(text)
    if args.write:
        write_section(text)
    os.unlink(report)


if __name__ == "__main__":
    main()
