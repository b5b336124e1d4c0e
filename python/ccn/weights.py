"""Weight shapes, initialisation (initW / initB / initWFunc) and fine-tune copying.

Shapes come from config.py (conv (filterChannels*filterSize^2, filters); local
(modules*filterChannels*filterSize^2, filters); fc (inputs_i, outputs); biases a vector).
"""
import importlib

import numpy as np

from . import config

WEIGHT_TYPES = ("conv", "local", "fc")


def _per_input(layer, key, default=None):
    value = layer.get(key, default)
    n = len(layer["inputs"])
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def weight_shapes(layer, layers_by_name):
    """[(rows, cols) for each weight matrix], (bias length,): the shapes config.py derives."""
    if layer["type"] not in WEIGHT_TYPES:
        raise ValueError(f"layer '{layer['name']}' of type {layer['type']} has no weights")
    return config.weight_shapes(layer, layers_by_name), (config.bias_shape(layer),)


def _call_init_func(spec, layer, idx, shape):
    """cuda-convnet's initWFunc / initBFunc: 'module.function(arg, ...)', the module found on
    the Python path, called as function(name, idx, (rows, cols), params=[args as strings])
    for weight matrix idx, and as function(name, (rows, cols), params=[...]) for the biases
    (idx None; shape (1, n) as the originals passed it). Any failure is one ValueError line."""
    text = spec.strip()
    params = []
    if "(" in text:
        text, args = text.split("(", 1)
        params = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
    module_name, _, func_name = text.strip().rpartition(".")
    what = f"layer '{layer['name']}': init function '{spec}'"
    if not module_name:
        raise ValueError(f"{what} must be module.function")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except ImportError as e:
        raise ValueError(f"{what}: cannot import module '{module_name}' ({e}); put it on PYTHONPATH") from None
    except AttributeError:
        raise ValueError(f"{what}: module '{module_name}' has no function '{func_name}'") from None
    called_shape = tuple(shape) if idx is not None else (1, int(np.prod(shape)))
    try:
        value = func(layer["name"], idx, called_shape, params=params) if idx is not None \
            else func(layer["name"], called_shape, params=params)
        value = np.asarray(value, dtype=np.float32)
    except Exception as e:  # noqa: BLE001 - the user's code: any failure becomes one line
        raise ValueError(f"{what} failed: {type(e).__name__}: {e}".replace("\n", " ")) from None
    if value.size != int(np.prod(shape)) or (idx is not None and value.shape != tuple(shape)):
        raise ValueError(f"{what} returned shape {value.shape}, expected {called_shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{what} returned NaN or Inf")
    return value.reshape(shape)


def init_params(layer, layers_by_name, rng):
    """Fresh parameters of a weight layer: {'weights': [...] (None where weightSource shares),
    'biases', 'weightsInc', 'biasesInc'}."""
    wshapes, bshape = weight_shapes(layer, layers_by_name)
    init_w = _per_input(layer, "initW", 0.01)
    sources = _per_input(layer, "weightSource", None)
    weights = []
    for i, shape in enumerate(wshapes):
        if sources[i]:
            weights.append(None)
        elif layer.get("initWFunc"):
            weights.append(_call_init_func(layer["initWFunc"], layer, i, shape))
        else:
            weights.append((init_w[i] * rng.standard_normal(shape)).astype(np.float32))
    if layer.get("initBFunc"):
        biases = _call_init_func(layer["initBFunc"], layer, None, bshape)
    else:
        biases = np.full(bshape, layer.get("initB", 0.0), np.float32)
    return {
        "weights": weights,
        "biases": biases,
        "weightsInc": [None if w is None else np.zeros_like(w) for w in weights],
        "biasesInc": np.zeros_like(biases),
    }


def without_shared(params):
    """The params dict with shared (None) weight entries dropped, for Net.set_params."""
    out = dict(params)
    if any(w is None for w in params["weights"]):
        out.pop("weights")
        out.pop("weightsInc")
    return out


def finetune_params(layer, layers_by_name, old_params, rng):
    """Parameters for a fine-tuned layer: the old ones when every shape matches, else fresh.

    Returns (params, reused: bool)."""
    fresh = init_params(layer, layers_by_name, rng)
    if old_params is None:
        return fresh, False
    old_w, new_w = old_params.get("weights", []), fresh["weights"]
    same = (len(old_w) == len(new_w)
            and all(o is None or n is None or np.shape(o) == np.shape(n) for o, n in zip(old_w, new_w))
            and np.shape(old_params["biases"]) == np.shape(fresh["biases"]))
    if not same:
        return fresh, False
    return {
        "weights": [None if n is None else np.asarray(o, np.float32) for o, n in zip(old_w, new_w)],
        "biases": np.asarray(old_params["biases"], np.float32),
        "weightsInc": [None if n is None else np.zeros_like(n) for n in new_w],
        "biasesInc": np.zeros_like(fresh["biases"]),
    }, True
