"""Pooling: local max / avg / maxabs and cross-map max, forward against float64 NumPy
references written from the definitions in ops/pool.h, backward against those references
and against finite differences."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, numeric_grad, run_op

KINDS = ["max", "avg", "maxabs"]

# (channels, img_size_y, img_size_x, size_x, start, stride, num_images)
LOCAL_CASES = [
    (3, 7, 7, 3, 0, 2, 7),  # overlapping windows
    (2, 9, 6, 3, -1, 1, 33),  # rectangular, padded, stride 1
    (4, 11, 8, 4, -2, 3, 1),  # batch 1, stride 3, last window clipped
    (1, 5, 13, 2, 0, 2, 7),  # non-overlapping
    (2, 6, 5, 5, -3, 2, 33),  # window wider than the valid part of the image
]


def distinct_values(rng, shape):
    """float32 data whose values and absolute values are all distinct and at least 0.05
    apart (no ties for max / maxabs, even after a finite-difference step)."""
    n = int(np.prod(shape))
    magnitudes = (rng.permutation(n) + 1) * 0.05
    signs = rng.choice([-1.0, 1.0], n)
    return (magnitudes * signs).reshape(shape).astype(np.float32)


def window_span(k, start, stride, size, extent):
    first = start + k * stride
    return max(first, 0), min(first + size, extent)


def pool_geometry(c, y, x, size, start, stride):
    return _core.PoolGeometry(channels=c, img_size_y=y, img_size_x=x, size_x=size, start=start, stride=stride)


def ref_local_pool(images, g, kind):
    c, _, _, n = images.shape
    out = np.zeros((c, g.outputs_y, g.outputs_x, n))
    for oy in range(g.outputs_y):
        y0, y1 = window_span(oy, g.start, g.stride, g.size_x, g.img_size_y)
        for ox in range(g.outputs_x):
            x0, x1 = window_span(ox, g.start, g.stride, g.size_x, g.img_size_x)
            window = images[:, y0:y1, x0:x1, :].reshape(c, -1, n).astype(np.float64)
            if kind == "max":
                out[:, oy, ox] = window.max(axis=1)
            elif kind == "avg":
                out[:, oy, ox] = window.mean(axis=1)
            else:
                largest = np.abs(window).argmax(axis=1)
                out[:, oy, ox] = np.take_along_axis(window, largest[:, None, :], axis=1)[:, 0]
    return out


def ref_local_max_undo(images, pooled, grads, g):
    """Each output's gradient goes to every window element equal to the pooled value."""
    out = np.zeros(images.shape)
    for oy in range(g.outputs_y):
        y0, y1 = window_span(oy, g.start, g.stride, g.size_x, g.img_size_y)
        for ox in range(g.outputs_x):
            x0, x1 = window_span(ox, g.start, g.stride, g.size_x, g.img_size_x)
            hit = images[:, y0:y1, x0:x1, :] == pooled[:, oy : oy + 1, ox : ox + 1, :]
            out[:, y0:y1, x0:x1, :] += hit * grads[:, oy : oy + 1, ox : ox + 1, :]
    return out


def ref_local_avg_undo(grads, g, num_images):
    out = np.zeros((g.channels, g.img_size_y, g.img_size_x, num_images))
    for oy in range(g.outputs_y):
        y0, y1 = window_span(oy, g.start, g.stride, g.size_x, g.img_size_y)
        for ox in range(g.outputs_x):
            x0, x1 = window_span(ox, g.start, g.stride, g.size_x, g.img_size_x)
            out[:, y0:y1, x0:x1, :] += grads[:, oy : oy + 1, ox : ox + 1, :] / ((y1 - y0) * (x1 - x0))
    return out


def test_output_size_is_cuda_convnets_formula():
    for img, size, start, stride in [(7, 3, 0, 2), (9, 3, -1, 1), (11, 4, -2, 3), (5, 5, -3, 2), (4, 6, -1, 3)]:
        expected = math.ceil((img - start - size) / stride) + 1
        assert _core.PoolGeometry.output_size(img_size=img, size_x=size, start=start, stride=stride) == expected
    g = pool_geometry(3, 9, 6, 3, -1, 2)
    assert (g.outputs_y, g.outputs_x) == (5, 3)
    g.outputs_y = 2  # fields are read-write
    assert g.outputs_y == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", LOCAL_CASES)
def test_local_pool(device, rng, kind, case):
    c, y, x, size, start, stride, n = case
    g = pool_geometry(c, y, x, size, start, stride)
    images = distinct_values(rng, (c, y, x, n))
    out_shape = (c, g.outputs_y, g.outputs_x, n)
    expected = ref_local_pool(images, g, kind)
    (out,) = run_op(_core.local_pool, device, [images], [out_shape], geometry=g, kind=kind)
    assert_close(out, expected)
    old = rng.standard_normal(out_shape).astype(np.float32)
    (out,) = run_op(_core.local_pool, device, [images], [old.copy()], geometry=g, kind=getattr(_core.PoolKind, kind),
                    scale_targets=0.5, scale_output=-2.0)
    assert_close(out, 0.5 * old - 2.0 * expected)


def test_local_pool_fewer_outputs_than_default(device, rng):
    g = _core.PoolGeometry(channels=2, img_size_y=8, img_size_x=9, size_x=3, start=-1, stride=2, outputs_y=2,
                           outputs_x=3)
    images = distinct_values(rng, (2, 8, 9, 7))
    (out,) = run_op(_core.local_pool, device, [images], [(2, 2, 3, 7)], geometry=g, kind="avg")
    assert_close(out, ref_local_pool(images, g, "avg"))


@pytest.mark.parametrize("kind", ["max", "maxabs"])
@pytest.mark.parametrize("case", LOCAL_CASES)
def test_local_max_undo(device, rng, kind, case):
    c, y, x, size, start, stride, n = case
    g = pool_geometry(c, y, x, size, start, stride)
    images = distinct_values(rng, (c, y, x, n))
    pooled = ref_local_pool(images, g, kind).astype(np.float32)
    grads = rng.standard_normal(pooled.shape).astype(np.float32)
    expected = ref_local_max_undo(images, pooled, grads.astype(np.float64), g)
    (out,) = run_op(_core.local_max_undo, device, [images, pooled, grads], [images.shape], geometry=g)
    assert_close(out, expected)
    old = rng.standard_normal(images.shape).astype(np.float32)
    (out,) = run_op(_core.local_max_undo, device, [images, pooled, grads], [old.copy()], geometry=g,
                    scale_targets=1.0, scale_output=0.5)
    assert_close(out, old + 0.5 * expected)


def test_local_max_undo_routes_to_every_tied_element(device):
    # All four pixels of one 2x2 window hold the max: each gets the full gradient.
    g = pool_geometry(1, 2, 2, 2, 0, 1)
    images = np.full((1, 2, 2, 3), 1.5, np.float32)
    pooled = np.full((1, 1, 1, 3), 1.5, np.float32)
    grads = np.array([1.0, -2.0, 3.0], np.float32).reshape(1, 1, 1, 3)
    (out,) = run_op(_core.local_max_undo, device, [images, pooled, grads], [images.shape], geometry=g)
    assert_close(out, np.broadcast_to(grads, images.shape))


@pytest.mark.parametrize("case", LOCAL_CASES)
def test_local_avg_undo(device, rng, case):
    c, y, x, size, start, stride, n = case
    g = pool_geometry(c, y, x, size, start, stride)
    grads = rng.standard_normal((c, g.outputs_y, g.outputs_x, n)).astype(np.float32)
    expected = ref_local_avg_undo(grads.astype(np.float64), g, n)
    (out,) = run_op(_core.local_avg_undo, device, [grads], [(c, y, x, n)], geometry=g)
    assert_close(out, expected)
    old = rng.standard_normal((c, y, x, n)).astype(np.float32)
    (out,) = run_op(_core.local_avg_undo, device, [grads], [old.copy()], geometry=g, scale_targets=-1.5,
                    scale_output=2.0)
    assert_close(out, -1.5 * old + 2.0 * expected)


# tiny geometries for finite differences: (channels, img_size_y, img_size_x, size_x, start, stride, num_images)
GRAD_CASES = [(2, 5, 4, 3, -1, 2, 2), (1, 4, 5, 2, 0, 1, 3), (2, 5, 5, 4, -2, 3, 1)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", GRAD_CASES)
def test_local_pool_undo_matches_finite_differences(device, rng, kind, case):
    c, y, x, size, start, stride, n = case
    g = pool_geometry(c, y, x, size, start, stride)
    images = distinct_values(rng, (c, y, x, n))
    out_shape = (c, g.outputs_y, g.outputs_x, n)
    weights = rng.standard_normal(out_shape)  # objective sum(weights * pool(images))
    expected = numeric_grad(lambda v: np.sum(weights * ref_local_pool(v, g, kind)), images, eps=1e-3)
    w32 = weights.astype(np.float32)
    if kind == "avg":
        (out,) = run_op(_core.local_avg_undo, device, [w32], [images.shape], geometry=g)
    else:
        (pooled,) = run_op(_core.local_pool, device, [images], [out_shape], geometry=g, kind=kind)
        (out,) = run_op(_core.local_max_undo, device, [images, pooled, w32], [images.shape], geometry=g)
    assert_close(out, expected, rtol=1e-3)


# (channels, pixels, size, start, stride, num_images)
CROSS_MAP_CASES = [
    (8, 5, 3, 0, 2, 7),
    (7, 6, 4, -1, 3, 33),  # padded, last window clipped
    (5, 3, 2, 0, 1, 1),
    (6, 4, 6, -2, 2, 7),  # window wider than the valid channels
]


def ref_cross_map_max_pool(images, g):
    out = np.zeros((g.outputs,) + images.shape[1:])
    for o in range(g.outputs):
        c0, c1 = window_span(o, g.start, g.stride, g.size, g.channels)
        out[o] = images[c0:c1].astype(np.float64).max(axis=0)
    return out


def ref_cross_map_max_pool_undo(images, pooled, grads, g):
    out = np.zeros(images.shape)
    for o in range(g.outputs):
        c0, c1 = window_span(o, g.start, g.stride, g.size, g.channels)
        out[c0:c1] += (images[c0:c1] == pooled[o]) * grads[o]
    return out


def cross_map_geometry(channels, pixels, size, start, stride):
    return _core.CrossMapPoolGeometry(channels=channels, pixels=pixels, size=size, start=start, stride=stride)


@pytest.mark.parametrize("case", CROSS_MAP_CASES)
def test_cross_map_max_pool(device, rng, case):
    channels, pixels, size, start, stride, n = case
    g = cross_map_geometry(channels, pixels, size, start, stride)
    assert g.outputs == math.ceil((channels - start - size) / stride) + 1
    images = distinct_values(rng, (channels, pixels, n))
    expected = ref_cross_map_max_pool(images, g)
    (out,) = run_op(_core.cross_map_max_pool, device, [images], [expected.shape], geometry=g)
    assert_close(out, expected)
    old = rng.standard_normal(expected.shape).astype(np.float32)
    (out,) = run_op(_core.cross_map_max_pool, device, [images], [old.copy()], geometry=g, scale_targets=0.25,
                    scale_output=3.0)
    assert_close(out, 0.25 * old + 3.0 * expected)


@pytest.mark.parametrize("case", CROSS_MAP_CASES)
def test_cross_map_max_pool_undo(device, rng, case):
    channels, pixels, size, start, stride, n = case
    g = cross_map_geometry(channels, pixels, size, start, stride)
    images = distinct_values(rng, (channels, pixels, n))
    pooled = ref_cross_map_max_pool(images, g).astype(np.float32)
    grads = rng.standard_normal(pooled.shape).astype(np.float32)
    expected = ref_cross_map_max_pool_undo(images, pooled, grads.astype(np.float64), g)
    (out,) = run_op(_core.cross_map_max_pool_undo, device, [images, pooled, grads], [images.shape], geometry=g)
    assert_close(out, expected)
    old = rng.standard_normal(images.shape).astype(np.float32)
    (out,) = run_op(_core.cross_map_max_pool_undo, device, [images, pooled, grads], [old.copy()], geometry=g,
                    scale_targets=2.0, scale_output=-1.0)
    assert_close(out, 2.0 * old - expected)


@pytest.mark.parametrize("case", [(6, 3, 3, 0, 2, 2), (5, 2, 2, -1, 1, 3)])
def test_cross_map_max_pool_undo_matches_finite_differences(device, rng, case):
    channels, pixels, size, start, stride, n = case
    g = cross_map_geometry(channels, pixels, size, start, stride)
    images = distinct_values(rng, (channels, pixels, n))
    weights = rng.standard_normal((g.outputs, pixels, n))
    expected = numeric_grad(lambda v: np.sum(weights * ref_cross_map_max_pool(v, g)), images, eps=1e-3)
    (pooled,) = run_op(_core.cross_map_max_pool, device, [images], [weights.shape], geometry=g)
    (out,) = run_op(_core.cross_map_max_pool_undo, device, [images, pooled, weights.astype(np.float32)],
                    [images.shape], geometry=g)
    assert_close(out, expected, rtol=1e-3)


# Runs in a fresh interpreter per thread count (CCN_NUM_THREADS is read at start-up).
DETERMINISM_SCRIPT = """
import sys
import numpy as np
from ccn import _core
rng = np.random.default_rng(5)
g = _core.PoolGeometry(channels=8, img_size_y=13, img_size_x=11, size_x=3, start=-1, stride=2)
images = rng.standard_normal((8, 13, 11, 33)).astype(np.float32)
grads = rng.standard_normal((8, g.outputs_y, g.outputs_x, 33)).astype(np.float32)
pooled = np.empty_like(grads)
back = np.empty_like(images)
_core.local_pool(images, pooled, g, "avg")
_core.local_avg_undo(grads, back, g)
np.savez(sys.argv[1], pooled=pooled, back=back)
"""


def test_pool_results_do_not_depend_on_thread_count(tmp_path):
    results = []
    for threads in (1, 3):
        path = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, CCN_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, str(path)], env=env, check=True)
        results.append(np.load(path))
    for name in ("pooled", "back"):
        assert np.array_equal(results[0][name], results[1][name]), name


def test_pool_arguments_are_checked():
    g = pool_geometry(2, 5, 5, 3, 0, 2)  # outputs 2 x 2
    images = np.ones((2, 5, 5, 3), np.float32)
    pooled = np.ones((2, 2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="targets"):
        _core.local_pool(images, np.ones((2, 3, 2, 3), np.float32), g, "max")
    with pytest.raises(ValueError, match="targets"):
        _core.local_pool(images, np.ones((2, 2, 2, 4), np.float32), g, "max")  # other image count
    with pytest.raises(ValueError, match="images"):
        _core.local_pool(np.ones((2, 5, 4, 3), np.float32), pooled.copy(), g, "avg")
    with pytest.raises(TypeError, match="float32"):
        _core.local_pool(images.astype(np.float64), pooled.copy(), g, "max")
    with pytest.raises(TypeError, match="images"):
        _core.local_pool([1.0, 2.0], pooled.copy(), g, "max")
    with pytest.raises(ValueError, match="pool kind"):
        _core.local_pool(images, pooled.copy(), g, "min")
    with pytest.raises(TypeError, match="kind"):
        _core.local_pool(images, pooled.copy(), g, 3)
    with pytest.raises(ValueError, match="max_acts|maxActs"):
        _core.local_max_undo(images, np.ones((2, 2, 3, 3), np.float32), pooled, images.copy(), g)
    with pytest.raises(ValueError, match="outGrads|out_grads"):
        _core.local_avg_undo(np.ones((2, 2, 3, 3), np.float32), images.copy(), g)
    with pytest.raises(ValueError, match="writeable"):
        readonly = pooled.copy()
        readonly.flags.writeable = False
        _core.local_pool(images, readonly, g, "max")
    # geometry sanity
    bad = pool_geometry(2, 5, 5, 3, 0, 2)
    bad.outputs_y = 4  # window 3 would start at row 6, outside the image
    with pytest.raises(ValueError, match="outputsY"):
        _core.local_pool(images, np.ones((2, 4, 2, 3), np.float32), bad, "max")
    bad = pool_geometry(2, 5, 5, 3, 0, 2)
    bad.start = -3  # the first window would hold no pixel
    with pytest.raises(ValueError, match="start"):
        _core.local_pool(images, pooled.copy(), bad, "max")
    with pytest.raises(ValueError, match="stride"):
        _core.PoolGeometry(channels=2, img_size_y=5, img_size_x=5, size_x=3, stride=0)
    bad = pool_geometry(2, 5, 5, 3, 0, 2)
    bad.channels = 0
    with pytest.raises(ValueError, match="channels"):
        _core.local_pool(images, pooled.copy(), bad, "max")
    cg = cross_map_geometry(4, 3, 2, 0, 2)
    with pytest.raises(ValueError, match="targets"):
        _core.cross_map_max_pool(np.ones((4, 3, 2), np.float32), np.ones((3, 3, 2), np.float32), cg)
    cg.outputs = 3
    with pytest.raises(ValueError, match="outputs"):
        _core.cross_map_max_pool(np.ones((4, 3, 2), np.float32), np.ones((3, 3, 2), np.float32), cg)
