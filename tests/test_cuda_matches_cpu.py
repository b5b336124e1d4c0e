"""Every CUDA op against the CPU op on the same random inputs.

Outputs are poisoned with NaN before each call (run_op), so an element a kernel forgets to
write fails; relative error < 1e-4 in the max norm. Shapes cover batch sizes 1, 7 and 128,
odd image sizes, padding, strides > 1, groups 2, partial filter tiles and accumulation
(scale_targets != 0). Skips where there is no GPU.
"""
import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, from_device, run_op, to_device

if not _core.has_cuda_backend or _core.cuda_device_count() == 0:
    pytest.skip("needs the CUDA backend and a visible GPU", allow_module_level=True)

GPU = "cuda:0"
BATCHES = [1, 7, 128]


def both(fn, inputs, outputs, **kwargs):
    """Runs fn on the CPU and the GPU; checks every output and returns the CPU's."""
    # run_op writes into array outputs in place on the CPU: each device gets its own copy.
    gpu_outputs = [o.copy() if isinstance(o, np.ndarray) else o for o in outputs]
    cpu = run_op(fn, "cpu", inputs, outputs, **kwargs)
    gpu = run_op(fn, GPU, inputs, gpu_outputs, **kwargs)
    for k, (c, g) in enumerate(zip(cpu, gpu)):
        assert_close(g, c, what=f"{fn.__name__} output {k}")
    return cpu


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- conv / local

def out_size(img, filter_size, padding, stride):
    return 1 + -(-(2 * padding + img - filter_size) // stride)


# channels, img_size_y, img_size_x, filter_size, num_filters, padding, stride, groups
CONV_CASES = [
    (3, 9, 11, 3, 16, 1, 1, 1),
    (4, 10, 7, 5, 24, 2, 2, 2),
    (8, 7, 7, 3, 64, 0, 2, 2),
    (6, 8, 9, 4, 6, 1, 3, 2),
    (4, 6, 5, 3, 40, 1, 1, 1),  # > 32 filters: weightActs' 4 and filterActs' 8 per thread, a part tile
]


def conv_geometry(case, local):
    c, y, x, fs, f, pad, stride, groups = case
    return _core.ConvGeometry(channels=c, img_size_y=y, img_size_x=x, filter_size=fs, num_filters=f, padding=pad,
                              stride=stride, modules_y=out_size(y, fs, pad, stride),
                              modules_x=out_size(x, fs, pad, stride), groups=groups, local=local)


@pytest.mark.parametrize("local", [False, True], ids=["conv", "local"])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("batch", BATCHES)
def test_conv(rng, case, local, batch):
    g = conv_geometry(case, local)
    c, y, x, fs, f = case[:5]
    modules = g.modules_y * g.modules_x
    filter_rows = (modules if local else 1) * (c // g.groups) * fs * fs
    images, filters = normal(rng, c, y, x, batch), normal(rng, filter_rows, f)
    hid = normal(rng, f, g.modules_y, g.modules_x, batch)
    both(_core.filter_acts, [images, filters], [hid.shape], geometry=g)
    both(_core.img_acts, [hid, filters], [images.shape], geometry=g)
    both(_core.weight_acts, [images, hid], [filters.shape], geometry=g)
    # accumulation into existing targets
    both(_core.filter_acts, [images, filters], [normal(rng, *hid.shape)], geometry=g, scale_targets=0.5,
         scale_output=2.0)
    both(_core.img_acts, [hid, filters], [normal(rng, *images.shape)], geometry=g, scale_targets=1.0)
    both(_core.weight_acts, [images, hid], [normal(rng, *filters.shape)], geometry=g, scale_targets=0.9,
         scale_output=-0.1)


@pytest.mark.parametrize("local", [False, True], ids=["conv", "local"])
def test_weight_acts_is_deterministic(rng, local):
    g = conv_geometry((8, 13, 11, 3, 32, 1, 1, 2), local)
    images, hid = normal(rng, 8, 13, 11, 128), normal(rng, 32, g.modules_y, g.modules_x, 128)
    rows = (g.modules_y * g.modules_x if local else 1) * 4 * 9
    first, second = (run_op(_core.weight_acts, GPU, [images, hid], [(rows, 32)], geometry=g)[0] for _ in range(2))
    assert np.array_equal(first, second)


# ---------------------------------------------------------------- pool

# channels, img_size_y, img_size_x, size_x, start, stride
POOL_CASES = [(3, 9, 11, 3, 0, 2), (4, 8, 7, 3, -1, 2), (2, 7, 7, 2, 0, 2), (5, 6, 9, 4, -2, 3)]


def pool_out(img, size, start, stride):
    return -(-(img - start - size) // stride) + 1


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("batch", BATCHES)
def test_local_pool(rng, case, batch):
    c, y, x, size, start, stride = case
    g = _core.PoolGeometry(channels=c, img_size_y=y, img_size_x=x, size_x=size, start=start, stride=stride,
                           outputs_y=pool_out(y, size, start, stride), outputs_x=pool_out(x, size, start, stride))
    images = normal(rng, c, y, x, batch)
    pooled_shape = (c, g.outputs_y, g.outputs_x, batch)
    grads = normal(rng, *pooled_shape)
    for kind in ("max", "avg", "maxabs"):
        (pooled,) = both(_core.local_pool, [images], [pooled_shape], geometry=g, kind=kind)
        both(_core.local_pool, [images], [normal(rng, *pooled_shape)], geometry=g, kind=kind, scale_targets=0.5)
        if kind != "avg":
            both(_core.local_max_undo, [images, pooled, grads], [images.shape], geometry=g)
            both(_core.local_max_undo, [images, pooled, grads], [normal(rng, *images.shape)], geometry=g,
                 scale_targets=1.0)
    both(_core.local_avg_undo, [grads], [images.shape], geometry=g)
    both(_core.local_avg_undo, [grads], [normal(rng, *images.shape)], geometry=g, scale_targets=2.0,
         scale_output=0.5)


@pytest.mark.parametrize("channels,size,start,stride", [(7, 3, 0, 2), (16, 3, -1, 2), (5, 2, 0, 1)])
@pytest.mark.parametrize("batch", BATCHES)
def test_cross_map_max_pool(rng, channels, size, start, stride, batch):
    pixels = 5 * 7
    outputs = pool_out(channels, size, start, stride)
    g = _core.CrossMapPoolGeometry(channels=channels, pixels=pixels, size=size, start=start, stride=stride,
                                   outputs=outputs)
    images = normal(rng, channels, 5, 7, batch)
    (pooled,) = both(_core.cross_map_max_pool, [images], [(outputs, 5, 7, batch)], geometry=g)
    grads = normal(rng, outputs, 5, 7, batch)
    both(_core.cross_map_max_pool_undo, [images, pooled, grads], [images.shape], geometry=g)
    both(_core.cross_map_max_pool_undo, [images, pooled, grads], [normal(rng, *images.shape)], geometry=g,
         scale_targets=0.5)


# ---------------------------------------------------------------- norm

@pytest.mark.parametrize("size", [3, 4, 5])
@pytest.mark.parametrize("batch", BATCHES)
def test_spatial_norms(rng, size, batch):
    c, y, x = 3, 7, 9
    g = _core.NormGeometry(channels=c, img_size_y=y, img_size_x=x, size=size, add_scale=0.01, pow_scale=0.75,
                           min_div=2.0)
    images, grads = normal(rng, c, y, x, batch), normal(rng, c, y, x, batch)
    shape = images.shape
    denoms, acts = both(_core.response_norm, [images], [shape, shape], geometry=g)
    both(_core.response_norm, [images], [shape, normal(rng, *shape)], geometry=g, scale_targets=0.5)
    both(_core.response_norm_undo, [grads, images, acts, denoms], [shape], geometry=g)
    both(_core.response_norm_undo, [grads, images, acts, denoms], [normal(rng, *shape)], geometry=g,
         scale_targets=1.0)
    mean_diffs, denoms, acts = both(_core.contrast_norm, [images], [shape, shape, shape], geometry=g)
    both(_core.contrast_norm_undo, [grads, images, mean_diffs, acts, denoms], [shape], geometry=g)
    both(_core.contrast_norm_undo, [grads, images, mean_diffs, acts, denoms], [normal(rng, *shape)], geometry=g,
         scale_targets=0.5, scale_output=2.0)


@pytest.mark.parametrize("size,blocked", [(3, False), (4, False), (5, True)])
@pytest.mark.parametrize("batch", BATCHES)
def test_cross_map_norm(rng, size, blocked, batch):
    c, y, x = 16, 5, 3
    g = _core.NormGeometry(channels=c, img_size_y=y, img_size_x=x, size=size, add_scale=0.02, pow_scale=0.75,
                           min_div=1.0, blocked=blocked)
    images, grads = normal(rng, c, y, x, batch), normal(rng, c, y, x, batch)
    shape = images.shape
    denoms, acts = both(_core.response_norm_cross_map, [images], [shape, shape], geometry=g)
    both(_core.response_norm_cross_map_undo, [grads, images, acts, denoms], [shape], geometry=g)
    both(_core.response_norm_cross_map_undo, [grads, images, acts, denoms], [normal(rng, *shape)], geometry=g,
         scale_targets=0.5)


# ---------------------------------------------------------------- dense

@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 128, 33), (130, 7, 65), (64, 128, 300), (64, 100, 1500), (7, 5, 3000)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm(rng, m, n, k, trans_a, trans_b):
    a = normal(rng, k, m) if trans_a else normal(rng, m, k)
    b = normal(rng, n, k) if trans_b else normal(rng, k, n)
    both(_core.gemm, [a, b], [(m, n)], trans_a=trans_a, trans_b=trans_b)
    both(_core.gemm, [a, b], [normal(rng, m, n)], trans_a=trans_a, trans_b=trans_b, scale_targets=0.5,
         scale_output=2.0)


@pytest.mark.parametrize("batch", BATCHES)
def test_elementwise(rng, batch):
    shape = (5, 7, batch)
    a, b, old = normal(rng, *shape), normal(rng, *shape), normal(rng, *shape)
    both(_core.add, [a], [old], scale_targets=0.5, scale_output=3.0)
    both(_core.mult, [a, b], [shape])
    (largest,) = both(_core.eltwise_max, [a, b], [shape])
    both(_core.eltwise_max, [a, b], [old], scale_targets=1.0)
    both(_core.eltwise_max_grad, [old, a, largest], [shape])
    for rows in (5, 35):  # fc-style biases and untied (per-position) biases
        bias = normal(rng, rows)
        both(_core.add_bias, [bias], [old])
        both(_core.bias_grad, [a], [(rows,)])
        both(_core.bias_grad, [a], [normal(rng, rows)], scale_targets=0.9, scale_output=0.1)


def test_dropout_mask_matches_cpu_exactly():
    masks = [run_op(_core.dropout_mask, device, [], [(33, 129)], keep=0.6, seed=1234, offset=77)[0]
             for device in ("cpu", GPU)]
    assert np.array_equal(masks[0], masks[1])


def test_momentum_update(rng):
    weights, grads, inc = normal(rng, 37, 65), normal(rng, 37, 65), normal(rng, 37, 65)
    results = []
    for device in ("cpu", GPU):
        w, i = to_device(weights.copy(), device), to_device(inc.copy(), device)
        _core.momentum_update(w, to_device(grads, device), i, eps_over_cases=0.01, mom=0.9, wc_eps=0.0005)
        results.append((from_device(w), from_device(i)))
    assert_close(results[1][0], results[0][0], what="weights")
    assert_close(results[1][1], results[0][1], what="inc")


# ---------------------------------------------------------------- cost

def probabilities(rng, classes, cases):
    scores = rng.standard_normal((classes, cases)) * 2
    p = np.exp(scores - scores.max(0))
    return (p / p.sum(0)).astype(np.float32)


@pytest.mark.parametrize("classes", [2, 10, 1000])
@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_and_costs(rng, classes, batch):
    scores = normal(rng, classes, batch) * 3
    both(_core.softmax, [scores], [scores.shape])
    both(_core.softmax, [scores], [normal(rng, classes, batch)], scale_targets=0.5)
    probs = probabilities(rng, classes, batch)
    grads = normal(rng, classes, batch)
    both(_core.softmax_grad, [grads, probs], [probs.shape])
    labels = rng.integers(0, classes, batch).astype(np.float32)
    for top_k in (1, 5):
        _, cpu = run_op(_core.logreg_cost, "cpu", [labels, probs], [], top_k=top_k)
        _, gpu = run_op(_core.logreg_cost, GPU, [labels, probs], [], top_k=top_k)
        assert abs(gpu[0] - cpu[0]) <= 1e-6 * abs(cpu[0]) and gpu[1:] == cpu[1:]
    both(_core.logreg_grad, [labels, probs], [probs.shape], coeff=-0.5)
    both(_core.softmax_logreg_grad, [labels, probs], [normal(rng, classes, batch)], coeff=2.0, scale_targets=0.5)
    targets = probabilities(rng, classes, batch)
    _, cpu = run_op(_core.cross_ent_cost, "cpu", [targets, probs], [])
    _, gpu = run_op(_core.cross_ent_cost, GPU, [targets, probs], [])
    assert abs(gpu[0] - cpu[0]) <= 1e-6 * abs(cpu[0]) and gpu[1:] == cpu[1:]
    both(_core.cross_ent_grad, [targets, probs], [probs.shape], coeff=1.5)
    both(_core.softmax_cross_ent_grad, [targets * 2, probs], [normal(rng, classes, batch)], coeff=0.5,
         scale_targets=1.0)
    cpu, gpu = (_core.sum_of_squares(to_device(scores, d)) for d in ("cpu", GPU))
    assert abs(gpu - cpu) <= 1e-9 * cpu


@pytest.mark.parametrize("bad", [10.0, -1.0, 2.5, float("nan")])
def test_bad_labels_raise_value_error_on_gpu(rng, bad):
    probs = probabilities(rng, 10, 300)
    labels = rng.integers(0, 10, 300).astype(np.float32)
    labels[257] = bad
    with pytest.raises(ValueError, match="labels"):
        run_op(_core.logreg_cost, GPU, [labels, probs], [])
    for fn in (_core.logreg_grad, _core.softmax_logreg_grad):
        with pytest.raises(ValueError, match="labels"):
            run_op(fn, GPU, [labels, probs], [probs.shape])


# ---------------------------------------------------------------- image

@pytest.mark.parametrize("batch", BATCHES)
def test_image_ops(rng, batch):
    c, y, x = 3, 9, 13
    g = _core.ImageGeometry(channels=c, img_size_y=y, img_size_x=x)
    images = normal(rng, c, y, x, batch)
    old = normal(rng, *images.shape)
    both(_core.reflect_horizontal, [images], [images.shape], geometry=g)
    both(_core.reflect_horizontal, [images], [old], geometry=g, scale_targets=0.5)
    both(_core.crop, [images], [(c, 5, 8, batch)], geometry=g, start_y=2, start_x=3, crop_y=5, crop_x=8)
    for ty, tx in ((5, 17), (12, 6)):
        both(_core.resize_bilinear, [images], [(c, ty, tx, batch)], geometry=g, tgt_size_y=ty, tgt_size_x=tx)
    both(_core.rgb_to_yuv, [images], [images.shape], geometry=g)
    taps = normal(rng, 5)
    for horizontal in (True, False):
        both(_core.gaussian_blur, [images, taps], [images.shape], geometry=g, horizontal=horizontal)
        both(_core.gaussian_blur, [images, taps], [old], geometry=g, horizontal=horizontal, scale_targets=1.0)
    nails = dict(start=1, stride=3, outputs_y=3, outputs_x=4)
    both(_core.bed_of_nails, [images], [(c, 3, 4, batch)], geometry=g, **nails)
    both(_core.bed_of_nails_undo, [normal(rng, c, 3, 4, batch)], [images.shape], geometry=g, **nails)
    both(_core.bed_of_nails_undo, [normal(rng, c, 3, 4, batch)], [old], geometry=g, scale_targets=0.5, **nails)


# ---------------------------------------------------------------- neurons

NEURONS = ["ident", "relu", "logistic", "tanh[1.7159,0.6666]", "abs", "square", "sqrt", "softrelu", "brelu[1.5]",
           "linear[2,-0.5]", "abstanh[1.5,0.7]"]


@pytest.mark.parametrize("neuron", NEURONS)
@pytest.mark.parametrize("batch", BATCHES)
def test_neurons(rng, neuron, batch):
    x = rng.uniform(0.1, 3.0, (4, 5, batch)) if neuron == "sqrt" else rng.uniform(-3, 3, (4, 5, batch))
    x = x.astype(np.float32)
    (acts,) = both(_core.neuron_act, [x], [x.shape], neuron=neuron)
    both(_core.neuron_act, [x], [normal(rng, *x.shape)], neuron=neuron, scale_targets=0.5)
    both(_core.neuron_grad, [normal(rng, *x.shape), x, acts], [x.shape], neuron=neuron)
