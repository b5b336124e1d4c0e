"""Sums the emulator's per-launch counters (CCN_EMU_REPORT files, one JSON line per launch)
per kernel, prints them, and fails (exit 1) on a shared-memory bank conflict:

    CCN_EMU_REPORT=/tmp/emu.jsonl CCN_BUILD_DIR=build/emu python -m pytest tests
    python tools/cuda_emu/check_counters.py /tmp/emu.jsonl [--min-sector-efficiency 0.9]

Sector efficiency: the fewest 32-byte sectors that could hold the bytes a warp asked for,
over the sectors it touched (1 = fully coalesced). Wavefronts: shared-memory passes per
request, against the fewest possible (more: a bank conflict)."""
import argparse
import json
import subprocess
import sys
from collections import defaultdict


def load(paths):
    launches = []
    for path in paths:
        with open(path) as f:
            launches += [json.loads(line) for line in f if line.strip()]
    return launches


def per_kernel(launches):
    """kernel -> summed counters, with the worst conflict's code address."""
    total = defaultdict(lambda: defaultdict(int))
    for launch in launches:
        t = total[launch["kernel"]]
        t["launches"] += 1
        for space in ("global", "shared"):
            for key, value in launch[space].items():
                if isinstance(value, int) and key != "worst_ways":
                    t[f"{space}_{key}"] += value
        if launch["shared"]["worst_ways"] > t["worst_ways"]:
            t["worst_ways"] = launch["shared"]["worst_ways"]
            t["where"] = (launch["object"], launch["shared"]["worst_pc"])
    return total


def source_line(obj, pc):
    try:
        out = subprocess.run(["addr2line", "-C", "-f", "-s", "-e", obj, pc], capture_output=True, text=True,
                             timeout=30).stdout.split()
        return " ".join(out) if out else pc
    except (OSError, subprocess.SubprocessError):
        return pc


def sector_efficiency(t):
    return t["global_ideal_sectors"] / t["global_sectors"] if t["global_sectors"] else 1.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--min-sector-efficiency", type=float, default=0.0,
                    help="also fail when a kernel's sector efficiency is below this")
    args = ap.parse_args(argv)
    total = per_kernel(load(args.reports))
    failures = []
    print(f"{'kernel':<40} {'launches':>8} {'sector eff':>10} {'wavefronts/ideal':>16} {'conflicts':>9}")
    for name in sorted(total):
        t = total[name]
        eff = sector_efficiency(t)
        waves = t["shared_wavefronts"] / t["shared_ideal_wavefronts"] if t["shared_ideal_wavefronts"] else 1.0
        print(f"{name:<40} {t['launches']:>8} {eff:>10.3f} {waves:>16.3f} {t['shared_conflicts']:>9}")
        if t["shared_conflicts"]:
            failures.append(f"{name}: bank conflict ({t['worst_ways']}-way) at {source_line(*t['where'])}")
        if eff < args.min_sector_efficiency:
            failures.append(f"{name}: sector efficiency {eff:.3f} < {args.min_sector_efficiency}")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
