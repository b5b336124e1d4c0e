"""Image routines on (channels, img_size_y, img_size_x, num_images) arrays against float64
NumPy references; bed_of_nails_undo against finite differences; argument checks."""
import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, numeric_grad, run_op

# (channels, img_size_y, img_size_x, num_images)
SHAPES = [(3, 5, 7, 1), (1, 8, 8, 7), (2, 9, 4, 33), (3, 1, 6, 3)]


def geometry(shape):
    return _core.ImageGeometry(channels=shape[0], img_size_y=shape[1], img_size_x=shape[2])


def images(rng, shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_reflect_horizontal(device, rng, shape):
    x = images(rng, shape)
    expected = x[:, :, ::-1, :].astype(np.float64)
    (out,) = run_op(_core.reflect_horizontal, device, [x], [shape], geometry=geometry(shape))
    assert_close(out, expected)
    old = images(rng, shape)
    (out,) = run_op(_core.reflect_horizontal, device, [x], [old.copy()], geometry=geometry(shape),
                    scale_targets=0.5, scale_output=-1.0)
    assert_close(out, 0.5 * old - expected)


@pytest.mark.parametrize("shape,window", [((3, 5, 7, 1), (1, 2, 3, 4)), ((2, 9, 4, 33), (0, 0, 9, 4)),
                                          ((1, 8, 8, 7), (7, 3, 1, 5))])
def test_crop(device, rng, shape, window):
    start_y, start_x, crop_y, crop_x = window
    x = images(rng, shape)
    expected = x[:, start_y:start_y + crop_y, start_x:start_x + crop_x, :].astype(np.float64)
    out_shape = (shape[0], crop_y, crop_x, shape[3])
    kwargs = dict(geometry=geometry(shape), start_y=start_y, start_x=start_x, crop_y=crop_y, crop_x=crop_x)
    (out,) = run_op(_core.crop, device, [x], [out_shape], **kwargs)
    assert_close(out, expected)
    old = images(rng, out_shape)
    (out,) = run_op(_core.crop, device, [x], [old.copy()], scale_targets=1.0, scale_output=2.0, **kwargs)
    assert_close(out, old + 2.0 * expected)


def ref_resize(x, tgt_y, tgt_x):
    """Bilinear, half-pixel centres, sample positions clamped to the image."""
    x = x.astype(np.float64)

    def taps(out_size, in_size):
        pos = (np.arange(out_size) + 0.5) * in_size / out_size - 0.5
        pos = np.clip(pos, 0, in_size - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, in_size - 1)
        return lo, hi, pos - lo

    ylo, yhi, wy = taps(tgt_y, x.shape[1])
    xlo, xhi, wx = taps(tgt_x, x.shape[2])
    rows = x[:, ylo] * (1 - wy)[None, :, None, None] + x[:, yhi] * wy[None, :, None, None]
    return rows[:, :, xlo] * (1 - wx)[None, None, :, None] + rows[:, :, xhi] * wx[None, None, :, None]


@pytest.mark.parametrize("shape,target", [((3, 5, 7, 1), (9, 4)), ((1, 8, 8, 7), (4, 4)), ((2, 9, 4, 33), (13, 11)),
                                          ((3, 1, 6, 3), (2, 6)), ((1, 4, 4, 2), (4, 4))])
def test_resize_bilinear(device, rng, shape, target):
    x = images(rng, shape)
    expected = ref_resize(x, *target)
    out_shape = (shape[0], target[0], target[1], shape[3])
    kwargs = dict(geometry=geometry(shape), tgt_size_y=target[0], tgt_size_x=target[1])
    (out,) = run_op(_core.resize_bilinear, device, [x], [out_shape], **kwargs)
    assert_close(out, expected)
    old = images(rng, out_shape)
    (out,) = run_op(_core.resize_bilinear, device, [x], [old.copy()], scale_targets=-1.0, scale_output=0.5, **kwargs)
    assert_close(out, -old + 0.5 * expected)


def test_resize_bilinear_known_values():
    # 2 -> 4 along x: sample positions -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1)
    x = np.array([0.0, 4.0], np.float32).reshape(1, 1, 2, 1)
    out = np.full((1, 1, 4, 1), np.nan, np.float32)
    _core.resize_bilinear(x, out, _core.ImageGeometry(channels=1, img_size_y=1, img_size_x=2), 1, 4)
    assert_close(out.reshape(-1), [0.0, 1.0, 3.0, 4.0])
    # same size is the identity
    y = np.arange(12, dtype=np.float32).reshape(1, 3, 4, 1)
    out = np.full_like(y, np.nan)
    _core.resize_bilinear(y, out, _core.ImageGeometry(channels=1, img_size_y=3, img_size_x=4), 3, 4)
    assert_close(out, y)


@pytest.mark.parametrize("shape", [(3, 5, 7, 1), (3, 4, 4, 33)])
def test_rgb_to_yuv(device, rng, shape):
    x = rng.uniform(0, 1, shape).astype(np.float32)
    matrix = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])
    expected = np.einsum("oc,cyxn->oyxn", matrix, x.astype(np.float64))
    (out,) = run_op(_core.rgb_to_yuv, device, [x], [shape], geometry=geometry(shape))
    assert_close(out, expected)
    old = images(rng, shape)
    (out,) = run_op(_core.rgb_to_yuv, device, [x], [old.copy()], geometry=geometry(shape), scale_targets=0.5)
    assert_close(out, 0.5 * old + expected)
    # white has full luma and (to the coefficients' 5 digits) no chroma
    white = np.ones((3, 1, 1, 1), np.float32)
    (out,) = run_op(_core.rgb_to_yuv, device, [white], [white.shape], geometry=geometry(white.shape))
    assert_close(out.reshape(-1), [1.0, 0.0, 0.0], rtol=1e-4)


def ref_blur(x, taps, horizontal):
    """out[.., p, ..] = sum_t taps[t] * x[.., p + t - radius, ..] along the axis, zeros outside."""
    x = x.astype(np.float64)
    axis = 2 if horizontal else 1
    radius = len(taps) // 2
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad)
    out = np.zeros_like(x)
    for t, w in enumerate(taps):
        out += w * np.take(padded, np.arange(t, t + x.shape[axis]), axis=axis)
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("horizontal", [True, False])
# the last filter is asymmetric: it pins down that tap t weighs the pixel at offset t - radius
@pytest.mark.parametrize("taps", [[1.0], [0.25, 0.5, 0.25], [0.1, -0.3, 0.5, 0.2, 0.7]])
def test_gaussian_blur(device, rng, shape, horizontal, taps):
    x = images(rng, shape)
    f = np.array(taps, np.float32)
    expected = ref_blur(x, f, horizontal)
    (out,) = run_op(_core.gaussian_blur, device, [x, f], [shape], geometry=geometry(shape), horizontal=horizontal)
    assert_close(out, expected)
    old = images(rng, shape)
    (out,) = run_op(_core.gaussian_blur, device, [x, f], [old.copy()], geometry=geometry(shape),
                    horizontal=horizontal, scale_targets=1.0, scale_output=3.0)
    assert_close(out, old + 3.0 * expected)


NAILS = [((3, 5, 7, 1), 0, 2, 3, 4), ((2, 9, 8, 33), 1, 3, 3, 3), ((1, 6, 6, 7), 2, 1, 4, 4), ((1, 4, 4, 3), 3, 5, 1, 1)]


def ref_nails(x, start, stride, oy, ox):
    return x[:, start::stride][:, :oy][:, :, start::stride][:, :, :ox].astype(np.float64)


@pytest.mark.parametrize("shape,start,stride,oy,ox", NAILS)
def test_bed_of_nails(device, rng, shape, start, stride, oy, ox):
    x = images(rng, shape)
    expected = ref_nails(x, start, stride, oy, ox)
    out_shape = (shape[0], oy, ox, shape[3])
    kwargs = dict(geometry=geometry(shape), start=start, stride=stride, outputs_y=oy, outputs_x=ox)
    (out,) = run_op(_core.bed_of_nails, device, [x], [out_shape], **kwargs)
    assert_close(out, expected)
    old = images(rng, out_shape)
    (out,) = run_op(_core.bed_of_nails, device, [x], [old.copy()], scale_targets=0.5, scale_output=2.0, **kwargs)
    assert_close(out, 0.5 * old + 2.0 * expected)


@pytest.mark.parametrize("shape,start,stride,oy,ox", NAILS)
def test_bed_of_nails_undo_matches_finite_differences(device, rng, shape, start, stride, oy, ox):
    shape = shape[:3] + (min(shape[3], 3),)  # few images: numeric_grad perturbs every pixel
    x = images(rng, shape)
    out_shape = (shape[0], oy, ox, shape[3])
    g = images(rng, out_shape)
    expected = numeric_grad(lambda v: np.sum(g * ref_nails(v, start, stride, oy, ox)), x)
    kwargs = dict(geometry=geometry(shape), start=start, stride=stride, outputs_y=oy, outputs_x=ox)
    (out,) = run_op(_core.bed_of_nails_undo, device, [g], [shape], **kwargs)
    assert_close(out, expected, rtol=1e-3)
    old = images(rng, shape)
    (out,) = run_op(_core.bed_of_nails_undo, device, [g], [old.copy()], scale_targets=1.0, scale_output=-1.0, **kwargs)
    assert_close(out, old - expected, rtol=1e-3)


def test_image_geometry_class():
    g = _core.ImageGeometry(channels=3, img_size_y=32, img_size_x=24)
    assert (g.channels, g.img_size_y, g.img_size_x) == (3, 32, 24)
    g.img_size_x = 30
    assert g.img_size_x == 30
    assert "img_size_x=30" in repr(g)
    with pytest.raises(TypeError):
        _core.ImageGeometry(3, 32, 32)


def test_image_argument_errors(rng):
    shape = (3, 6, 5, 4)
    g = geometry(shape)
    x = images(rng, shape)
    out = np.empty_like(x)
    with pytest.raises(ValueError, match="'images'"):
        _core.reflect_horizontal(x, out, _core.ImageGeometry(channels=3, img_size_y=5, img_size_x=5))
    with pytest.raises(ValueError, match="channels"):
        _core.reflect_horizontal(x, out, _core.ImageGeometry(channels=0, img_size_y=6, img_size_x=5))
    with pytest.raises(ValueError, match="imgSizeY"):
        _core.reflect_horizontal(x, out, _core.ImageGeometry(channels=3, img_size_y=-6, img_size_x=5))
    with pytest.raises(ValueError, match="'targets'"):
        _core.reflect_horizontal(x, np.empty((3, 6, 5, 3), np.float32), g)
    with pytest.raises(ValueError, match="share memory"):
        _core.reflect_horizontal(x, x, g)
    with pytest.raises(TypeError):
        _core.reflect_horizontal(x, out, (3, 6, 5))
    with pytest.raises(ValueError, match="crop rows"):
        _core.crop(x, np.empty((3, 4, 2, 4), np.float32), g, 3, 0, 4, 2)
    with pytest.raises(ValueError, match="crop columns"):
        _core.crop(x, np.empty((3, 2, 6, 4), np.float32), g, 0, 0, 2, 6)
    with pytest.raises(ValueError, match="start_x"):
        _core.crop(x, np.empty((3, 2, 2, 4), np.float32), g, 0, -1, 2, 2)
    with pytest.raises(ValueError, match="cropY"):
        _core.crop(x, np.empty((3, 0, 2, 4), np.float32), g, 0, 0, 0, 2)
    with pytest.raises(ValueError, match="'targets'"):
        _core.crop(x, np.empty((3, 2, 3, 4), np.float32), g, 0, 0, 2, 2)
    with pytest.raises(ValueError, match="tgtSizeX"):
        _core.resize_bilinear(x, np.empty((3, 2, 0, 4), np.float32), g, 2, 0)
    with pytest.raises(ValueError, match="3 channels"):
        g4 = _core.ImageGeometry(channels=4, img_size_y=6, img_size_x=5)
        x4 = images(rng, (4, 6, 5, 4))
        _core.rgb_to_yuv(x4, np.empty_like(x4), g4)
    with pytest.raises(ValueError, match="odd"):
        _core.gaussian_blur(x, np.ones(4, np.float32), out, g, True)
    with pytest.raises(ValueError, match="'filter'"):
        _core.gaussian_blur(x, np.ones(0, np.float32), out, g, True)
    with pytest.raises(ValueError, match="outside the image"):
        _core.bed_of_nails(x, np.empty((3, 3, 2, 4), np.float32), g, 2, 2, 3, 2)
    with pytest.raises(ValueError, match="stride"):
        _core.bed_of_nails(x, np.empty((3, 3, 2, 4), np.float32), g, 0, 0, 3, 2)
    with pytest.raises(ValueError, match="'outGrads'"):
        _core.bed_of_nails_undo(np.empty((3, 3, 3, 4), np.float32), out, g, 0, 2, 3, 2)
