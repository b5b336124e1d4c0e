#!/usr/bin/env python3
"""Resident memory over a long run: convnet.py trains in a child process while this script
samples its RSS (/proc/<pid>/status) and notes it at the end of every epoch (the epoch's
test line). A leak shows as RSS growing from epoch to epoch.

    python benchmarks/memory_soak.py --epochs=10 -- --layer-def=layers.cfg \
        --layer-params=layer-params.cfg --data-provider=fashion-mnist --train-range=1-2

Arguments after `--` go to convnet.py (a --save-path in a temporary folder is added).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_LINE = re.compile(r"^(\d+)\.\d+ test:")


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("convnet_args", nargs=argparse.REMAINDER)
    args = p.parse_args()
    extra = [a for a in args.convnet_args if a != "--"]
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, os.path.join(REPO, "convnet.py"), *extra, f"--epochs={args.epochs}",
                   f"--save-path={tmp}", "--test-one=1"]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        peak = [0]

        def sample():
            while child.poll() is None:
                peak[0] = max(peak[0], rss_bytes(child.pid) or 0)
                time.sleep(0.1)

        threading.Thread(target=sample, daemon=True).start()
        at_epoch = {}
        for line in child.stdout:
            for part in line.replace("\r", "\n").splitlines():
                match = TEST_LINE.match(part.strip())
                if match:
                    at_epoch[int(match.group(1))] = rss_bytes(child.pid)
        code = child.wait()
    if code:
        sys.exit(f"memory_soak: convnet.py exited with {code}")
    print(f"# memory_soak: {' '.join(extra)} --epochs={args.epochs}")
    print("| epoch | RSS MiB |")
    print("|---|---|")
    for epoch in sorted(at_epoch):
        print(f"| {epoch} | {at_epoch[epoch] / 2**20:.1f} |")
    first, last = min(at_epoch), max(at_epoch)
    base = at_epoch.get(2, at_epoch[first])
    print(f"RSS after epoch {last} vs epoch {2 if 2 in at_epoch else first}: {100 * (at_epoch[last] / base - 1):+.2f}%"
          f"  (peak {peak[0] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
