"""Weights the user chooses instead of the engine's: initWFunc / initBFunc and fine-tuning.

The engine owns weight shapes and initial weights: each matrix is drawn once, when the Net
is built, as initW * N(0, 1) from the counter-based Philox stream of the net's seed (biases
are initB), so one seed gives the same weights on every device. This module only replaces
them where the layer file or the trainer asks for it:

* ``initWFunc`` / ``initBFunc``: cuda-convnet's ``module.function(arg, ...)``, called as the
  originals did (see _call_init_func); it returns the array.
* fine-tuning: a layer's weights from an older net, when every shape matches.
"""
import importlib

import numpy as np

WEIGHT_TYPES = ("conv", "local", "fc")


def call_user_function(spec, layer_name, idx, shape):
    """cuda-convnet's 'module.function(arg, ...)', the module found on the Python path, called
    as function(layer_name, idx, shape, params=[args as strings]) (as function(layer_name,
    shape, params=...) when idx is None). Returns its result; any failure is one ValueError line."""
    text = spec.strip()
    params = []
    if "(" in text:
        text, args = text.split("(", 1)
        params = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
    module_name, _, func_name = text.strip().rpartition(".")
    what = f"layer '{layer_name}': function '{spec}'"
    if not module_name:
        raise ValueError(f"{what} must be module.function")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except ImportError as e:
        raise ValueError(f"{what}: cannot import module '{module_name}' ({e}); put it on PYTHONPATH") from None
    except AttributeError:
        raise ValueError(f"{what}: module '{module_name}' has no function '{func_name}'") from None
    try:
        return func(layer_name, idx, shape, params=params) if idx is not None else func(layer_name, shape, params=params)
    except Exception as e:  # noqa: BLE001 - the user's code: any failure becomes one line
        raise ValueError(f"{what} failed: {type(e).__name__}: {e}".replace("\n", " ")) from None


def _call_init_func(spec, layer, idx, shape):
    """initWFunc / initBFunc as the originals called them: weight matrix idx gets
    function(name, idx, (rows, cols), params=[...]); the biases (idx None) get
    function(name, (1, n), params=[...]). The result must be finite, of that shape."""
    called_shape = tuple(shape) if idx is not None else (1, int(np.prod(shape)))
    what = f"layer '{layer['name']}': init function '{spec}'"
    value = call_user_function(spec, layer["name"], idx, called_shape)
    try:
        value = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} returned no array of numbers ({e})") from None
    if value.size != int(np.prod(shape)) or (idx is not None and value.shape != tuple(shape)):
        raise ValueError(f"{what} returned shape {value.shape}, expected {called_shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{what} returned NaN or Inf")
    return value.reshape(shape)


def apply_init_funcs(net, layer):
    """Replaces the engine's initial weights / biases of `layer` by its initWFunc / initBFunc
    results (shapes read from the net). Returns True when anything was replaced."""
    if not (layer.get("initWFunc") or layer.get("initBFunc")):
        return False
    current = net.get_params(layer["name"])
    update = {}
    if layer.get("initWFunc"):
        sources = layer.get("weightSource") or ""
        sources = sources if isinstance(sources, list) else [sources]
        update["weights"] = [None if i < len(sources) and sources[i] else
                             _call_init_func(layer["initWFunc"], layer, i, w.shape)
                             for i, w in enumerate(current["weights"])]
    if layer.get("initBFunc"):
        update["biases"] = _call_init_func(layer["initBFunc"], layer, None, current["biases"].shape)
    net.set_params(layer["name"], update)
    return True


def load_finetuned(net, name, old_params):
    """Copies a layer's weights and biases from an older net (momentum starts at 0) when
    every shape matches the new layer's; returns whether it did."""
    if old_params is None:
        return False
    current = net.get_params(name)
    old_w = old_params.get("weights", [])
    same = (len(old_w) == len(current["weights"])
            and all(o is None or np.shape(o) == n.shape for o, n in zip(old_w, current["weights"]))
            and np.shape(old_params.get("biases")) == current["biases"].shape)
    if not same:
        return False
    net.set_params(name, {"weights": [None if o is None else np.asarray(o, np.float32) for o in old_w],
                          "biases": np.asarray(old_params["biases"], np.float32)})
    return True
