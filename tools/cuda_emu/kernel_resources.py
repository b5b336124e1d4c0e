"""Registers, spills and shared memory of every kernel in csrc/cuda, from `ptxas -v` for sm_90
(the H100), and the occupancy they allow; fails (exit 1) when a kernel spills.

    python tools/cuda_emu/kernel_resources.py [--arch sm_90] [--json out.json] [file.cu ...]

(files: other .cu files than csrc/cuda's, e.g. the kernel lab's versions.)

Needs nvcc: $NVCC, on PATH, or from pip (nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-crt
nvidia-nvvm). The block size for the
occupancy comes from the kernel's __launch_bounds__ (.maxntid in the PTX), else 256 (the
engine's element-wise kernels)."""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# sm_90 per-SM limits (CUDA occupancy calculator).
REGS_PER_SM, REG_UNIT, MAX_WARPS, MAX_BLOCKS = 65536, 256, 64, 32
SMEM_PER_SM, SMEM_PER_BLOCK_RESERVED, SMEM_UNIT = 228 * 1024, 1024, 128


def find_nvcc():
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if nvcc:
        return nvcc
    try:  # pip's nvidia-cuda-nvcc (with nvidia-cuda-runtime, nvidia-cuda-crt, nvidia-nvvm)
        import nvidia
        found = [c for base in nvidia.__path__ for c in sorted(glob.glob(os.path.join(base, "cu*", "bin", "nvcc")))]
        if found:
            return found[-1]
    except ImportError:
        pass
    return None


def short_name(mangled):
    out = subprocess.run(["c++filt", mangled], capture_output=True, text=True).stdout.strip() or mangled
    out = re.sub(r"(ccn::cuda::)?\(anonymous namespace\)::", "", out)
    return re.sub(r"^void ", "", re.sub(r"\(.*\)$", "", out))


def occupancy(regs, smem, threads):
    warps = -(-threads // 32)
    regs_per_warp = -(-max(regs, 1) * 32 // REG_UNIT) * REG_UNIT
    by_regs = (REGS_PER_SM // regs_per_warp) // warps
    smem_alloc = -(-(smem + SMEM_PER_BLOCK_RESERVED) // SMEM_UNIT) * SMEM_UNIT
    by_smem = SMEM_PER_SM // smem_alloc
    blocks = min(by_regs, by_smem, MAX_WARPS // warps, MAX_BLOCKS)
    return blocks, blocks * warps / MAX_WARPS


def compile_file(nvcc, cu, arch, tmp):
    cmd = [nvcc, f"-arch={arch}", "-std=c++17", "-O3", "-lineinfo", "-DCCN_WITH_CUDA=1", "-I" + os.path.join(ROOT, "csrc"),
           "-I" + os.path.dirname(os.path.abspath(cu))]
    ptx = os.path.join(tmp, os.path.basename(cu) + ".ptx")
    subprocess.run(cmd + ["-ptx", cu, "-o", ptx], check=True, capture_output=True)
    maxntid, entry = {}, None
    for line in open(ptx):
        m = re.match(r"\.visible \.entry (\S+?)\(|\.entry (\S+?)\(", line.strip())
        if m:
            entry = m.group(1) or m.group(2)
        m = re.match(r"\.maxntid (\d+), (\d+), (\d+)", line.strip())
        if m and entry:
            maxntid[entry] = int(m.group(1)) * int(m.group(2)) * int(m.group(3))
    err = subprocess.run(cmd + ["-c", cu, "-o", os.path.join(tmp, "x.o"), "-Xptxas", "-v"], check=True,
                         capture_output=True, text=True).stderr
    kernels, current = [], None
    for line in err.splitlines():
        m = re.search(r"Compiling entry function '(\S+)'", line)
        if m:
            current = {"mangled": m.group(1), "file": os.path.basename(cu)}
            kernels.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(s.group(1)) if s else 0
    for k in kernels:
        k["name"] = short_name(k["mangled"])
        k["threads"] = maxntid.get(k["mangled"], 256)
        k["blocks_per_sm"], k["occupancy"] = occupancy(k["registers"], k["smem"], k["threads"])
    return kernels


def collect(arch="sm_90", files=None):
    nvcc = find_nvcc()
    if nvcc is None:
        raise SystemExit("kernel_resources: nvcc not found (set NVCC, or pip install nvidia-cuda-nvcc "
                         "nvidia-cuda-runtime nvidia-cuda-crt nvidia-nvvm)")
    with tempfile.TemporaryDirectory() as tmp:
        return [k for cu in files or sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
                for k in compile_file(nvcc, cu, arch, tmp)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--json")
    ap.add_argument("files", nargs="*", help="these .cu files instead of csrc/cuda's")
    args = ap.parse_args(argv)
    kernels = collect(args.arch, args.files)
    print(f"{'kernel':<44} {'regs':>4} {'smem':>6} {'spill st/ld':>11} {'stack':>5} {'threads':>7} {'blocks/SM':>9} "
          f"{'occupancy':>9}")
    for k in kernels:
        print(f"{k['name']:<44} {k['registers']:>4} {k['smem']:>6} {k['spill_stores']:>5}/{k['spill_loads']:<5} {k['stack']:>5} "
              f"{k['threads']:>7} {k['blocks_per_sm']:>9} {k['occupancy']:>9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(kernels, f, indent=1)
    # A stack frame alone (a local array the compiler could not keep in registers) is not a spill.
    spills = [k for k in kernels if k["spill_stores"] or k["spill_loads"]]
    for k in spills:
        print(f"FAIL {k['name']} ({k['file']}): {k['spill_stores']} bytes spill stores, {k['spill_loads']} bytes "
              f"spill loads")
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
