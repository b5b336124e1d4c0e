"""Checkpoints: ``<save-path>/ConvNet__<date>/<epoch>.<batchnum>``.

A checkpoint is one pickled dict holding the options, the resolved layer list, every
layer's weights and momentum, the dropout RNG position, the data position and the metric
history. It is written to a temporary file in the same directory and renamed into place,
so a crash never leaves a half-written checkpoint under a checkpoint's name.
"""
import datetime
import os
import pickle
import re

MAGIC = "ccn-checkpoint"
VERSION = 1
_NAME = re.compile(r"^(\d+)\.(\d+)$")


class CheckpointError(ValueError):
    pass


def new_run_dir(save_path):
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H.%M.%S")
    path = os.path.join(save_path, f"ConvNet__{stamp}")
    suffix = 1
    while os.path.exists(path):
        suffix += 1
        path = os.path.join(save_path, f"ConvNet__{stamp}_{suffix}")
    os.makedirs(path)
    return path


def save(run_dir, epoch, batchnum, state):
    """Writes state atomically as run_dir/<epoch>.<batchnum>; returns the path."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, f"{epoch}.{batchnum}")
    tmp = path + ".tmp"
    payload = dict(state, magic=MAGIC, version=VERSION)
    try:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def list_checkpoints(run_dir):
    """Checkpoint paths in run_dir, oldest first."""
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
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    return path


def load(path):
    """Loads a checkpoint (file or run directory); returns (state dict, file path, run dir)."""
    path = resolve(path)
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
    except Exception as e:  # a truncated file or not a pickle at all
        raise CheckpointError(f"{path}: not a convnet checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("magic") != MAGIC:
        raise CheckpointError(f"{path}: not a convnet checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} is not supported (expected {VERSION})")
    return state, path, os.path.dirname(os.path.abspath(path))
