"""Normalization: rnorm, cmrnorm (blocked or not) and cnorm, forward against float64 NumPy
references written from the definitions in ops/norm.h, backward against finite
differences of those references (every element on tiny sizes, per-image directional
derivatives on larger ones)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, numeric_grad, run_op


def centered_span(p, size, extent):
    """The window around p: [p - size//2, p - size//2 + size), clipped to [0, extent)."""
    first = p - size // 2
    return max(first, 0), min(first + size, extent)


def spatial_sum(values, size):
    """Sum of values over each pixel's spatial window; values is (channels, rows, cols, n)."""
    _, rows, cols, _ = values.shape
    out = np.zeros(values.shape)
    for y in range(rows):
        y0, y1 = centered_span(y, size, rows)
        for x in range(cols):
            x0, x1 = centered_span(x, size, cols)
            out[:, y, x] = values[:, y0:y1, x0:x1].sum(axis=(1, 2))
    return out


def spatial_mean(values, size):
    _, rows, cols, _ = values.shape
    out = np.zeros(values.shape)
    for y in range(rows):
        y0, y1 = centered_span(y, size, rows)
        for x in range(cols):
            x0, x1 = centered_span(x, size, cols)
            out[:, y, x] = values[:, y0:y1, x0:x1].mean(axis=(1, 2))
    return out


def ref_response_norm(images, g):
    x = np.asarray(images, np.float64)
    denoms = g.min_div + g.add_scale * spatial_sum(x * x, g.size)
    return x * denoms**-g.pow_scale, denoms


def ref_response_norm_cross_map(images, g):
    x = np.asarray(images, np.float64)
    channels = x.shape[0]
    denoms = np.zeros(x.shape)
    for c in range(channels):
        if g.blocked:
            c0 = c // g.size * g.size
            c1 = min(c0 + g.size, channels)
        else:
            c0, c1 = centered_span(c, g.size, channels)
        denoms[c] = g.min_div + g.add_scale * (x[c0:c1] ** 2).sum(axis=0)
    return x * denoms**-g.pow_scale, denoms


def ref_contrast_norm(images, g):
    x = np.asarray(images, np.float64)
    mean_diffs = x - spatial_mean(x, g.size)
    denoms = g.min_div + g.add_scale * spatial_sum(mean_diffs**2, g.size)
    return x * denoms**-g.pow_scale, mean_diffs, denoms


def norm_geometry(channels, rows, cols, size, scale, pow_scale=0.75, min_div=1.0, blocked=False, cross_map=False):
    """add_scale from the layer file's scale, as the layers compute it."""
    add_scale = scale / size if cross_map else scale / size**2
    return _core.NormGeometry(channels=channels, img_size_y=rows, img_size_x=cols, size=size, add_scale=add_scale,
                              pow_scale=pow_scale, min_div=min_div, blocked=blocked)


# (channels, rows, cols, size, num_images, scale, min_div, pow_scale)
SPATIAL_CASES = [
    (3, 7, 7, 5, 7, 2.0, 1.0, 0.75),
    (4, 6, 9, 4, 33, 1.5, 2.0, 0.5),  # even size: the window is not centred
    (2, 5, 3, 3, 1, 3.0, 1.0, 1.0),  # batch 1, rectangular
    (2, 4, 4, 9, 7, 1.0, 0.5, 2.0),  # window larger than the image
]

# (channels, rows, cols, size, num_images, blocked, pow_scale)
CROSS_MAP_CASES = [
    (16, 3, 3, 5, 7, False, 0.75),
    (7, 2, 3, 4, 33, False, 0.5),  # even size
    (7, 3, 2, 3, 1, True, 0.75),  # blocks of 3, the last one clipped
    (9, 2, 2, 4, 7, True, 1.5),
    (3, 2, 5, 9, 7, False, 0.75),  # window larger than the channel count
]


def spatial_case_geometry(case):
    channels, rows, cols, size, _, scale, min_div, pow_scale = case
    return norm_geometry(channels, rows, cols, size, scale, pow_scale=pow_scale, min_div=min_div)


def cross_map_case_geometry(case):
    channels, rows, cols, size, _, blocked, pow_scale = case
    return norm_geometry(channels, rows, cols, size, 2.0, pow_scale=pow_scale, min_div=1.0, blocked=blocked,
                         cross_map=True)


def random_images(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("case", SPATIAL_CASES)
def test_response_norm(device, rng, case):
    g = spatial_case_geometry(case)
    shape = (g.channels, g.img_size_y, g.img_size_x, case[4])
    images = random_images(rng, shape)
    expected, expected_denoms = ref_response_norm(images, g)
    denoms, out = run_op(_core.response_norm, device, [images], [shape, shape], geometry=g)
    assert_close(denoms, expected_denoms, what="denoms")
    assert_close(out, expected)
    old = rng.standard_normal(shape).astype(np.float32)
    denoms, out = run_op(_core.response_norm, device, [images], [shape, old.copy()], geometry=g, scale_targets=0.5,
                         scale_output=2.0)
    assert_close(denoms, expected_denoms, what="denoms (never scaled)")
    assert_close(out, 0.5 * old + 2.0 * expected)


@pytest.mark.parametrize("case", CROSS_MAP_CASES)
def test_response_norm_cross_map(device, rng, case):
    g = cross_map_case_geometry(case)
    shape = (g.channels, g.img_size_y, g.img_size_x, case[4])
    images = random_images(rng, shape)
    expected, expected_denoms = ref_response_norm_cross_map(images, g)
    denoms, out = run_op(_core.response_norm_cross_map, device, [images], [shape, shape], geometry=g)
    assert_close(denoms, expected_denoms, what="denoms")
    assert_close(out, expected)
    old = rng.standard_normal(shape).astype(np.float32)
    denoms, out = run_op(_core.response_norm_cross_map, device, [images], [shape, old.copy()], geometry=g,
                         scale_targets=-1.0, scale_output=0.5)
    assert_close(denoms, expected_denoms, what="denoms (never scaled)")
    assert_close(out, -old + 0.5 * expected)


@pytest.mark.parametrize("case", SPATIAL_CASES)
def test_contrast_norm(device, rng, case):
    g = spatial_case_geometry(case)
    shape = (g.channels, g.img_size_y, g.img_size_x, case[4])
    images = random_images(rng, shape)
    expected, expected_mean_diffs, expected_denoms = ref_contrast_norm(images, g)
    mean_diffs, denoms, out = run_op(_core.contrast_norm, device, [images], [shape, shape, shape], geometry=g)
    assert_close(mean_diffs, expected_mean_diffs, what="mean_diffs")
    assert_close(denoms, expected_denoms, what="denoms")
    assert_close(out, expected)
    old = rng.standard_normal(shape).astype(np.float32)
    mean_diffs, denoms, out = run_op(_core.contrast_norm, device, [images], [shape, shape, old.copy()], geometry=g,
                                     scale_targets=2.0, scale_output=-1.0)
    assert_close(mean_diffs, expected_mean_diffs, what="mean_diffs (never scaled)")
    assert_close(denoms, expected_denoms, what="denoms (never scaled)")
    assert_close(out, 2.0 * old - expected)


def run_forward_and_undo(name, device, images, weights, g, old=None, **scales):
    """The op's forward pass, then its undo for out_grads = weights (the gradient of
    sum(weights * forward(images))); returns the gradient."""
    shape = images.shape
    target = [shape if old is None else old.copy()]
    w32 = weights.astype(np.float32)
    if name == "rnorm":
        denoms, acts = run_op(_core.response_norm, device, [images], [shape, shape], geometry=g)
        (grad,) = run_op(_core.response_norm_undo, device, [w32, images, acts, denoms], target, geometry=g, **scales)
    elif name == "cmrnorm":
        denoms, acts = run_op(_core.response_norm_cross_map, device, [images], [shape, shape], geometry=g)
        (grad,) = run_op(_core.response_norm_cross_map_undo, device, [w32, images, acts, denoms], target, geometry=g,
                         **scales)
    else:
        mean_diffs, denoms, acts = run_op(_core.contrast_norm, device, [images], [shape, shape, shape], geometry=g)
        (grad,) = run_op(_core.contrast_norm_undo, device, [w32, images, mean_diffs, acts, denoms], target,
                         geometry=g, **scales)
    return grad


REFERENCES = {"rnorm": ref_response_norm, "cmrnorm": ref_response_norm_cross_map, "cnorm": ref_contrast_norm}

# (norm, channels, rows, cols, size, num_images, blocked)
TINY_GRAD_CASES = [
    ("rnorm", 2, 4, 5, 3, 2, False),
    ("rnorm", 2, 5, 4, 4, 2, False),
    ("cmrnorm", 6, 2, 2, 3, 2, False),
    ("cmrnorm", 6, 2, 2, 4, 2, False),
    ("cmrnorm", 7, 2, 2, 3, 2, True),
    ("cnorm", 2, 4, 5, 3, 2, False),
    ("cnorm", 2, 5, 4, 4, 2, False),
    ("cnorm", 1, 3, 3, 5, 3, False),
]


def grad_case_geometry(name, channels, rows, cols, size, blocked):
    # a large scale so that the window terms weigh in the gradient
    return norm_geometry(channels, rows, cols, size, 3.0, pow_scale=0.75, min_div=1.0, blocked=blocked,
                         cross_map=name == "cmrnorm")


@pytest.mark.parametrize("case", TINY_GRAD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_norm_undo_matches_finite_differences(device, rng, case):
    name, channels, rows, cols, size, n, blocked = case
    g = grad_case_geometry(name, channels, rows, cols, size, blocked)
    shape = (channels, rows, cols, n)
    images = random_images(rng, shape)
    weights = rng.standard_normal(shape)
    reference = REFERENCES[name]
    expected = numeric_grad(lambda v: np.sum(weights * reference(v, g)[0]), images, eps=1e-4)
    assert_close(run_forward_and_undo(name, device, images, weights, g), expected, rtol=1e-3)
    old = rng.standard_normal(shape).astype(np.float32)
    grad = run_forward_and_undo(name, device, images, weights, g, old=old, scale_targets=0.5, scale_output=1.5)
    assert_close(grad, 0.5 * old + 1.5 * expected, rtol=1e-3)


# (norm, channels, rows, cols, size, num_images, blocked)
LARGER_GRAD_CASES = [
    ("rnorm", 3, 7, 6, 5, 33, False),
    ("rnorm", 2, 6, 7, 4, 7, False),
    ("cmrnorm", 16, 3, 2, 5, 33, False),
    ("cmrnorm", 10, 2, 3, 4, 7, True),
    ("cnorm", 3, 7, 6, 5, 33, False),
    ("cnorm", 2, 6, 7, 4, 1, False),
]


@pytest.mark.parametrize("case", LARGER_GRAD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_norm_undo_directional_derivatives(device, rng, case):
    """Images are independent, so for a random direction v the derivative of image k's
    objective along v, by central differences, checks sum(grad[..., k] * v[..., k])."""
    name, channels, rows, cols, size, n, blocked = case
    g = grad_case_geometry(name, channels, rows, cols, size, blocked)
    shape = (channels, rows, cols, n)
    images = random_images(rng, shape)
    weights = rng.standard_normal(shape)
    direction = rng.standard_normal(shape)
    reference = REFERENCES[name]
    eps = 1e-4

    def per_image_objective(v):
        return np.sum(weights * reference(v, g)[0], axis=(0, 1, 2))

    x = images.astype(np.float64)
    expected = (per_image_objective(x + eps * direction) - per_image_objective(x - eps * direction)) / (2 * eps)
    grad = run_forward_and_undo(name, device, images, weights, g)
    assert_close(np.sum(grad * direction, axis=(0, 1, 2)), expected, rtol=1e-3)


@pytest.mark.parametrize("pow_scale", [0.75, 0.5, 1.0, 2.3, 0.01, 0.0, -0.6])
def test_response_norm_over_a_wide_range_of_denominators(device, rng, pow_scale):
    """Size 1: out = x (1 + x^2)^-pow_scale, with |x| from 1e-3 to 1e3 (denominators up to
    1e6), checked element by element."""
    g = _core.NormGeometry(channels=1, img_size_y=1, img_size_x=1, size=1, add_scale=1.0, pow_scale=pow_scale)
    x = (10.0 ** rng.uniform(-3, 3, (1, 1, 1, 257)) * rng.choice([-1, 1], 257)).astype(np.float32)
    expected, expected_denoms = ref_response_norm(x, g)
    denoms, out = run_op(_core.response_norm, device, [x], [x.shape, x.shape], geometry=g)
    assert_close(denoms, expected_denoms, what="denoms")
    assert np.max(np.abs(out - expected) / np.abs(expected)) < 1e-5


# Runs in a fresh interpreter per thread count (CCN_NUM_THREADS is read at start-up).
DETERMINISM_SCRIPT = """
import sys
import numpy as np
from ccn import _core
rng = np.random.default_rng(7)
shape = (16, 9, 11, 33)
x = rng.standard_normal(shape).astype(np.float32)
w = rng.standard_normal(shape).astype(np.float32)
out = {}
for name, size in (("rnorm", 5), ("cmrnorm", 5), ("cnorm", 4)):
    g = _core.NormGeometry(channels=16, img_size_y=9, img_size_x=11, size=size, add_scale=0.1, pow_scale=0.75)
    denoms, acts, grad = (np.empty(shape, np.float32) for _ in range(3))
    if name == "rnorm":
        _core.response_norm(x, denoms, acts, g)
        _core.response_norm_undo(w, x, acts, denoms, grad, g)
    elif name == "cmrnorm":
        _core.response_norm_cross_map(x, denoms, acts, g)
        _core.response_norm_cross_map_undo(w, x, acts, denoms, grad, g)
    else:
        mean_diffs = np.empty(shape, np.float32)
        _core.contrast_norm(x, mean_diffs, denoms, acts, g)
        _core.contrast_norm_undo(w, x, mean_diffs, acts, denoms, grad, g)
    out[name + "_acts"], out[name + "_grad"] = acts, grad
np.savez(sys.argv[1], **out)
"""


def test_norm_results_do_not_depend_on_thread_count(tmp_path):
    results = []
    for threads in (1, 3):
        path = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, CCN_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT, str(path)], env=env, check=True)
        results.append(np.load(path))
    for name in results[0].files:
        assert np.array_equal(results[0][name], results[1][name]), name


def test_norm_geometry_fields():
    g = _core.NormGeometry(channels=3, img_size_y=4, img_size_x=5, size=3, add_scale=0.25, pow_scale=0.75)
    assert (g.min_div, g.blocked) == (1.0, False)
    g.blocked = True
    g.min_div = 2.0
    assert (g.channels, g.img_size_y, g.img_size_x, g.size, g.add_scale, g.pow_scale, g.min_div, g.blocked) == (
        3, 4, 5, 3, 0.25, 0.75, 2.0, True)


def test_norm_arguments_are_checked():
    g = _core.NormGeometry(channels=2, img_size_y=3, img_size_x=3, size=3, add_scale=0.1, pow_scale=0.75)
    images = np.ones((2, 3, 3, 4), np.float32)

    def buf():
        return np.empty((2, 3, 3, 4), np.float32)

    with pytest.raises(ValueError, match="denoms"):
        _core.response_norm(images, np.empty((2, 3, 3, 5), np.float32), buf(), g)
    with pytest.raises(ValueError, match="targets"):
        _core.response_norm_cross_map(images, buf(), np.empty((2, 3, 4, 4), np.float32), g)
    with pytest.raises(ValueError, match="images"):
        _core.contrast_norm(np.ones((3, 3, 3, 4), np.float32), buf(), buf(), buf(), g)
    with pytest.raises(ValueError, match="meanDiffs|mean_diffs"):
        _core.contrast_norm_undo(images, images, np.ones((2, 9, 3), np.float32), images, images, buf(), g)
    with pytest.raises(ValueError, match="acts"):
        _core.response_norm_undo(images, images, np.ones((2, 3, 3, 3), np.float32), images, buf(), g)
    with pytest.raises(TypeError, match="float32"):
        _core.response_norm(images.astype(np.float64), buf(), buf(), g)
    with pytest.raises(TypeError, match="out_grads"):
        _core.response_norm_cross_map_undo("x", images, images, images, buf(), g)
    with pytest.raises(TypeError):
        _core.response_norm(images, buf(), buf(), "not a geometry")
    for field, value, message in [("size", 0, "size"), ("channels", -1, "channels"), ("min_div", 0.0, "minDiv"),
                                  ("add_scale", -0.5, "addScale"), ("pow_scale", float("nan"), "powScale")]:
        bad = _core.NormGeometry(channels=2, img_size_y=3, img_size_x=3, size=3, add_scale=0.1, pow_scale=0.75)
        setattr(bad, field, value)
        with pytest.raises(ValueError, match=message):
            _core.response_norm(images, buf(), buf(), bad)
