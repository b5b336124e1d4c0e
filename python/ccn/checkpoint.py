"""Checkpoints: ``<save-path>/ConvNet__<date>/<epoch>.<batchnum>``, one file each.

A checkpoint is a single safetensors file (https://github.com/huggingface/safetensors):
loading it runs no code from the file. Every weight, bias and momentum array is a float32
tensor; everything else (options, resolved layer list, dropout RNG position, data position,
metric history) is JSON in the file's ``__metadata__``:

    format   "ccn-checkpoint"
    version  "2"
    state    the JSON state; ``params`` maps layer -> key -> tensor name (or a list of names)
    sha256   hex digest over the state text and every tensor's name, dtype, shape and bytes

The digest is checked on every load, so a flipped byte anywhere is reported instead of
loading changed weights. Loading a run directory takes its newest checkpoint that verifies
and says in one line which damaged one it skipped; the trainer keeps the two newest for this.

A checkpoint is written to ``<name>.tmp`` in the same directory, fsynced, renamed into place
and the directory fsynced, so a crash never leaves a half-written file under a checkpoint's
name; orphan ``*.tmp`` files of a killed run are removed when training starts again
(``remove_orphans``).

Checkpoints of version 1 were pickles, which run code chosen by whoever wrote the file; they
load only with ``allow_pickle`` (``--allow-pickle``), with a warning, or are converted once:

    python -m ccn.checkpoint --convert runs/ConvNet__<date>/<epoch>.<batch>

Only regular files are opened (a FIFO or device named like a checkpoint is refused, never
waited on). Every field is checked before use: a missing or damaged field is one line
naming it, never a net resumed with fresh weights.
"""
import argparse
import datetime
import hashlib
import json
import os
import pickle
import re
import struct
import sys

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as _tensors_from_bytes, save as _tensors_to_bytes

from .regular_file import NotARegularFile, read_regular_file

MAGIC = "ccn-checkpoint"
VERSION = 2
_PICKLE_VERSION = 1
MAX_BYTES = 1 << 40
_NAME = re.compile(r"^(\d+)\.(\d+)$")
# keys of resolved layer dicts (docs/layer-dicts.md) that are always ints, and those a weight
# layer's shapes are computed from
_INT_KEYS = frozenset({"outputs", "outChannels", "outSizeY", "outSizeX", "channels", "filters", "filterSize",
                       "filterChannels", "padding", "stride", "groups", "modulesY", "modulesX", "imgSizeY",
                       "imgSizeX", "dataIdx", "gpu", "partialSum", "sizeX", "start"})
_SHAPE_KEYS = {"conv": ("channels", "filterChannels", "filterSize", "filters", "modulesY", "modulesX", "outputs"),
               "local": ("channels", "filterChannels", "filterSize", "filters", "modulesY", "modulesX", "outputs"),
               "fc": ("outputs",)}
_INTEGER_FIELDS = {"epoch": 1, "batchnum": 0, "batches_done": 0, "rng_counter": 0}  # field: least value


class CheckpointError(ValueError):
    pass


class PickleCheckpointError(CheckpointError):
    """A version-1 (pickle) checkpoint met without allow_pickle."""


def new_run_dir(save_path):
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H.%M.%S")
    path = os.path.join(save_path, f"ConvNet__{stamp}")
    suffix = 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join(save_path, f"ConvNet__{stamp}_{suffix}")
    os.makedirs(path)
    return path


# -- encoding ---------------------------------------------------------------------------------------
def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be stored in a checkpoint")


def _split_params(params):
    """({layer: {key: name or [names]}}, {name: float32 array}) for a params dict."""
    refs, tensors = {}, {}

    def add(name, array):
        if name in tensors:
            raise CheckpointError(f"two parameter arrays would be stored as '{name}'")
        tensors[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    for layer, entries in params.items():
        refs[layer] = {}
        for key, value in entries.items():
            if isinstance(value, (list, tuple)):
                refs[layer][key] = [add(f"{layer}/{key}/{i}", a) for i, a in enumerate(value)]
            else:
                refs[layer][key] = add(f"{layer}/{key}", value)
    return refs, tensors


def _digest(state_text, tensors):
    h = hashlib.sha256(state_text.encode("utf-8"))
    for name in sorted(tensors):
        array = tensors[name]
        h.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8"))
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def encode(state):
    """The bytes of a checkpoint holding state (a dict with a ``params`` entry)."""
    refs, tensors = _split_params(state.get("params", {}))
    text = json.dumps(dict(state, params=refs) if "params" in state else state,
                      default=_json_default, separators=(",", ":"))
    metadata = {"format": MAGIC, "version": str(VERSION), "state": text, "sha256": _digest(text, tensors)}
    return _tensors_to_bytes(tensors, metadata=metadata)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path, data):
    """Writes data to path through path.tmp: fsync, rename, fsync of the directory."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def save(run_dir, epoch, batchnum, state):
    """Writes state atomically as run_dir/<epoch>.<batchnum>; returns the path."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, f"{epoch}.{batchnum}")
    write_atomic(path, encode(state))
    return path


def remove_orphans(run_dir):
    """Removes the ``*.tmp`` files a killed writer left in run_dir; returns their paths."""
    removed = []
    for name in os.listdir(run_dir):
        full = os.path.join(run_dir, name)
        if name.endswith(".tmp") and os.path.isfile(full) and not os.path.islink(full):
            os.remove(full)
            removed.append(full)
    return removed


# -- decoding ---------------------------------------------------------------------------------------
def _decode(data, path):
    if len(data) < 9 or data[8:9] != b"{":
        raise CheckpointError(f"{path}: not a convnet checkpoint")
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
        metadata = header.get("__metadata__") or {}
        tensors = _tensors_from_bytes(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError, struct.error) as e:
        raise CheckpointError(f"{path}: damaged checkpoint (unreadable tensor file: {e})") from None
    if metadata.get("format") != MAGIC:
        raise CheckpointError(f"{path}: not a convnet checkpoint (a safetensors file without ccn state)")
    if metadata.get("version") != str(VERSION):
        raise CheckpointError(f"{path}: checkpoint version {metadata.get('version')} is not supported (expected {VERSION})")
    text = metadata.get("state", "")
    if metadata.get("sha256") != _digest(text, tensors):
        raise CheckpointError(f"{path}: damaged checkpoint (sha256 does not match its contents)")
    try:
        state = json.loads(text)
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged checkpoint (state is not JSON: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (state is not a JSON object)")
    refs = state.get("params")
    if isinstance(refs, dict):
        state["params"] = _join_params(refs, tensors, path)
    return state


def _join_params(refs, tensors, path):
    def get(name, where):
        if not isinstance(name, str) or name not in tensors:
            raise CheckpointError(f"{path}: field 'params.{where}' names no stored tensor")
        return tensors[name]

    params = {}
    for layer, entries in refs.items():
        if not isinstance(entries, dict):
            raise CheckpointError(f"{path}: field 'params.{layer}' is not a mapping of arrays")
        params[layer] = {key: [get(n, f"{layer}.{key}") for n in value] if isinstance(value, list)
                         else get(value, f"{layer}.{key}") for key, value in entries.items()}
    return params


def _unpickle(data, path):
    try:
        state = pickle.loads(data)
    except Exception as e:  # a damaged pickle fails in many ways; all mean "damaged"
        raise CheckpointError(f"{path}: damaged pickle checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("magic") != MAGIC:
        raise CheckpointError(f"{path}: not a convnet checkpoint")
    if state.get("version") != _PICKLE_VERSION:
        raise CheckpointError(f"{path}: pickle checkpoint version {state.get('version')} is not supported")
    return {k: v for k, v in state.items() if k not in ("magic", "version")}


def _is_pickle(data):
    # a safetensors file has its JSON header's "{" at byte 8 (its first byte is part of the
    # header length and may be 0x80 too); a pickle of protocol 2 or later starts with PROTO
    return data[8:9] != b"{" and data[:1] == b"\x80"


# -- validation -------------------------------------------------------------------------------------
def _weight_types():
    from . import config
    return {t for t, cls in config.LAYER_PARSERS.items() if "epsW" in cls.learning_keys}


def validate(state, path):
    """Raises CheckpointError naming the first missing or damaged field of state."""
    def bad(field, why):
        raise CheckpointError(f"{path}: damaged checkpoint: field '{field}' {why}")

    for key, kind in (("op", dict), ("layers", list), ("params", dict),
                      ("train_outputs", list), ("test_outputs", list)):
        if key not in state:
            bad(key, "is missing")
        if not isinstance(state[key], kind):
            bad(key, f"is a {type(state[key]).__name__}, expected a {'list' if kind is list else 'mapping'}")
    for key, least in _INTEGER_FIELDS.items():
        value = state.get(key)
        if key not in state:
            bad(key, "is missing")
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2 ** 63:
            bad(key, f"is {value!r}, expected an integer >= {least}")
    _validate_op(state["op"], bad)
    train_range = state["op"].get("train_range")
    if state["batchnum"] and isinstance(train_range, list) and state["batchnum"] not in train_range:
        bad("batchnum", f"is {state['batchnum']}, not a batch of the options' train_range")
    for key in ("train_outputs", "test_outputs"):
        for i, entry in enumerate(state[key]):
            if not _is_output_entry(entry):
                bad(f"{key}[{i}]", "is not [epoch, batch, {cost layer: [cost, error, top-k error]}, cases]")
    if not state["layers"]:
        bad("layers", "is empty")
    seen = set()
    for i, layer in enumerate(state["layers"]):
        if not isinstance(layer, dict):
            bad(f"layers[{i}]", "is not a mapping")
        name = layer.get("name")
        if not isinstance(name, str) or not name or name in seen:
            bad(f"layers[{i}].name", "is missing, not a string or repeated")
        seen.add(name)
    weight_types = _weight_types()
    for layer in state["layers"]:
        name = layer["name"]
        where = f"layers['{name}']"
        if not isinstance(layer.get("type"), str):
            bad(f"{where}.type", "is missing or not a string")
        if layer["type"] != "data":
            inputs = layer.get("inputs")
            if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) and x in seen for x in inputs):
                bad(f"{where}.inputs", "is missing or does not name layers of the checkpoint")
        for key in _INT_KEYS.intersection(layer):
            if not _is_int(layer[key]) or not 0 <= layer[key] < 2 ** 31:
                bad(f"{where}.{key}", f"is {layer[key]!r}, expected an integer in [0, 2^31)")
        for key in _SHAPE_KEYS.get(layer["type"], ()):
            if key not in layer:
                bad(f"{where}.{key}", "is missing")
        if layer["type"] in weight_types:
            _validate_params(state["params"].get(name), name, len(layer["inputs"]), bad)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_output_entry(entry):
    return (isinstance(entry, (list, tuple)) and len(entry) == 4 and _is_int(entry[0]) and _is_int(entry[1])
            and _is_int(entry[3]) and isinstance(entry[2], dict)
            and all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
                    for v in entry[2].values()))


def _validate_op(op, bad):
    """Each stored option has its default's type; options without a default are str, or
    lists (batch ranges of ints, devices of str)."""
    from .options import DEFAULTS
    for key, value in op.items():
        if key not in DEFAULTS or value is None:
            continue
        default = DEFAULTS[key]
        if key in ("train_range", "test_range"):
            ok = isinstance(value, list) and value and all(_is_int(x) for x in value)
        elif key == "gpu":
            ok = isinstance(value, list) and value and all(isinstance(x, str) for x in value)
        elif default is None:
            ok = isinstance(value, str)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):  # counts and sizes; a negative default marks a special value
            ok = _is_int(value) and (value >= 0 or default < 0)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            bad(f"op.{key}", f"is {value!r}, not a valid value of --{key.replace('_', '-')}")


def _validate_params(params, name, num_inputs, bad):
    if params is None:
        bad(f"params.{name}", "is missing (the layer's weights are not in the checkpoint)")
    if not isinstance(params, dict):
        bad(f"params.{name}", "is not a mapping of arrays")
    for key in ("weights", "biases"):
        if key not in params:
            bad(f"params.{name}.{key}", "is missing")
    for key, value in params.items():
        arrays = value if isinstance(value, (list, tuple)) else [value]
        if key.startswith("weights") and (not isinstance(value, (list, tuple)) or len(value) != num_inputs):
            bad(f"params.{name}.{key}", f"is not a list of {num_inputs} arrays (one per input)")
        for a in arrays:
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
                bad(f"params.{name}.{key}", "is not a float array")
            if not np.isfinite(a).all():
                bad(f"params.{name}.{key}", "holds NaN or Inf")


# -- loading ----------------------------------------------------------------------------------------
def list_checkpoints(run_dir):
    """Checkpoint paths in run_dir (regular files named <epoch>.<batch>), oldest first."""
    found = []
    for name in os.listdir(run_dir):
        m = _NAME.match(name)
        if m and os.path.isfile(os.path.join(run_dir, name)):
            found.append(((int(m.group(1)), int(m.group(2))), os.path.join(run_dir, name)))
    return [p for _, p in sorted(found)]


def resolve(path):
    """A checkpoint file, or a run directory's newest checkpoint."""
    if os.path.isdir(path):
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: no checkpoint (<epoch>.<batch> file) in this directory")
        return found[-1]
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    return path


def read(path, allow_pickle=False):
    """The verified state of the checkpoint file at path (CheckpointError when it is not one)."""
    try:
        data = read_regular_file(path, MAX_BYTES)
    except NotARegularFile as e:
        raise CheckpointError(str(e)) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if _is_pickle(data):
        if not allow_pickle:
            raise PickleCheckpointError(
                f"{path}: an old pickle checkpoint, which can run any code when loaded; if you trust "
                f"its source, pass --allow-pickle or convert it once: python -m ccn.checkpoint --convert {path}")
        print(f"ccn: warning: loading pickle checkpoint {path} (--allow-pickle): it can run code", file=sys.stderr)
        state = _unpickle(data, path)
    else:
        state = _decode(data, path)
    validate(state, path)
    return state


def load(path, allow_pickle=False):
    """Loads a checkpoint file, or a run directory's newest checkpoint that verifies (saying
    in one line on stderr which damaged ones it skipped); returns (state, file path, run dir)."""
    if not os.path.isdir(path):
        path = resolve(path)
        return read(path, allow_pickle), path, os.path.dirname(os.path.abspath(path))
    candidates = list(reversed(list_checkpoints(path)))
    if not candidates:
        resolve(path)  # raises the "no checkpoint" error
    skipped = []
    for candidate in candidates:
        try:
            state = read(candidate, allow_pickle)
        except PickleCheckpointError:
            raise
        except CheckpointError as e:
            skipped.append(str(e))
            continue
        if skipped:
            print(f"ccn: warning: {'; '.join(skipped)}; loaded the older checkpoint {candidate}", file=sys.stderr)
        return state, candidate, os.path.abspath(path)
    raise CheckpointError(skipped[0] + (f" (and {len(skipped) - 1} older checkpoint(s) are damaged too)"
                                        if len(skipped) > 1 else ""))


# -- one-off conversion of pickle checkpoints ---------------------------------------------------------
def convert(path):
    """Rewrites the pickle checkpoint at path in this format; the pickle is kept as path.pickle."""
    try:
        is_pickle = _is_pickle(read_regular_file(path, MAX_BYTES)[:16])
    except NotARegularFile as e:
        raise CheckpointError(str(e)) from None
    if not is_pickle:
        raise CheckpointError(f"{path}: not a pickle checkpoint (nothing to convert)")
    state = read(path, allow_pickle=True)
    backup = path + ".pickle"
    os.replace(path, backup)
    write_atomic(path, encode(state))
    read(path)  # the new file verifies
    return backup


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ccn.checkpoint", description="Convert pickle checkpoints (version 1).")
    p.add_argument("--convert", nargs="+", metavar="CHECKPOINT", required=True,
                   help="pickle checkpoint files to rewrite as safetensors (each kept as <file>.pickle)")
    args = p.parse_args(argv)
    try:
        for path in args.convert:
            backup = convert(path)
            print(f"converted {path} (the pickle is kept as {backup})")
        return 0
    except (ValueError, OSError) as e:
        print(f"checkpoint: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
