"""Dense routines (gemm, biases, element-wise ops, dropout, momentum update) against float64
NumPy references, gradients against finite differences, and argument checks."""
import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, from_device, numeric_grad, run_op, to_device


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- gemm

@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 5, 33), (33, 17, 1), (4, 64, 7), (65, 3, 9)])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm(device, rng, m, k, n, trans_a, trans_b):
    a = randn(rng, *((k, m) if trans_a else (m, k)))
    b = randn(rng, *((n, k) if trans_b else (k, n)))
    op_a = (a.T if trans_a else a).astype(np.float64)
    op_b = (b.T if trans_b else b).astype(np.float64)
    (c,) = run_op(_core.gemm, device, [a, b], [(m, n)], trans_a=trans_a, trans_b=trans_b)
    assert_close(c, op_a @ op_b)
    old = randn(rng, m, n)
    (c,) = run_op(_core.gemm, device, [a, b], [old.copy()], trans_a=trans_a, trans_b=trans_b,
                  scale_targets=0.75, scale_output=-1.5)
    assert_close(c, 0.75 * old - 1.5 * (op_a @ op_b))


def test_gemm_uses_matrix_views(device, rng):
    # activations (channels, rows, cols, numImages) are seen as (channels*rows*cols, numImages)
    w = randn(rng, 2 * 3 * 3, 5)
    x = randn(rng, 2, 3, 3, 7)
    (y,) = run_op(_core.gemm, device, [w, x], [(5, 7)], trans_a=True)
    assert_close(y, w.astype(np.float64).T @ x.reshape(18, 7))


@pytest.mark.parametrize("batch", [1, 7, 33])
def test_gemm_fc_gradients_match_finite_differences(device, rng, batch):
    # Fully-connected layer: y = W^T x with W (inputs, outputs), x (inputs, batch).
    # For the objective sum(r * y): dL/dx = W r, dL/dW = x r^T.
    inputs, outputs = 4, 3
    w = randn(rng, inputs, outputs)
    x = randn(rng, inputs, batch)
    r = randn(rng, outputs, batch)
    objective_x = lambda v: np.sum(r * (w.astype(np.float64).T @ v))
    objective_w = lambda v: np.sum(r * (v.T @ x.astype(np.float64)))
    (dx,) = run_op(_core.gemm, device, [w, r], [(inputs, batch)])
    (dw,) = run_op(_core.gemm, device, [x, r], [(inputs, outputs)], trans_b=True)
    assert_close(dx, numeric_grad(objective_x, x), rtol=1e-3)
    assert_close(dw, numeric_grad(objective_w, w), rtol=1e-3)


# ---------------------------------------------------------------- biases

@pytest.mark.parametrize("shape,rows", [((5, 7), 5), ((3, 4, 4, 33), 3), ((6, 2, 2, 1), 24), ((9, 1), 9)])
def test_add_bias(device, rng, shape, rows):
    bias = randn(rng, rows)
    cols = int(np.prod(shape)) // rows
    expected = np.broadcast_to(bias.astype(np.float64)[:, None], (rows, cols)).reshape(shape)
    (out,) = run_op(_core.add_bias, device, [bias], [shape])
    assert_close(out, expected)
    old = randn(rng, *shape)
    (out,) = run_op(_core.add_bias, device, [bias], [old.copy()], scale_targets=1.0, scale_output=0.5)
    assert_close(out, old + 0.5 * expected)


@pytest.mark.parametrize("shape,rows", [((5, 7), 5), ((3, 4, 4, 33), 3), ((6, 2, 2, 1), 24), ((2, 3000), 2)])
def test_bias_grad(device, rng, shape, rows):
    grads = randn(rng, *shape)
    expected = grads.astype(np.float64).reshape(rows, -1).sum(axis=1)
    (out,) = run_op(_core.bias_grad, device, [grads], [(rows,)])
    assert_close(out, expected)
    old = randn(rng, rows)
    (out,) = run_op(_core.bias_grad, device, [grads], [old.copy()], scale_targets=0.5, scale_output=2.0)
    assert_close(out, 0.5 * old + 2.0 * expected)


def test_bias_grad_matches_finite_differences(device, rng):
    # bias_grad is the gradient of sum(g * add_bias(bias)) with respect to bias.
    rows, shape = 3, (3, 2, 5)
    g = randn(rng, *shape)
    bias = randn(rng, rows)
    expected = numeric_grad(lambda b: np.sum(g * np.broadcast_to(b[:, None], (rows, 10)).reshape(shape)), bias)
    (out,) = run_op(_core.bias_grad, device, [g], [(rows,)])
    assert_close(out, expected, rtol=1e-3)


def test_bias_grad_is_repeatable_across_thread_counts(rng):
    grads = randn(rng, 7, 50001)
    before = _core.num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            _core.set_num_threads(threads)
            out = np.full(7, np.nan, np.float32)
            _core.bias_grad(grads, out)
            results.append(out)
    finally:
        _core.set_num_threads(before)
    assert all(np.array_equal(results[0], r) for r in results)


# ---------------------------------------------------------------- element-wise

@pytest.mark.parametrize("shape", [(1,), (7, 33), (3, 5, 5, 7)])
def test_elementwise(device, rng, shape):
    a, b = randn(rng, *shape), randn(rng, *shape)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    old = randn(rng, *shape)
    (out,) = run_op(_core.add, device, [a], [shape], scale_output=-2.0)
    assert_close(out, -2.0 * a64)
    (out,) = run_op(_core.add, device, [a], [old.copy()], scale_targets=1.0, scale_output=0.5)
    assert_close(out, old + 0.5 * a64)
    (out,) = run_op(_core.mult, device, [a, b], [shape])
    assert_close(out, a64 * b64)
    (out,) = run_op(_core.mult, device, [a, b], [old.copy()], scale_targets=-1.0, scale_output=3.0)
    assert_close(out, -old + 3.0 * a64 * b64)
    (out,) = run_op(_core.eltwise_max, device, [a, b], [shape])
    assert_close(out, np.maximum(a64, b64))
    (out,) = run_op(_core.eltwise_max, device, [a, b], [old.copy()], scale_targets=0.5, scale_output=2.0)
    assert_close(out, 0.5 * old + 2.0 * np.maximum(a64, b64))


def test_elementwise_in_place(rng):
    a = randn(rng, 5, 7)
    t = a.copy()
    _core.add(t, t, scale_targets=1.0, scale_output=1.0)
    assert_close(t, 2.0 * a.astype(np.float64))


def test_eltwise_max_grad_matches_finite_differences(device, rng):
    shape = (3, 4, 5)
    a, b = randn(rng, *shape), randn(rng, *shape)
    b[np.abs(a - b) < 0.05] += 0.2  # keep away from the kink a == b
    g = randn(rng, *shape)
    acts = np.maximum(a, b)
    for inputs, other in ((a, b), (b, a)):
        expected = numeric_grad(lambda v: np.sum(g * np.maximum(v, other)), inputs, eps=1e-3)
        (out,) = run_op(_core.eltwise_max_grad, device, [g, inputs, acts], [shape])
        assert_close(out, expected, rtol=1e-3)
    old = randn(rng, *shape)
    (out,) = run_op(_core.eltwise_max_grad, device, [g, a, acts], [old.copy()], scale_targets=1.0, scale_output=2.0)
    assert_close(out, old + 2.0 * np.where(a == acts, g, 0.0))


# ---------------------------------------------------------------- dropout

def dropout(device, shape, keep, seed, offset):
    (mask,) = run_op(_core.dropout_mask, device, [], [shape], keep=keep, seed=seed, offset=offset)
    return mask


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.1])
def test_dropout_mask_values_and_rate(device, keep):
    mask = dropout(device, (100, 201), keep, seed=1234, offset=0)
    assert set(np.unique(mask)) <= {np.float32(0.0), np.float32(1.0 / keep)}
    kept = np.mean(mask != 0)
    sigma = np.sqrt(keep * (1 - keep) / mask.size)
    assert abs(kept - keep) < 5 * sigma


def test_dropout_mask_is_a_function_of_seed_and_offset(device):
    shape = (33, 7)
    first = dropout(device, shape, 0.5, seed=7, offset=100)
    assert np.array_equal(first, dropout(device, shape, 0.5, seed=7, offset=100))
    assert not np.array_equal(first, dropout(device, shape, 0.5, seed=7, offset=100 + first.size))
    assert not np.array_equal(first, dropout(device, shape, 0.5, seed=8, offset=100))
    # element i draws number offset + i of the stream: shifting the offset shifts the mask
    longer = dropout(device, (first.size + 5,), 0.5, seed=7, offset=97)
    assert np.array_equal(first.reshape(-1), longer[3:3 + first.size])


def test_dropout_mask_row_stride_takes_a_slice_of_the_cases(device):
    """With row_stride = the whole minibatch's cases, a slice of the cases draws exactly the
    numbers the whole mask draws for them (replicas and processes split minibatches so)."""
    whole = dropout(device, (9, 40), 0.5, seed=3, offset=1000)
    (part,) = run_op(lambda m: _core.dropout_mask(m, 0.5, 3, 1000 + 12, 40), device, [], [(9, 10)])
    np.testing.assert_array_equal(part, whole[:, 12:22])


def test_dropout_keep_one_keeps_everything(device):
    assert np.all(dropout(device, (5, 9), 1.0, seed=3, offset=0) == 1.0)


# ---------------------------------------------------------------- momentum update

def test_momentum_update(device, rng):
    shape = (7, 33)
    w, g, inc = randn(rng, *shape), randn(rng, *shape), randn(rng, *shape)
    eps_over_cases, mom, wc_eps = 0.01, 0.9, 0.0005
    expected_inc = mom * inc.astype(np.float64) + eps_over_cases * g - wc_eps * w.astype(np.float64)
    expected_w = w + expected_inc
    dw, dg, dinc = to_device(w, device), to_device(g, device), to_device(inc, device)
    _core.momentum_update(dw, dg, dinc, eps_over_cases=eps_over_cases, mom=mom, wc_eps=wc_eps)
    assert_close(from_device(dinc), expected_inc)
    assert_close(from_device(dw), expected_w)


# ---------------------------------------------------------------- data path: column slices, non-finite flags

@pytest.mark.parametrize("rows, cols, start, n, target_cols, target_start",
                         [(1, 7, 0, 7, 7, 0), (13, 40, 5, 11, 20, 9), (784, 300, 256, 44, 44, 0)])
@pytest.mark.parametrize("scale_targets", [0.0, 1.0, 0.5])
def test_copy_columns(device, rng, rows, cols, start, n, target_cols, target_start, scale_targets):
    src, initial = randn(rng, rows, cols), randn(rng, rows, target_cols)
    expected = initial.astype(np.float64)
    expected[:, target_start:target_start + n] *= scale_targets
    expected[:, target_start:target_start + n] += src[:, start:start + n]
    (out,) = run_op(lambda s, t: _core.copy_columns(s, start, t, target_start, n, scale_targets), device, [src],
                    [initial])
    assert_close(out, expected)


def test_copy_columns_errors(rng):
    src = randn(rng, 3, 10)
    with pytest.raises(ValueError, match="within the 10 columns of src"):
        _core.copy_columns(src, 8, np.empty((3, 4), np.float32), 0, 4)
    with pytest.raises(ValueError, match="within the 4 columns of targets"):
        _core.copy_columns(src, 0, np.empty((3, 4), np.float32), 2, 3)
    with pytest.raises(ValueError, match="'targets'"):
        _core.copy_columns(src, 0, np.empty((4, 2), np.float32), 0, 2)


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_flag_non_finite(device, rng, bad):
    t = randn(rng, 37, 129) * 1e30  # large but finite values must not be flagged
    position = int(rng.integers(t.size))
    if bad is not None:
        t.flat[position] = bad
    flags = np.array([0.0, 0.0, 1.0], np.float32)
    (out,) = run_op(lambda x, f: _core.flag_non_finite(x, f, 1), device, [t], [flags])
    np.testing.assert_array_equal(out, [0.0, 0.0 if bad is None else 1.0, 1.0])  # others left as they were


# ---------------------------------------------------------------- argument checks

def test_dense_argument_errors(rng):
    a, b = randn(rng, 3, 4), randn(rng, 4, 5)
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.gemm(a, b, np.empty((3, 5), np.float32), trans_b=True)
    with pytest.raises(ValueError, match="'c'"):
        _core.gemm(a, b, np.empty((5, 3), np.float32))
    with pytest.raises(TypeError, match="'a'"):
        _core.gemm(a.astype(np.float64), b, np.empty((3, 5), np.float32))
    with pytest.raises(TypeError, match="'b'"):
        _core.gemm(a, [[1.0]], np.empty((3, 5), np.float32))
    square = randn(rng, 4, 4)
    with pytest.raises(ValueError, match="share memory"):
        _core.gemm(square, square, square)
    with pytest.raises(ValueError, match="'c'"):
        _core.gemm(a, b, np.empty((3, 5), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="'targets'"):
        _core.add_bias(randn(rng, 3), np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match="'grads'"):
        _core.bias_grad(randn(rng, 4, 5), np.empty(3, np.float32))
    with pytest.raises(ValueError, match="'b'"):
        _core.mult(a, randn(rng, 3, 5), np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="'targets'"):
        _core.eltwise_max(a, a, np.empty((4, 4), np.float32))
    with pytest.raises(ValueError, match="'acts'"):
        _core.eltwise_max_grad(a, a, randn(rng, 2), np.empty((3, 4), np.float32))
    for keep in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="'keep'"):
            _core.dropout_mask(np.empty(10, np.float32), keep, 1, 0)
    with pytest.raises(TypeError):
        _core.dropout_mask(np.empty(10, np.float32), 0.5, -1, 0)
    w = randn(rng, 3, 4)
    with pytest.raises(ValueError, match="'inc'"):
        _core.momentum_update(w, w.copy(), np.empty(5, np.float32), 0.1, 0.9, 0.0)
    with pytest.raises(ValueError, match="'inc'"):
        _core.momentum_update(w, w.copy(), w, 0.1, 0.9, 0.0)
    readonly = randn(rng, 3, 4)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="'targets'"):
        _core.add(a, readonly)
