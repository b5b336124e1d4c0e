"""python -m ccn.export -f <checkpoint> --format=npz|safetensors --out=<file> [--allow-pickle]

Writes a checkpoint's weights as one file for use outside ccn: every weight matrix as
"<layer>.weights.<i>" (i: the input it applies to) and every bias vector as
"<layer>.biases", float32, in the engine's layouts (docs/DESIGN.md): conv
(filterChannels*filterSize^2, filters) with rows ordered (channel, row, col), local
(modules*filterChannels*filterSize^2, filters), fc (inputs, outputs); biases (filters,),
(filters*modules,) for untied biases, (outputs,) for fc.

safetensors files are written by the safetensors package, with the metadata
{"format": "ccn", "checkpoint": <checkpoint file name>}.
"""
import argparse
import os
import sys

import numpy as np
from safetensors.numpy import save_file

from . import checkpoint

FORMATS = ("npz", "safetensors")


def weight_arrays(state):
    """{name: float32 array} of a checkpoint's weights and biases, layers in graph order."""
    arrays = {}
    for layer in state["layers"]:
        params = state["params"].get(layer["name"])
        if params is None:
            continue
        for i, w in enumerate(params["weights"]):
            arrays[f"{layer['name']}.weights.{i}"] = np.ascontiguousarray(w, dtype=np.float32)
        arrays[f"{layer['name']}.biases"] = np.ascontiguousarray(params["biases"], dtype=np.float32)
    return arrays


def write_npz(path, arrays):
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **arrays)


def write_safetensors(path, arrays, metadata=None):
    save_file(arrays, path, metadata={str(k): str(v) for k, v in (metadata or {}).items()} or None)


def build_parser():
    p = argparse.ArgumentParser(prog="python -m ccn.export", description="Write a checkpoint's weights as npz or safetensors.")
    p.add_argument("-f", dest="load_file", required=True, help="checkpoint file, or a run directory (its newest checkpoint)")
    p.add_argument("--format", choices=FORMATS, help="npz or safetensors (default: from --out's extension, else npz)")
    p.add_argument("--out", help="output file (default: <checkpoint>.<format> beside the checkpoint)")
    p.add_argument("--allow-pickle", action="store_true", help="load an old pickle checkpoint (it can run code)")
    return p


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        state, path, _ = checkpoint.load(args.load_file, allow_pickle=args.allow_pickle)
        fmt = args.format
        if fmt is None:
            ext = os.path.splitext(args.out or "")[1].lstrip(".")
            fmt = ext if ext in FORMATS else "npz"
        out = args.out or f"{path}.{fmt}"
        arrays = weight_arrays(state)
        if fmt == "npz":
            write_npz(out, arrays)
        else:
            write_safetensors(out, arrays, {"format": "ccn", "checkpoint": os.path.basename(path)})
        print(f"wrote {out} ({len(arrays)} arrays)")
        return 0
    except (ValueError, OSError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
