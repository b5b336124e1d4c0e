#!/usr/bin/env python3
"""Runs README.md's commands as a new user would, so that README cannot drift from what works.

    python3 tools/readme_check.py print test            # README's "run the tests" command
    python3 tools/readme_check.py run test               # ... run in this checkout (CI)
    python3 tools/readme_check.py run train --epochs=1   # in a fresh copy of the repository:
        # README's "train the default net" command for one epoch, then the other commands of
        # README's "Looking inside a net" and resume, on the run it wrote

The Quick start block holds two one-line commands, each after a comment line ("# set
everything up and train the default net", "# set everything up and run the tests"); every
other README command names a run as runs/ConvNet__<date>, replaced here by the real one.
With --wheel-dir DIR the package is built once into DIR (in a virtual environment of its own)
and the commands install that wheel where README says `pip install .`: the same source,
without compiling it again for each command. Only the standard library is used (it runs
before anything is installed).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
QUICK_START = {"train": "set everything up and train the default net",
               "test": "set everything up and run the tests"}
# README commands run after training (the section "Looking inside a net", resume and test)
LATER_COMMANDS = re.compile(r"^(python (shownet\.py|convnet\.py -f|-m ccn\.export)|ccn-(show|export|train) -f)")


def bash_blocks(text):
    """The contents of README's ```bash blocks, with backslash continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [block.replace("\\\n", " ") for block in blocks]


def quick_start(text, which):
    """The command on the line after '# <QUICK_START[which]>'."""
    for block in bash_blocks(text):
        lines = block.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.strip() == f"# {QUICK_START[which]}":
                return lines[i + 1].strip()
    raise SystemExit(f"readme_check: README.md has no line '# {QUICK_START[which]}' followed by a command")


def later_commands(text):
    """README's commands that use a trained run (shownet, export, resume, test-only)."""
    out = []
    for block in bash_blocks(text):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line.strip()) if not line.strip().startswith("#") else ""
            if (LATER_COMMANDS.match(line) and "runs/ConvNet__<date>" in line
                    and "<" not in line.replace("runs/ConvNet__<date>", "")):
                out.append(re.sub(r"\s+", " ", line))
    return out


def build_wheel(wheel_dir):
    """Builds ccn's wheel once (in a virtual environment of its own); returns its path."""
    found = sorted(glob.glob(os.path.join(wheel_dir, "ccn-*.whl")))
    if found:
        return os.path.abspath(found[-1])
    env_dir = tempfile.mkdtemp(prefix="ccn-wheel-venv-")
    subprocess.run([sys.executable, "-m", "venv", env_dir], check=True)
    subprocess.run([os.path.join(env_dir, "bin", "pip"), "wheel", "-q", "--no-deps", "-w", wheel_dir, ROOT],
                   check=True)
    shutil.rmtree(env_dir, ignore_errors=True)
    return build_wheel(wheel_dir)


def with_wheel(command, wheel):
    """README's `pip install .` / `pip install ".[extra]"` pointed at the built wheel."""
    command = re.sub(r'pip install "\.\[(\w+)\]"', lambda m: f'pip install "{wheel}[{m.group(1)}]"', command)
    return re.sub(r"pip install \.(?=\s|$)", f"pip install {wheel}", command)


def run(command, cwd):
    print(f"readme_check: $ {command}", flush=True)
    subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, check=True)


def fresh_copy():
    """The repository's files (tracked and new, not ignored) in a new directory."""
    files = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    dest = tempfile.mkdtemp(prefix="ccn-readme-")
    for name in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), os.path.join(dest, name))
    return dest


def check_train(text, epochs, wheel):
    """README's training command in a fresh copy, briefly; then its later commands on that run."""
    where = fresh_copy()
    try:
        command = quick_start(text, "train")
        if wheel:
            command = with_wheel(command, wheel)
        run(f"{command} --epochs={epochs}", where)
        runs = glob.glob(os.path.join(where, "runs", "ConvNet__*"))
        if len(runs) != 1:
            raise SystemExit(f"readme_check: expected one run under {where}/runs, found {runs}")
        run_dir = os.path.relpath(runs[0], where)
        for later in later_commands(text):
            later = later.replace("runs/ConvNet__<date>", run_dir)
            if "--epochs" not in later and re.match(r"(python convnet\.py|ccn-train) -f \S+$", later):
                later += f" --epochs={epochs + 1} --max-batches=1"  # resume: one more batch
            run(f". .venv/bin/activate && {later}", where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("print", "run"))
    p.add_argument("which", choices=sorted(QUICK_START))
    p.add_argument("--epochs", type=int, default=1, help="epochs of the training command (default 1)")
    p.add_argument("--wheel-dir", help="build the wheel once into this folder and install it for '.'")
    args = p.parse_args(argv)
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if args.action == "print":
        print(quick_start(text, args.which))
        return 0
    wheel = build_wheel(os.path.abspath(args.wheel_dir)) if args.wheel_dir else None
    if args.which == "test":
        command = quick_start(text, "test")
        run(with_wheel(command, wheel) if wheel else command, ROOT)
    else:
        check_train(text, args.epochs, wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
