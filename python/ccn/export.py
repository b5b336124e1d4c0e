"""ccn-export / python -m ccn.export -f <checkpoint> [--layout=ccn|torch] [--format=npz|safetensors] [--out=FILE]

Writes a checkpoint's weights as one file for use outside ccn: every weight matrix as
"<layer>.weights.<i>" (i: the input it applies to) and every bias vector as "<layer>.biases",
float32, with metadata: the layer order, each array's shape and the resolved layer
definitions (docs/coming-from-pytorch.md shows how to load them).

Layouts (--layout):
  ccn (default), the engine's (docs/DESIGN.md): conv (filterChannels*filterSize^2, filters)
      with rows ordered (channel, row, col); local (modulesY*modulesX*filterChannels*
      filterSize^2, filters), module outermost; fc (inputs, outputs); treefc (inputs, tree
      nodes); biases (filters,),
      (filters*modulesY*modulesX,) untied, (outputs,) for fc.
  torch: conv (filters, filterChannels, filterSize, filterSize) as torch.nn.Conv2d's weight;
      local (modulesY, modulesX, filters, filterChannels, filterSize, filterSize); fc
      (outputs, inputs) as torch.nn.Linear's weight; treefc (tree nodes, inputs); untied biases
      (filters, modulesY, modulesX).

to_torch(path) builds a torch.nn.Module (eval mode) computing the net's test-time outputs
from an export in either layout, a checkpoint or a run directory.
"""
import json
import os
import sys

import numpy as np

from . import checkpoint

FORMATS = ("npz", "safetensors")
LAYOUTS = ("ccn", "torch")
METADATA_KEY = "__ccn_metadata__"  # the npz entry holding the metadata (a JSON string)


def _per_input(layer, key, i):
    """A per-input key's value for input i (conv and local keys may list one per input)."""
    value = layer[key]
    return value[i] if isinstance(value, list) else value


def torch_weight(layer, w, i):
    """One weight matrix of the engine's layout in torch's."""
    kind = layer["type"]
    if kind in ("fc", "treefc"):  # treefc: one row per class-tree node
        return np.ascontiguousarray(w.T)
    if kind in ("conv", "local"):
        fc, fs = _per_input(layer, "filterChannels", i), _per_input(layer, "filterSize", i)
        filters = w.shape[1]
        if kind == "conv":
            return np.ascontiguousarray(w.T.reshape(filters, fc, fs, fs))
        bank = w.reshape(layer["modulesY"], layer["modulesX"], fc, fs, fs, filters)
        return np.ascontiguousarray(bank.transpose(0, 1, 5, 2, 3, 4))
    return w


def torch_bias(layer, b):
    """Untied conv and local biases (filters*modulesY*modulesX,) as (filters, modulesY, modulesX)."""
    if layer["type"] in ("conv", "local") and not layer.get("sharedBiases", False):
        return np.ascontiguousarray(b.reshape(-1, layer["modulesY"], layer["modulesX"]))
    return b


def weight_arrays(state, layout="ccn"):
    """{name: float32 array} of a checkpoint's weights and biases, layers in graph order."""
    if layout not in LAYOUTS:
        raise ValueError(f"--layout: '{layout}' is not one of {', '.join(LAYOUTS)}")
    arrays = {}
    for layer in state["layers"]:
        params = state["params"].get(layer["name"])
        if params is None:
            continue
        for i, w in enumerate(params["weights"]):
            w = np.asarray(w, dtype=np.float32)
            arrays[f"{layer['name']}.weights.{i}"] = torch_weight(layer, w, i) if layout == "torch" else w
        b = np.asarray(params["biases"], dtype=np.float32).reshape(-1)
        arrays[f"{layer['name']}.biases"] = torch_bias(layer, b) if layout == "torch" else b
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}


def metadata(state, arrays, layout, source):
    """What a reader needs besides the arrays: layout, layer order, shapes, the layer dicts."""
    return {"format": "ccn", "layout": layout, "checkpoint": os.path.basename(source),
            "order": json.dumps([layer["name"] for layer in state["layers"]]),
            "shapes": json.dumps({k: list(v.shape) for k, v in arrays.items()}),
            "layers": json.dumps(state["layers"])}


def write_npz(path, arrays, meta=None):
    extra = {METADATA_KEY: np.array(json.dumps(meta))} if meta else {}
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **arrays, **extra)


def write_safetensors(path, arrays, meta=None):
    from safetensors.numpy import save_file
    save_file(arrays, path, metadata={str(k): str(v) for k, v in (meta or {}).items()} or None)


def read_export(path):
    """(arrays, metadata) of a file this module wrote."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != METADATA_KEY}
        meta = json.loads(str(z[METADATA_KEY])) if METADATA_KEY in z.files else {}
    return arrays, meta


def default_out(path, run_dir, layout, fmt):
    """<run dir>/exports/<checkpoint>-<layout>.<format> (beside the checkpoint without a run dir)."""
    folder = os.path.join(run_dir, "exports") if run_dir else os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{os.path.basename(path)}-{layout}.{fmt}")


def build_parser():
    from .options import Parser
    p = Parser(prog="ccn-export", description="Write a checkpoint's weights as npz or safetensors.")
    p.add_argument("-f", dest="load_file", required=True, help="checkpoint file, or a run directory (its newest checkpoint)")
    p.add_argument("--layout", choices=LAYOUTS, default="ccn",
                   help="ccn: the engine's matrices; torch: conv (out, in, k, k), fc (out, in) (default ccn)")
    p.add_argument("--format", choices=FORMATS, help="npz or safetensors (default: from --out's extension, else npz)")
    p.add_argument("--out", help="output file (default: <run dir>/exports/<checkpoint>-<layout>.<format>)")
    p.add_argument("--allow-pickle", action="store_true", help="load an old pickle checkpoint (it can run code)")
    return p


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        state, path, run_dir = checkpoint.load(args.load_file, allow_pickle=args.allow_pickle)
        fmt = args.format
        if fmt is None:
            ext = os.path.splitext(args.out or "")[1].lstrip(".")
            fmt = ext if ext in FORMATS else "npz"
        out = args.out or default_out(path, run_dir, args.layout, fmt)
        arrays = weight_arrays(state, args.layout)
        meta = metadata(state, arrays, args.layout, path)
        (write_npz if fmt == "npz" else write_safetensors)(out, arrays, meta)
        print(f"wrote {out} ({len(arrays)} arrays, {args.layout} layout)")
        return 0
    except (ValueError, OSError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2


def to_torch(source, allow_pickle=False):
    """A torch.nn.Module computing the net's test-time outputs (see ccn.torch_net)."""
    from .torch_net import TorchNet
    if os.path.isfile(source) and source.endswith((".npz", ".safetensors")):
        arrays, meta = read_export(source)
        if meta.get("format") != "ccn" or "layers" not in meta:
            raise ValueError(f"{source}: not a ccn export (no layer definitions in its metadata)")
        layers = json.loads(meta["layers"])
        if meta.get("layout", "ccn") != "torch":
            arrays = weight_arrays({"layers": layers, "params": _params(layers, arrays)}, "torch")
    else:
        state, _, _ = checkpoint.load(source, allow_pickle=allow_pickle)
        layers, arrays = state["layers"], weight_arrays(state, "torch")
    return TorchNet(layers, arrays).eval()


def _params(layers, arrays):
    """An export's arrays regrouped as a checkpoint's params."""
    params = {}
    for layer in layers:
        name = layer["name"]
        if f"{name}.biases" in arrays:
            count = sum(1 for k in arrays if k.startswith(f"{name}.weights."))
            params[name] = {"weights": [arrays[f"{name}.weights.{i}"] for i in range(count)],
                            "biases": arrays[f"{name}.biases"]}
    return params


if __name__ == "__main__":
    sys.exit(main())
