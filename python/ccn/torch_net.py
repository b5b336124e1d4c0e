"""A ccn net as a torch.nn.Module (test-time forward pass), built by ccn.export.to_torch from
the resolved layer dicts and weights in torch layout (ccn.export). Each layer type is
computed as the engine computes it (docs/DESIGN.md): cuda-convnet's output sizes (a last
window may hang over the image), pooling over the window's part inside the image, centred
normalisation windows, inverted dropout (the identity when testing). Requires torch.

    net = ccn.export.to_torch("runs/ConvNet__<date>")
    probs = net(images)   # images (N, channels, rows, cols) or (N, rows*cols*channels), as the provider gives them
"""
import re

import torch
import torch.nn.functional as F


def _as_image(x, layer, i=0):
    def key(k):
        v = layer[k]
        return v[i] if isinstance(v, list) else v
    channels = key("channels")
    return x.reshape(x.shape[0], channels, layer["imgSizeY"] if not isinstance(layer["imgSizeY"], list)
                     else layer["imgSizeY"][i], layer["imgSizeX"] if not isinstance(layer["imgSizeX"], list)
                     else layer["imgSizeX"][i])


def _pad_for(size, outputs, window, stride, start):
    """(before, after) padding so that `outputs` windows of `window` from `start` fit."""
    before = max(0, -start)
    after = max(0, start + (outputs - 1) * stride + window - size)
    return before, after


def _neuron(text, x):
    match = re.fullmatch(r"(\w+)(?:\[(.*)\])?", text)
    name, args = match.group(1), [float(a) for a in (match.group(2) or "").split(",") if a]
    a = args[0] if args else 1.0
    b = args[1] if len(args) > 1 else (0.0 if name == "linear" else 1.0)
    table = {
        "ident": lambda: x, "relu": lambda: F.relu(x), "logistic": lambda: torch.sigmoid(x),
        "tanh": lambda: a * torch.tanh(b * x), "abs": lambda: x.abs(), "square": lambda: x * x,
        "sqrt": lambda: x.sqrt(), "softrelu": lambda: F.softplus(x), "brelu": lambda: x.clamp(0.0, a),
        "linear": lambda: a * x + b, "abstanh": lambda: a * torch.tanh(b * x).abs(),
    }
    return table[name]()


def _channel_window_sum(sq, size, blocked):
    """Sum over each channel's window of channels: centred [c - size//2, c - size//2 + size) or blocked."""
    channels = sq.shape[1]
    if blocked:
        out = torch.empty_like(sq)
        for c0 in range(0, channels, size):
            out[:, c0:c0 + size] = sq[:, c0:c0 + size].sum(dim=1, keepdim=True)
        return out
    before = size // 2
    padded = F.pad(sq, (0, 0, 0, 0, before, size - 1 - before))
    return sum(padded[:, k:k + channels] for k in range(size))


def _spatial_window_sum(x, size):
    before = size // 2
    padded = F.pad(x, (before, size - 1 - before, before, size - 1 - before))
    return F.avg_pool2d(padded, size, stride=1, divisor_override=1)


class TorchNet(torch.nn.Module):
    """layers: the resolved layer dicts in graph order; arrays: {"<layer>.weights.<i>",
    "<layer>.biases"} in torch layout. forward(x) returns the output layer's activations
    (default: the softmax the first cost.logreg layer reads, else the last layer that is not
    a cost), flattened per case except for image-shaped outputs."""

    def __init__(self, layers, arrays, output=None):
        super().__init__()
        self.layers = [dict(layer) for layer in layers]
        self.params = torch.nn.ParameterDict({
            k.replace(".", "__"): torch.nn.Parameter(torch.as_tensor(v), requires_grad=False) for k, v in arrays.items()})
        logreg = next((l for l in self.layers if l["type"] == "cost.logreg"), None)
        self.output = output or (logreg["inputs"][1] if logreg else
                                 [l for l in self.layers if not l["type"].startswith("cost.")][-1]["name"])
        unsupported = [l for l in self.layers if l["type"] not in _LAYERS and l["type"] != "data"
                       and not l["type"].startswith("cost.")]
        if unsupported:
            raise ValueError(f"to_torch: layer '{unsupported[0]['name']}' has type {unsupported[0]['type']}, "
                             f"which is not translated (translated: {', '.join(sorted(_LAYERS))})")

    def weight(self, layer, i):
        return self.params[f"{layer['name']}__weights__{i}"]

    def bias(self, layer):
        return self.params[f"{layer['name']}__biases"]

    def forward(self, x, output=None):
        acts = {}
        for layer in self.layers:
            if layer["type"].startswith("cost."):
                continue
            if layer["type"] == "data":
                if layer.get("dataIdx", 0) == 0:
                    acts[layer["name"]] = x
                continue
            inputs = [acts[name] for name in layer["inputs"]]
            acts[layer["name"]] = _LAYERS[layer["type"]](self, layer, inputs)
            if layer["name"] == (output or self.output):
                return acts[layer["name"]]
        return acts[output or self.output]


def _conv(net, layer, inputs):
    out = 0
    for i, x in enumerate(inputs):
        def key(k):
            v = layer[k]
            return v[i] if isinstance(v, list) else v
        x = _as_image(x, layer, i)
        conns = (layer.get("filterConns") or [None] * len(inputs))[i]
        if conns is not None:  # randSparse: group g sees channels conns[g*fc:(g+1)*fc], gathered
            x = x[:, torch.as_tensor(conns)]
        fs, pad, stride = key("filterSize"), key("padding"), key("stride")
        py = _pad_for(x.shape[2], layer["modulesY"], fs, stride, -pad)
        px = _pad_for(x.shape[3], layer["modulesX"], fs, stride, -pad)
        x = F.pad(x, (px[0], px[1], py[0], py[1]))
        w = net.weight(layer, i)
        if layer["type"] == "conv":
            y = F.conv2d(x, w, stride=stride, groups=key("groups"))[:, :, :layer["modulesY"], :layer["modulesX"]]
        else:  # local: every module has its own filters
            groups = key("groups")
            patches = F.unfold(x, fs, stride=stride)[:, :, :]  # (N, C*fs*fs, L), rows (channel, row, col)
            my, mx, filters = w.shape[0], w.shape[1], w.shape[2]
            grid = patches.reshape(x.shape[0], -1, (x.shape[2] - fs) // stride + 1, (x.shape[3] - fs) // stride + 1)
            patches = grid[:, :, :my, :mx].reshape(x.shape[0], grid.shape[1], my * mx)
            wm = w.reshape(my * mx, filters, -1)
            per_group, fg = patches.shape[1] // groups, filters // groups
            y = torch.cat([torch.einsum("ncl,lfc->nfl", patches[:, g * per_group:(g + 1) * per_group],
                                        wm[:, g * fg:(g + 1) * fg]) for g in range(groups)], dim=1)
            y = y.reshape(x.shape[0], filters, my, mx)
        out = out + y
    b = net.bias(layer)
    return out + (b.reshape(1, -1, 1, 1) if b.dim() == 1 else b.unsqueeze(0))


def _fc(net, layer, inputs):
    out = sum(F.linear(x.reshape(x.shape[0], -1), net.weight(layer, i)) for i, x in enumerate(inputs))
    return out + net.bias(layer)


def _treefc(net, layer, inputs):
    """A class's weights: the sum of its tree path's node rows (treeParents: each node's parent)."""
    nodes = net.weight(layer, 0)  # (tree nodes, inputs)
    parents, classes = layer["treeParents"], layer["outputs"]
    paths = torch.zeros(classes, len(parents), dtype=nodes.dtype)
    for k in range(classes):
        n = k
        while n != -1:
            paths[k, n] = 1
            n = parents[n]
    return F.linear(inputs[0].reshape(inputs[0].shape[0], -1), paths @ nodes) + net.bias(layer)


def _pool(net, layer, inputs):
    x = _as_image(inputs[0], layer)
    size, stride, start = layer["sizeX"], layer["stride"], layer["start"]
    py = _pad_for(x.shape[2], layer["outputsY"], size, stride, start)
    px = _pad_for(x.shape[3], layer["outputsX"], size, stride, start)
    crop = (slice(None), slice(None), slice(max(start, 0), None), slice(max(start, 0), None))
    x = x[crop]
    if layer["pool"] == "max":
        y = F.max_pool2d(F.pad(x, (px[0], px[1], py[0], py[1]), value=-float("inf")), size, stride)
    elif layer["pool"] == "avg":  # the mean over the window's part inside the image
        pad = (px[0], px[1], py[0], py[1])
        sums = F.avg_pool2d(F.pad(x, pad), size, stride, divisor_override=1)
        counts = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), size, stride, divisor_override=1)
        y = sums / counts
    elif layer["pool"] == "maxabs":  # the value of largest magnitude (the first of equals)
        pad = (px[0], px[1], py[0], py[1])
        high = F.max_pool2d(F.pad(x, pad, value=-float("inf")), size, stride)
        low = -F.max_pool2d(F.pad(-x, pad, value=-float("inf")), size, stride)
        y = torch.where(high.abs() >= low.abs(), high, low)
    else:
        raise ValueError(f"to_torch: pool={layer['pool']} of layer '{layer['name']}' is not translated")
    return y[:, :, :layer["outputsY"], :layer["outputsX"]]


def _cmpool(net, layer, inputs):
    """Output channel o: the max over input channels start + o*stride + [0, size) that exist."""
    x = _as_image(inputs[0], layer)
    outs = []
    for o in range(layer["outputChannels"]):
        first = layer["start"] + o * layer["stride"]
        outs.append(x[:, max(first, 0):min(first + layer["size"], x.shape[1])].amax(dim=1))
    return torch.stack(outs, dim=1)


def _blur(net, layer, inputs):
    """The separable blur: the dict's taps along x, then along y, zeros outside the image."""
    x = _as_image(inputs[0], layer)
    taps = torch.as_tensor(layer["filter"], dtype=x.dtype)
    channels, half = x.shape[1], len(layer["filter"]) // 2
    along_x = taps.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    along_y = taps.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(x, along_x, padding=(0, half), groups=channels)
    return F.conv2d(x, along_y, padding=(half, 0), groups=channels)


def _nailbed(net, layer, inputs):
    x = _as_image(inputs[0], layer)
    start, stride = layer["start"], layer["stride"]
    return x[:, :, start::stride, start::stride][:, :, :layer["outputsY"], :layer["outputsX"]]


def _norm(net, layer, inputs):
    x = _as_image(inputs[0], layer)
    if layer["type"] == "cmrnorm":
        sums = _channel_window_sum(x * x, layer["size"], layer.get("blocked", False))
    elif layer["type"] == "rnorm":
        sums = _spatial_window_sum(x * x, layer["size"])
    else:  # cnorm: around the window's mean
        ones = torch.ones_like(x[:1, :1])
        diffs = x - _spatial_window_sum(x, layer["size"]) / _spatial_window_sum(ones, layer["size"])
        sums = _spatial_window_sum(diffs * diffs, layer["size"])
    return x * (layer.get("minDiv", 1.0) + layer["scale"] * sums) ** -layer["pow"]


_LAYERS = {
    "conv": _conv, "local": _conv, "fc": _fc, "treefc": _treefc, "pool": _pool,
    "cmrnorm": _norm, "rnorm": _norm, "cnorm": _norm, "cmpool": _cmpool, "blur": _blur, "nailbed": _nailbed,
    "neuron": lambda net, layer, inputs: _neuron(layer["neuron"], inputs[0]),
    "softmax": lambda net, layer, inputs: F.softmax(inputs[0].reshape(inputs[0].shape[0], -1), dim=1),
    "dropout": lambda net, layer, inputs: inputs[0],  # inverted dropout: the identity when testing
    # dropout2 / hs keep units unscaled in training, so testing multiplies by keep
    "dropout2": lambda net, layer, inputs: inputs[0] * layer["keep"] if layer.get("enable", True) else inputs[0],
    "hs": lambda net, layer, inputs: inputs[0] * layer["keep"] if layer.get("enable", True) else inputs[0],
    # rows stacked: for images of one size the same as stacking their channels
    "pass": lambda net, layer, inputs: torch.cat([x.reshape(x.shape[0], -1) for x in inputs], dim=1),
    "href": lambda net, layer, inputs: torch.flip(_as_image(inputs[0], layer), dims=[3]),
    "eltsum": lambda net, layer, inputs: sum(c * x for c, x in zip(layer.get("coeffs") or [1.0] * len(inputs), inputs)),
    "eltmax": lambda net, layer, inputs: torch.stack(inputs).amax(dim=0),
    "concat": lambda net, layer, inputs: torch.cat([x.reshape(x.shape[0], -1) for x in inputs], dim=1),
}
