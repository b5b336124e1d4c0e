"""Every binding, called with wrong dtypes, shapes, strides, empty and huge dimensions:
always a Python exception (ValueError / TypeError), never a crash or a silent write."""
import numpy as np
import pytest

from ccn import _core

rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def conv_case(local=False):
    g = _core.ConvGeometry(channels=4, img_size_y=5, img_size_x=6, filter_size=3, num_filters=4, padding=1,
                           stride=2, modules_y=3, modules_x=3, groups=2, local=local)
    frows = (9 if local else 1) * 2 * 9
    return g, r(4 * 5 * 6, 3), r(frows, 4), r(4 * 9, 3)


def pool_geom():
    return _core.PoolGeometry(channels=2, img_size_y=5, img_size_x=5, size_x=3, start=0, stride=2,
                              outputs_y=2, outputs_x=2)


def cm_geom():
    return _core.CrossMapPoolGeometry(channels=4, pixels=6, size=2, start=0, stride=2, outputs=2)


def norm_geom():
    return _core.NormGeometry(channels=4, img_size_y=3, img_size_x=3, size=3, add_scale=0.01, pow_scale=0.75,
                              min_div=1.0, blocked=False)


def img_geom():
    return _core.ImageGeometry(channels=3, img_size_y=4, img_size_x=5)


def valid_calls():
    """(name, function, args, kwargs): a well-formed call of every op binding."""
    calls = []
    for local in (False, True):
        g, images, filters, hid = conv_case(local)
        tag = "local" if local else "conv"
        calls += [
            (f"filter_acts[{tag}]", _core.filter_acts, [images, filters, hid.copy()], dict(geometry=g)),
            (f"img_acts[{tag}]", _core.img_acts, [hid, filters, images.copy()], dict(geometry=g)),
            (f"weight_acts[{tag}]", _core.weight_acts, [images, hid, filters.copy()], dict(geometry=g)),
        ]
    pg, cg, ng, ig = pool_geom(), cm_geom(), norm_geom(), img_geom()
    x, pooled = r(2 * 25, 3), r(2 * 4, 3)
    cm_x, cm_out = r(4 * 6, 3), r(2 * 6, 3)
    nx = r(4 * 9, 3)
    calls += [
        ("local_pool", _core.local_pool, [x, pooled.copy()], dict(geometry=pg, kind="max")),
        ("local_max_undo", _core.local_max_undo, [x, pooled, pooled, x.copy()], dict(geometry=pg)),
        ("local_avg_undo", _core.local_avg_undo, [pooled, x.copy()], dict(geometry=pg)),
        ("cross_map_max_pool", _core.cross_map_max_pool, [cm_x, cm_out.copy()], dict(geometry=cg)),
        ("cross_map_max_pool_undo", _core.cross_map_max_pool_undo, [cm_x, cm_out, cm_out, cm_x.copy()], dict(geometry=cg)),
        ("response_norm", _core.response_norm, [nx, nx.copy(), nx.copy()], dict(geometry=ng)),
        ("response_norm_undo", _core.response_norm_undo, [nx, nx, nx, np.abs(nx) + 1, nx.copy()], dict(geometry=ng)),
        ("response_norm_cross_map", _core.response_norm_cross_map, [nx, nx.copy(), nx.copy()], dict(geometry=ng)),
        ("response_norm_cross_map_undo", _core.response_norm_cross_map_undo, [nx, nx, nx, np.abs(nx) + 1, nx.copy()], dict(geometry=ng)),
        ("contrast_norm", _core.contrast_norm, [nx, nx.copy(), nx.copy(), nx.copy()], dict(geometry=ng)),
        ("contrast_norm_undo", _core.contrast_norm_undo, [nx, nx, nx, nx, np.abs(nx) + 1, nx.copy()], dict(geometry=ng)),
        ("neuron_act", _core.neuron_act, [x, x.copy()], dict(neuron="relu")),
        ("neuron_grad", _core.neuron_grad, [x, x, x, x.copy()], dict(neuron="tanh[1,1]")),
        ("gemm", _core.gemm, [r(3, 4), r(4, 5), r(3, 5)], {}),
        ("add_bias", _core.add_bias, [r(4), r(4, 7)], {}),
        ("bias_grad", _core.bias_grad, [r(4, 7), r(4)], {}),
        ("add", _core.add, [r(4, 7), r(4, 7)], {}),
        ("mult", _core.mult, [r(4, 7), r(4, 7), r(4, 7)], {}),
        ("eltwise_max", _core.eltwise_max, [r(4, 7), r(4, 7), r(4, 7)], {}),
        ("eltwise_max_grad", _core.eltwise_max_grad, [r(4, 7), r(4, 7), r(4, 7), r(4, 7)], {}),
        ("dropout_mask", _core.dropout_mask, [r(4, 7)], dict(keep=0.5, seed=1, offset=0)),
        ("momentum_update", _core.momentum_update, [r(4, 7), r(4, 7), r(4, 7)], dict(eps_over_cases=0.1, mom=0.9, wc_eps=0.0)),
        ("softmax", _core.softmax, [r(5, 3), r(5, 3)], {}),
        ("softmax_grad", _core.softmax_grad, [r(5, 3), r(5, 3), r(5, 3)], {}),
        ("logreg_cost", _core.logreg_cost, [np.array([0, 4, 2], np.float32), np.full((5, 3), 0.2, np.float32)], {}),
        ("logreg_grad", _core.logreg_grad, [np.array([0, 4, 2], np.float32), np.full((5, 3), 0.2, np.float32), r(5, 3)], {}),
        ("softmax_logreg_grad", _core.softmax_logreg_grad, [np.array([0, 4, 2], np.float32), np.full((5, 3), 0.2, np.float32), r(5, 3)], {}),
        ("cross_ent_cost", _core.cross_ent_cost, [np.full((5, 3), 0.2, np.float32), np.full((5, 3), 0.2, np.float32)], {}),
        ("cross_ent_grad", _core.cross_ent_grad, [np.full((5, 3), 0.2, np.float32), np.full((5, 3), 0.2, np.float32), r(5, 3)], {}),
        ("softmax_cross_ent_grad", _core.softmax_cross_ent_grad, [np.full((5, 3), 0.2, np.float32), np.full((5, 3), 0.2, np.float32), r(5, 3)], {}),
        ("sum_of_squares", _core.sum_of_squares, [r(5, 3)], {}),
        ("reflect_horizontal", _core.reflect_horizontal, [r(60, 2), r(60, 2)], dict(geometry=ig)),
        ("crop", _core.crop, [r(60, 2), r(3 * 2 * 3, 2)], dict(geometry=ig, start_y=1, start_x=1, crop_y=2, crop_x=3)),
        ("resize_bilinear", _core.resize_bilinear, [r(60, 2), r(3 * 7 * 3, 2)], dict(geometry=ig, tgt_size_y=7, tgt_size_x=3)),
        ("rgb_to_yuv", _core.rgb_to_yuv, [r(60, 2), r(60, 2)], dict(geometry=ig)),
        ("gaussian_blur", _core.gaussian_blur, [r(60, 2), np.array([0.25, 0.5, 0.25], np.float32), r(60, 2)], dict(geometry=ig, horizontal=True)),
        ("bed_of_nails", _core.bed_of_nails, [r(60, 2), r(3 * 2 * 3, 2)], dict(geometry=ig, start=0, stride=2, outputs_y=2, outputs_x=3)),
        ("bed_of_nails_undo", _core.bed_of_nails_undo, [r(3 * 2 * 3, 2), r(60, 2)], dict(geometry=ig, start=0, stride=2, outputs_y=2, outputs_x=3)),
    ]
    return calls


CALLS = valid_calls()


def bad_values(a):
    """Wrong versions of an array argument, each with a description."""
    yield "float64", a.astype(np.float64)
    yield "int32", a.astype(np.int32)
    yield "list", a.tolist()
    yield "None", None
    yield "scalar", np.float32(1.0)
    if a.ndim == 2 and a.shape[1] > 1:
        yield "non-contiguous", a[:, ::2]
        yield "transposed", a.T
    yield "extra row", np.concatenate([a.reshape(a.shape[0], -1), a.reshape(a.shape[0], -1)[:1]], axis=0) if a.ndim > 1 else np.concatenate([a, a[:1]])
    yield "one column less", a[..., :-1].copy() if a.ndim > 1 and a.shape[-1] > 1 else a[:-1].copy()
    yield "empty", np.zeros((0,) + a.shape[1:], np.float32)
    yield "9 dims", np.zeros((1,) * 9, np.float32)
    ro = a.copy()
    ro.setflags(write=False)
    yield "read-only", ro


@pytest.mark.parametrize("name,fn,args,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_valid_call_runs(name, fn, args, kwargs):
    fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args], **kwargs)


# Arguments whose shape is free (any element count is valid), by op: only dtype, layout
# and kind are wrong for them.
SHAPE_FREE = {"add_bias": {1}, "bias_grad": {0}, "dropout_mask": {0}, "sum_of_squares": {0}}
# Ops whose arguments are all inputs (they return their result).
NO_OUTPUT = {"logreg_cost", "cross_ent_cost", "sum_of_squares"}
SHAPE_MUTATIONS = {"extra row", "one column less", "9 dims"}


@pytest.mark.parametrize("name,fn,args,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_bad_arrays_raise(name, fn, args, kwargs):
    for pos, good in enumerate(args):
        if not isinstance(good, np.ndarray):
            continue
        for what, bad in bad_values(good):
            if what in SHAPE_MUTATIONS and pos in SHAPE_FREE.get(name, ()):
                continue
            call = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            call[pos] = bad
            if what == "extra row" and name == "logreg_cost" and pos == 1:
                continue  # more classes than labels use is fine
            if what == "read-only" and (pos < len(args) - 1 or name in NO_OUTPUT):
                continue  # inputs may be read-only
            if what == "empty":
                try:  # an empty batch may be accepted as a no-op; it must never crash
                    fn(*call, **kwargs)
                except (ValueError, TypeError):
                    pass
                continue
            with pytest.raises((ValueError, TypeError)):
                fn(*call, **kwargs)
                pytest.fail(f"{name}: argument {pos} given {what} was accepted")


GEOMETRY_FIELDS = {
    "ConvGeometry": ["channels", "img_size_y", "img_size_x", "filter_size", "num_filters", "padding", "stride",
                     "modules_y", "modules_x", "groups"],
    "PoolGeometry": ["channels", "img_size_y", "img_size_x", "size_x", "stride", "outputs_y", "outputs_x"],
    "CrossMapPoolGeometry": ["channels", "pixels", "size", "stride", "outputs"],
    "NormGeometry": ["channels", "img_size_y", "img_size_x", "size"],
    "ImageGeometry": ["channels", "img_size_y", "img_size_x"],
}


@pytest.mark.parametrize("name,fn,args,kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_bad_geometry_raises(name, fn, args, kwargs):
    g = kwargs.get("geometry")
    if g is None:
        pytest.skip("no geometry")
    for field in GEOMETRY_FIELDS[type(g).__name__]:
        for value in ((-1, -7, 2**31 - 1) if field == "padding" else (0, -1, -7, 2**31 - 1, 1 << 20)):
            original = getattr(g, field)
            if value == original:
                continue
            setattr(g, field, value)
            try:
                call = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
                with pytest.raises((ValueError, TypeError)):
                    fn(*call, **kwargs)
                    pytest.fail(f"{name}: {field}={value} was accepted")
            finally:
                setattr(g, field, original)
