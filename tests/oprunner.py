"""Helpers for op tests: run an op on a device with poisoned outputs, and check gradients.

`run_op` moves NumPy inputs to the device, fills outputs with NaN (or with given initial
values, for scale_targets != 0), calls the op and returns the outputs as NumPy arrays, so
the same test body checks every device against a float64 reference.
"""
import numpy as np

from ccn import _core


def to_device(array, device):
    array = np.ascontiguousarray(array, dtype=np.float32)
    return array if device == "cpu" else _core.Tensor(array, device)


def from_device(value):
    return value if isinstance(value, np.ndarray) else value.numpy()


def run_op(fn, device, inputs, outputs, **kwargs):
    """Calls fn(*inputs, *outputs, **kwargs) on `device`.

    inputs: arrays; outputs: shapes (poisoned with NaN) or arrays (initial values).
    Returns the list of output arrays (float32)."""
    dev_inputs = [to_device(a, device) for a in inputs]
    dev_outputs = []
    for out in outputs:
        init = np.full(out, np.nan, np.float32) if isinstance(out, tuple) else out
        dev_outputs.append(to_device(init, device))
    result = fn(*dev_inputs, *dev_outputs, **kwargs)
    outs = [from_device(o) for o in dev_outputs]
    return (outs, result) if result is not None else outs


def assert_close(actual, expected, rtol=1e-4, what="result"):
    """Relative error in the max norm: max|a - e| / max(max|e|, tiny) < rtol; no NaN."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values (unwritten outputs?)"
    scale = max(np.abs(expected).max(initial=0.0), 1e-6)
    err = np.abs(actual - expected).max(initial=0.0) / scale
    assert err < rtol, f"{what}: relative error {err:.3g} >= {rtol}"


def numeric_grad(f, x, eps=1e-3):
    """Central-difference gradient of the scalar function f at x (float64)."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad
