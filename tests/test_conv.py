"""Convolution and locally-connected layers: filter_acts, img_acts, weight_acts against a
float64 NumPy reference written from the definition, and finite-difference checks of the
two backward routines.

Layouts (cuda-convnet's): images (C, H, W, N); conv filters (C/groups * fs * fs, F) with rows
(channel, filterRow, filterCol); local filters (modulesY * modulesX * C/groups * fs * fs, F);
hidActs (F, modulesY, modulesX, N). Module (my, mx) reads image rows my*stride - padding + [0, fs).
"""
import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, numeric_grad, run_op

# (channels, img_y, img_x, filter_size, filters, padding, stride, groups, local, images, modules override)
CASES = [
    (3, 9, 9, 3, 8, 1, 1, 1, False, 7, None),  # odd square image, "same" padding
    (4, 11, 8, 5, 6, 2, 2, 2, False, 33, None),  # rectangular, stride 2, groups 2
    (6, 10, 13, 4, 4, 0, 3, 2, False, 1, None),  # stride 3, ceil output size, one image
    (2, 8, 8, 3, 5, 1, 3, 1, False, 7, None),  # last module row lies wholly in the padding
    (5, 4, 6, 1, 3, 0, 1, 1, False, 7, None),  # 1x1 filters
    (3, 9, 7, 3, 4, 1, 2, 1, False, 7, (3, 2)),  # fewer modules than the image allows
    (3, 7, 9, 3, 5, 1, 2, 1, True, 7, None),  # local, rectangular, stride 2
    (4, 6, 5, 3, 4, 0, 1, 2, True, 33, None),  # local, groups 2
    (2, 7, 7, 4, 3, 2, 3, 1, True, 1, None),  # local, stride 3, padding, one image
]


def geometry(case):
    channels, img_y, img_x, fs, filters, padding, stride, groups, local, _, modules = case
    extra = {} if modules is None else {"modules_y": modules[0], "modules_x": modules[1]}
    return _core.ConvGeometry(channels=channels, img_size_y=img_y, img_size_x=img_x, filter_size=fs,
                              num_filters=filters, padding=padding, stride=stride, groups=groups, local=local,
                              **extra)


def case_id(case):
    c, y, x, fs, f, p, s, g, local, n, _ = case
    return f"{'local' if local else 'conv'}-c{c}-{y}x{x}-fs{fs}-f{f}-p{p}-s{s}-g{g}-n{n}"


# ---- float64 reference, from the definition ---------------------------------------------

def patches(images, g):
    """P[c, fy, fx, my, mx, n] = images[c, my*s - p + fy, mx*s - p + fx, n], 0 outside the image."""
    c, h, w, n = images.shape
    fs, p, s = g.filter_size, g.padding, g.stride
    out = np.zeros((c, fs, fs, g.modules_y, g.modules_x, n))
    for my in range(g.modules_y):
        for mx in range(g.modules_x):
            for fy in range(fs):
                for fx in range(fs):
                    y, x = my * s - p + fy, mx * s - p + fx
                    if 0 <= y < h and 0 <= x < w:
                        out[:, fy, fx, my, mx] = images[:, y, x]
    return out


def unpatch(grad_patches, g, num_images):
    """The adjoint of `patches`: adds every patch entry back onto the pixel it was read from."""
    fs, p, s = g.filter_size, g.padding, g.stride
    out = np.zeros((g.channels, g.img_size_y, g.img_size_x, num_images))
    for my in range(g.modules_y):
        for mx in range(g.modules_x):
            for fy in range(fs):
                for fx in range(fs):
                    y, x = my * s - p + fy, mx * s - p + fx
                    if 0 <= y < g.img_size_y and 0 <= x < g.img_size_x:
                        out[:, y, x] += grad_patches[:, fy, fx, my, mx]
    return out


def filter_bank(filters, g):
    """Filters as (modulesY, modulesX, filterChannels, fs, fs, F); a conv bank is shared by all modules."""
    fc, fs = g.channels // g.groups, g.filter_size
    if g.local:
        return filters.reshape(g.modules_y, g.modules_x, fc, fs, fs, g.num_filters)
    bank = filters.reshape(1, 1, fc, fs, fs, g.num_filters)
    return np.broadcast_to(bank, (g.modules_y, g.modules_x) + bank.shape[2:])


def group_slices(g):
    fc, fg = g.channels // g.groups, g.num_filters // g.groups
    return [(slice(k * fc, (k + 1) * fc), slice(k * fg, (k + 1) * fg)) for k in range(g.groups)]


def ref_filter_acts(images, filters, g):
    P, W = patches(np.float64(images), g), filter_bank(np.float64(filters), g)
    out = np.zeros((g.num_filters, g.modules_y, g.modules_x, images.shape[-1]))
    for chans, filts in group_slices(g):
        out[filts] = np.einsum("cijyxn,yxcijf->fyxn", P[chans], W[..., filts])
    return out


def ref_img_acts(hid_acts, filters, g):
    H, W = np.float64(hid_acts), filter_bank(np.float64(filters), g)
    grad_p = np.zeros((g.channels, g.filter_size, g.filter_size, g.modules_y, g.modules_x, H.shape[-1]))
    for chans, filts in group_slices(g):
        grad_p[chans] = np.einsum("fyxn,yxcijf->cijyxn", H[filts], W[..., filts])
    return unpatch(grad_p, g, H.shape[-1])


def ref_weight_acts(images, hid_acts, g):
    P, H = patches(np.float64(images), g), np.float64(hid_acts)
    fc, fs = g.channels // g.groups, g.filter_size
    grad = np.zeros((g.modules_y, g.modules_x, fc, fs, fs, g.num_filters))
    for (chans, filts) in group_slices(g):
        grad[..., filts] = np.einsum("cijyxn,fyxn->yxcijf", P[chans], H[filts])
    if not g.local:
        grad = grad.sum(axis=(0, 1))
    return grad.reshape(-1, g.num_filters)


# ---- helpers ---------------------------------------------------------------------------------

def shapes(g, n):
    return ((g.channels, g.img_size_y, g.img_size_x, n), (g.filter_rows, g.num_filters),
            (g.num_filters, g.modules_y, g.modules_x, n))


def random(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def check_op(fn, device, rng, inputs, out_shape, expected, geom):
    (out,) = run_op(fn, device, inputs, [out_shape], geometry=geom)
    assert_close(out, expected, what=f"{fn.__name__} (scale_targets=0)")
    old = random(rng, out_shape)
    (out,) = run_op(fn, device, inputs, [old.copy()], geometry=geom, scale_targets=0.75, scale_output=-1.5)
    assert_close(out, 0.75 * old - 1.5 * expected, what=f"{fn.__name__} (accumulating)")


# ---- forward and backward against the reference ----------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_filter_acts(device, rng, case):
    g, n = geometry(case), case[9]
    img_shape, filt_shape, hid_shape = shapes(g, n)
    images, filters = random(rng, img_shape), random(rng, filt_shape)
    check_op(_core.filter_acts, device, rng, [images, filters], hid_shape, ref_filter_acts(images, filters, g), g)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_img_acts(device, rng, case):
    g, n = geometry(case), case[9]
    img_shape, filt_shape, hid_shape = shapes(g, n)
    hid, filters = random(rng, hid_shape), random(rng, filt_shape)
    check_op(_core.img_acts, device, rng, [hid, filters], img_shape, ref_img_acts(hid, filters, g), g)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_weight_acts(device, rng, case):
    g, n = geometry(case), case[9]
    img_shape, filt_shape, hid_shape = shapes(g, n)
    images, hid = random(rng, img_shape), random(rng, hid_shape)
    check_op(_core.weight_acts, device, rng, [images, hid], filt_shape, ref_weight_acts(images, hid, g), g)


@pytest.mark.parametrize("workspace", ["8192", "4"], ids=["chunks", "single-columns"])
@pytest.mark.parametrize("local", [False, True], ids=["conv", "local"])
def test_small_workspace_splits_into_chunks(device, rng, monkeypatch, local, workspace):
    """A small workspace makes the CPU work on many small column chunks (ranges of
    (module, image) columns that cross module boundaries), down to single columns."""
    monkeypatch.setenv("CCN_CPU_CONV_WORKSPACE", workspace)
    g = geometry((4, 9, 7, 3, 6, 1, 2, 2, local, 37, None))
    img_shape, filt_shape, hid_shape = shapes(g, 37)
    images, filters, hid = random(rng, img_shape), random(rng, filt_shape), random(rng, hid_shape)
    check_op(_core.filter_acts, device, rng, [images, filters], hid_shape, ref_filter_acts(images, filters, g), g)
    check_op(_core.img_acts, device, rng, [hid, filters], img_shape, ref_img_acts(hid, filters, g), g)
    check_op(_core.weight_acts, device, rng, [images, hid], filt_shape, ref_weight_acts(images, hid, g), g)


@pytest.mark.parametrize("local", [False, True], ids=["conv", "local"])
def test_weight_acts_is_repeatable(device, rng, local):
    g = geometry((4, 11, 8, 5, 6, 2, 2, 2, local, 33, None))
    img_shape, filt_shape, hid_shape = shapes(g, 33)
    images, hid = random(rng, img_shape), random(rng, hid_shape)
    (first,) = run_op(_core.weight_acts, device, [images, hid], [filt_shape], geometry=g)
    (second,) = run_op(_core.weight_acts, device, [images, hid], [filt_shape], geometry=g)
    assert np.array_equal(first, second)


# ---- finite differences: the backward routines are the gradients of filter_acts --------------

GRAD_CASES = [
    (2, 5, 4, 3, 4, 1, 2, 2, False, 3, None),
    (3, 4, 5, 2, 2, 1, 1, 1, False, 2, None),
    (2, 5, 4, 3, 4, 1, 2, 2, True, 3, None),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_img_acts_matches_finite_differences(device, rng, case):
    g, n = geometry(case), case[9]
    img_shape, filt_shape, hid_shape = shapes(g, n)
    images, filters, weights = random(rng, img_shape), random(rng, filt_shape), random(rng, hid_shape)
    expected = numeric_grad(lambda x: np.sum(weights * ref_filter_acts(x, filters, g)), images)
    (out,) = run_op(_core.img_acts, device, [weights, filters], [img_shape], geometry=g)
    assert_close(out, expected, rtol=1e-3)


@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_weight_acts_matches_finite_differences(device, rng, case):
    g, n = geometry(case), case[9]
    img_shape, filt_shape, hid_shape = shapes(g, n)
    images, filters, weights = random(rng, img_shape), random(rng, filt_shape), random(rng, hid_shape)
    expected = numeric_grad(lambda w: np.sum(weights * ref_filter_acts(images, w, g)), filters)
    (out,) = run_op(_core.weight_acts, device, [images, weights], [filt_shape], geometry=g)
    assert_close(out, expected, rtol=1e-3)


# ---- geometry and argument checks ------------------------------------------------------------

def test_output_size_and_geometry_defaults():
    for img, fs, p, s in [(32, 5, 2, 1), (7, 3, 0, 2), (8, 3, 1, 3), (10, 4, 0, 3), (1, 1, 0, 1), (5, 7, 1, 1)]:
        assert _core.ConvGeometry.output_size(img, fs, p, s) == 1 + -(-(2 * p + img - fs) // s)
    g = _core.ConvGeometry(channels=6, img_size_y=10, img_size_x=13, filter_size=4, num_filters=8, stride=3, groups=2)
    assert (g.modules_y, g.modules_x, g.padding, g.local) == (3, 4, 0, False)
    assert (g.filter_channels, g.filter_rows, g.hid_rows, g.image_rows) == (3, 48, 96, 780)
    g.local = True
    assert g.filter_rows == 12 * 48
    assert _core.ConvGeometry(channels=1, img_size_y=5, filter_size=3, num_filters=1).img_size_x == 5
    with pytest.raises(ValueError, match="larger than the padded image"):
        _core.ConvGeometry.output_size(4, 7, 1, 1)
    with pytest.raises(ValueError, match="stride"):
        _core.ConvGeometry.output_size(8, 3, 0, 0)
    with pytest.raises(ValueError, match="padding"):
        _core.ConvGeometry(channels=3, img_size_y=8, filter_size=3, num_filters=4, padding=-1)


def make_args(g, n=5):
    img_shape, filt_shape, hid_shape = shapes(g, n)
    return np.ones(img_shape, np.float32), np.ones(filt_shape, np.float32), np.ones(hid_shape, np.float32)


def test_bad_shapes_are_value_errors():
    g = _core.ConvGeometry(channels=4, img_size_y=7, img_size_x=6, filter_size=3, num_filters=4, padding=1)
    images, filters, hid = make_args(g)
    with pytest.raises(ValueError, match="'images'"):
        _core.filter_acts(images[:3], filters, hid, g)
    with pytest.raises(ValueError, match="'filters'"):
        _core.filter_acts(images, filters[:-1], hid, g)
    with pytest.raises(ValueError, match="'targets'"):
        _core.filter_acts(images, filters, hid[..., :4].copy(), g)  # another batch size
    with pytest.raises(ValueError, match="'targets'"):
        _core.img_acts(hid, filters, images[:, :, :5].copy(), g)
    with pytest.raises(ValueError, match="'hidActs'"):
        _core.weight_acts(images, hid[:, :, :5].copy(), filters, g)
    with pytest.raises(ValueError, match="'targets'"):
        _core.weight_acts(images, hid, np.ones((g.filter_rows, 5), np.float32), g)
    with pytest.raises(ValueError, match="at least one image"):
        _core.filter_acts(images[..., :0].copy(), filters, hid[..., :0].copy(), g)
    g.local = True  # local filters have a bank per module
    with pytest.raises(ValueError, match="'filters'"):
        _core.filter_acts(images, filters, hid, g)


def test_bad_types_are_type_errors():
    g = _core.ConvGeometry(channels=2, img_size_y=5, filter_size=3, num_filters=2)
    images, filters, hid = make_args(g)
    with pytest.raises(TypeError, match="images"):
        _core.filter_acts(images.astype(np.float64), filters, hid, g)
    with pytest.raises(TypeError, match="filters"):
        _core.img_acts(hid, filters.tolist(), images, g)
    with pytest.raises(TypeError):
        _core.weight_acts(images, hid, filters, "not a geometry")


@pytest.mark.parametrize("field, value, message", [
    ("groups", 3, "groups"),  # does not divide 4 channels
    ("num_filters", 6, "groups"),  # 6 filters in 4 groups
    ("stride", 0, "stride"),
    ("padding", -1, "padding"),
    ("modules_x", 0, "modulesX"),
    ("filter_size", 0, "filterSize"),
    ("channels", 0, "channels"),
])
def test_bad_geometry_is_a_value_error(field, value, message):
    g = _core.ConvGeometry(channels=4, img_size_y=6, filter_size=3, num_filters=8, groups=4)
    images, filters, hid = make_args(g)
    setattr(g, field, value)
    for call in (lambda: _core.filter_acts(images, filters, hid, g),
                 lambda: _core.img_acts(hid, filters, images, g),
                 lambda: _core.weight_acts(images, hid, filters, g)):
        with pytest.raises(ValueError, match=message):
            call()
