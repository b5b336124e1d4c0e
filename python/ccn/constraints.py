"""Weight constraints the originals applied after every update (layer-params keys).

* ``wball`` (the 2012 release): each filter (weight column) whose L2 norm exceeds
  wball * weightsPerFilter is scaled down to that norm; weightsPerFilter is the column
  length (filterChannels*filterSize^2 for conv and local, the input size for fc); a local
  layer's columns are taken one module at a time.
* ``wcNormMax`` / ``wcNormMin`` (cuda-convnet2, conv): each filter is scaled so that
  sqrt(sum((w - mean)^2)) / rows, its "norm" around its mean, lies in [wcNormMin, wcNormMax].

Both apply only to matrices the layer owns (not shared through weightSource) and whose base
learning rate is positive, as in the originals.
"""
import numpy as np


def constrained_layers(layers):
    """The layers that have a constraint to apply after each update."""
    return [layer for layer in layers if layer.get("wball") or layer.get("wcNormMax")]


def _max_norm(columns, radius):
    norms = np.sqrt((columns.astype(np.float64) ** 2).sum(axis=-2, keepdims=True))
    factor = np.where(norms > radius, radius / np.maximum(norms, 1e-30), 1.0)
    return (columns * factor).astype(np.float32)


def _contrast_norm(w, low, high):
    rows = w.shape[0]
    centred = w.astype(np.float64) - w.mean(axis=0, keepdims=True, dtype=np.float64)
    norm = np.sqrt((centred ** 2).sum(axis=0, keepdims=True)) / rows
    factor = np.where(norm < low, low / np.maximum(norm, 1e-30), np.where(norm > high, high / np.maximum(norm, 1e-30), 1.0))
    return (w * factor).astype(np.float32)


def constrain(layer, weights):
    """The layer's weight matrices after its constraints (None for a matrix left as it is)."""
    out = []
    sources = layer.get("weightSource") or ""
    sources = sources if isinstance(sources, list) else [sources] * len(weights)
    for i, w in enumerate(weights):
        rate = layer["epsW"][i]["base"]
        if sources[i] or rate <= 0:
            out.append(None)
            continue
        new = w
        ball = (layer.get("wball") or [0.0] * len(weights))[i]
        if ball > 0:
            if layer["type"] == "local":
                per_module = w.shape[0] // (layer["modulesY"] * layer["modulesX"])
                blocks = w.reshape(layer["modulesY"] * layer["modulesX"], per_module, w.shape[1])
                new = _max_norm(blocks, ball * per_module).reshape(w.shape)
            else:
                new = _max_norm(w, ball * w.shape[0])
        if layer.get("wcNormMax") and layer["wcNormMax"][i] > 0:
            new = _contrast_norm(new, layer["wcNormMin"][i], layer["wcNormMax"][i])
        out.append(new)
    return out


def apply(net, layers):
    """Applies every constrained layer's constraints to the net's current weights."""
    for layer in layers:
        weights = constrain(layer, net.get_params(layer["name"])["weights"])
        if any(w is not None for w in weights):
            net.set_params(layer["name"], {"weights": weights})
