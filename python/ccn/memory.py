"""A per-layer memory estimate, checked before the net allocates anything.

A layer file can describe a net far larger than the machine (outputs=2000000000, a huge
image); allocating it would end in std::bad_alloc or the OOM killer. Each layer's buffers are
estimated from its resolved dict (float32):

    activations and their gradients    2 * outputs * minibatch
    weights, their increments, grads   3 * (weight elements + bias elements)

where a conv layer has filterChannels * filterSize^2 * filters weights (times the modules for
a local layer), an fc layer sum(input outputs) * outputs. The estimate leaves out workspaces,
so it refuses only nets that cannot fit; it is a guard, not a planner.
"""
import os

BYTES = 4


def _count(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an int")
    return value


def layer_bytes(layer, by_name, minibatch):
    """Estimated bytes of one layer's buffers for a minibatch; 0 when its dict is malformed
    (the net names the layer and key when it reads the dict)."""
    try:
        elements = 2 * _count(layer.get("outputs", 0)) * minibatch
        kind = layer["type"]
        if kind in ("conv", "local"):
            weights = _count(layer["filterChannels"]) * _count(layer["filterSize"]) ** 2 * _count(layer["filters"])
            if kind == "local":
                weights *= _count(layer["modulesY"]) * _count(layer["modulesX"])
            elements += 3 * (weights + _count(layer.get("outputs", 0)))
        elif kind == "fc":
            fan_in = sum(_count(by_name[name].get("outputs", 0)) for name in layer["inputs"])
            elements += 3 * (fan_in + 1) * _count(layer["outputs"])
        return elements * BYTES
    except (KeyError, TypeError, AttributeError):
        return 0


def available_bytes(device):
    """Memory a device can still give (None when unknown): MemAvailable for the CPU."""
    if device != "cpu":
        return None  # the CUDA allocator reports its own failures with the layer's name
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check(layers, devices, minibatch):
    """Raises ValueError naming the first layer (or device) whose estimated buffers exceed
    the memory available on its device."""
    by_name = {layer["name"]: layer for layer in layers}
    totals = {}
    for layer in layers:
        device = devices[layer.get("gpu", 0)]
        need = layer_bytes(layer, by_name, minibatch)
        have = available_bytes(device)
        if have is not None and need > have:
            raise ValueError(f"layer '{layer['name']}' needs about {need:,} bytes for minibatches of {minibatch} "
                             f"but {device} has {have:,} available; make it smaller or lower --mini")
        totals[device] = totals.get(device, 0) + need
    for device, need in totals.items():
        have = available_bytes(device)
        if have is not None and need > have:
            worst = max((l for l in layers if devices[l.get("gpu", 0)] == device),
                        key=lambda l: layer_bytes(l, by_name, minibatch))
            raise ValueError(f"the net's layers on {device} need about {need:,} bytes for minibatches of "
                             f"{minibatch} but it has {have:,} available (the largest: '{worst['name']}')")
