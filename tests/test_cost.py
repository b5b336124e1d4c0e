"""Softmax and cost routines against float64 NumPy references; every gradient against
finite differences of the log-probability objective (cuda-convnet's sign convention:
gradients are coeff times the gradient of the objective, i.e. of minus the cost)."""
import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, numeric_grad, run_op

SHAPES = [(10, 1), (10, 7), (3, 33), (1, 5), (17, 40)]  # (classes, cases)


def ref_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def random_case(rng, classes, cases):
    """Scores, their softmax (float32) and integer labels stored as floats."""
    x = rng.standard_normal((classes, cases)).astype(np.float32)
    probs = ref_softmax(x).astype(np.float32)
    labels = rng.integers(0, classes, cases).astype(np.float32)
    return x, probs, labels


def away_from_zero(rng, classes, cases):
    """Probabilities for gradients in probs (which need not be normalised): far enough from
    zero that finite differences of log(probs) are accurate."""
    return rng.uniform(0.2, 1.0, (classes, cases)).astype(np.float32)


def random_distributions(rng, classes, cases, total=1.0):
    d = rng.uniform(0.1, 1.0, (classes, cases))
    return (total * d / d.sum(axis=0)).astype(np.float32)


# ---------------------------------------------------------------- softmax

@pytest.mark.parametrize("classes,cases", SHAPES)
def test_softmax(device, rng, classes, cases):
    x = (3 * rng.standard_normal((classes, cases))).astype(np.float32)
    (out,) = run_op(_core.softmax, device, [x], [(classes, cases)])
    assert_close(out, ref_softmax(x))
    old = rng.standard_normal((classes, cases)).astype(np.float32)
    (out,) = run_op(_core.softmax, device, [x], [old.copy()], scale_targets=0.5, scale_output=2.0)
    assert_close(out, 0.5 * old + 2.0 * ref_softmax(x))


def test_softmax_large_scores_do_not_overflow(device):
    x = np.array([[1000.0, -1000.0], [999.0, -1001.0], [0.0, 50.0]], np.float32)
    (out,) = run_op(_core.softmax, device, [x], [x.shape])
    assert_close(out, ref_softmax(x))


@pytest.mark.parametrize("classes,cases", [(4, 1), (5, 7), (3, 33)])
def test_softmax_grad_matches_finite_differences(device, rng, classes, cases):
    x = rng.standard_normal((classes, cases)).astype(np.float32)
    g = rng.standard_normal((classes, cases)).astype(np.float32)
    expected = numeric_grad(lambda v: np.sum(g * ref_softmax(v)), x)
    acts = ref_softmax(x).astype(np.float32)
    (out,) = run_op(_core.softmax_grad, device, [g, acts], [x.shape])
    assert_close(out, expected, rtol=1e-3)
    old = rng.standard_normal(x.shape).astype(np.float32)
    (out,) = run_op(_core.softmax_grad, device, [g, acts], [old.copy()], scale_targets=1.0, scale_output=-1.0)
    assert_close(out, old - expected, rtol=1e-3)


# ---------------------------------------------------------------- logistic regression

def ref_logreg(labels, probs, top_k):
    """cost, top-1 errors, top-k errors; a class tied with the label counts against it."""
    probs = np.asarray(probs, np.float64)
    cases = probs.shape[1]
    cost = error = error_top_k = 0.0
    for n in range(cases):
        label = int(labels[n])
        p = probs[label, n]
        cost -= np.log(p)
        rivals = sum(1 for k in range(probs.shape[0]) if k != label and probs[k, n] >= p)
        error += rivals >= 1
        error_top_k += rivals >= top_k
    return cost, error, error_top_k


@pytest.mark.parametrize("classes,cases", SHAPES + [(10, 700)])
@pytest.mark.parametrize("top_k", [1, 3])
def test_logreg_cost(device, rng, classes, cases, top_k):
    _, probs, labels = random_case(rng, classes, cases)
    _, (cost, error, error_top_k) = run_op(_core.logreg_cost, device, [labels, probs], [], top_k=top_k)
    ref_cost, ref_error, ref_top_k = ref_logreg(labels, probs, top_k)
    assert_close(cost, ref_cost, what="cost")
    assert (error, error_top_k) == (ref_error, ref_top_k)


def test_logreg_cost_ties_count_against_the_label(device):
    # columns: label is the strict max | tied with one other at the max | 3rd of 4 | all equal
    probs = np.array([[0.7, 0.4, 0.1, 0.25],
                      [0.1, 0.4, 0.5, 0.25],
                      [0.1, 0.1, 0.2, 0.25],
                      [0.1, 0.1, 0.2, 0.25]], np.float32)
    labels = np.array([0, 1, 3, 2], np.float32)
    _, (_, error, top2) = run_op(_core.logreg_cost, device, [labels, probs], [], top_k=2)
    # rivals (classes >= the label's probability): 0, 1, 2, 3
    assert error == 3
    assert top2 == 2
    _, (_, _, top4) = run_op(_core.logreg_cost, device, [labels, probs], [], top_k=4)
    assert top4 == 0


LEAST_PROBABILITY = float(np.finfo(np.float32).tiny)  # FLT_MIN


def test_underflowed_probability_costs_minus_log_flt_min(device, rng):
    """A saturated softmax's 0 (or denormal) costs -log(FLT_MIN) per case, not Inf; a NaN stays NaN."""
    _, probs, labels = random_case(rng, 5, 6)
    probs[labels[:3].astype(int), np.arange(3)] = [0.0, 1e-42, 1e-30]  # zero, denormal, normal
    _, (cost, _, _) = run_op(_core.logreg_cost, device, [labels, probs], [], top_k=1)
    picked = probs[labels.astype(int), np.arange(6)].astype(np.float64)
    assert_close(cost, -np.log(np.maximum(picked, LEAST_PROBABILITY)).sum(), what="cost")
    assert np.isfinite(cost) and cost > 2 * 87.3
    targets = np.zeros((5, 6), np.float32)
    targets[labels.astype(int), np.arange(6)] = 1
    _, (xent, _) = run_op(_core.cross_ent_cost, device, [targets, probs], [])
    assert_close(xent, cost, what="cross-entropy cost")
    probs[int(labels[4]), 4] = np.nan
    _, (cost, _, _) = run_op(_core.logreg_cost, device, [labels, probs], [], top_k=1)
    assert np.isnan(cost)


@pytest.mark.parametrize("classes,cases", [(4, 1), (5, 7), (3, 33)])
def test_logreg_grad_matches_finite_differences(device, rng, classes, cases):
    _, _, labels = random_case(rng, classes, cases)
    probs = away_from_zero(rng, classes, cases)
    coeff = 0.7
    cols = np.arange(cases)
    objective = lambda p: coeff * np.sum(np.log(p[labels.astype(int), cols]))
    expected = numeric_grad(objective, probs, eps=1e-4)
    (out,) = run_op(_core.logreg_grad, device, [labels, probs], [probs.shape], coeff=coeff)
    assert_close(out, expected, rtol=1e-3)
    old = rng.standard_normal(probs.shape).astype(np.float32)
    (out,) = run_op(_core.logreg_grad, device, [labels, probs], [old.copy()], coeff=coeff, scale_targets=1.0,
                    scale_output=0.5)
    assert_close(out, old + 0.5 * expected, rtol=1e-3)


@pytest.mark.parametrize("classes,cases", [(4, 1), (5, 7), (3, 33)])
def test_softmax_logreg_grad_matches_finite_differences(device, rng, classes, cases):
    x, probs, labels = random_case(rng, classes, cases)
    coeff = 1.3
    cols = np.arange(cases)
    objective = lambda v: coeff * np.sum(np.log(ref_softmax(v)[labels.astype(int), cols]))
    expected = numeric_grad(objective, x)
    (out,) = run_op(_core.softmax_logreg_grad, device, [labels, probs], [x.shape], coeff=coeff)
    assert_close(out, expected, rtol=1e-3)
    old = rng.standard_normal(x.shape).astype(np.float32)
    (out,) = run_op(_core.softmax_logreg_grad, device, [labels, probs], [old.copy()], coeff=coeff,
                    scale_targets=0.5, scale_output=1.0)
    assert_close(out, 0.5 * old + expected, rtol=1e-3)


# ---------------------------------------------------------------- cross-entropy

@pytest.mark.parametrize("classes,cases", SHAPES + [(10, 700)])
def test_cross_ent_cost(device, rng, classes, cases):
    _, probs, _ = random_case(rng, classes, cases)
    labels = random_distributions(rng, classes, cases)
    if classes > 1:
        labels[:, ::3] = 0  # zero targets contribute nothing...
        labels[0, ::3] = 1
        probs[1, ::3] = 0  # ...even where the probability is zero
    _, (cost, error) = run_op(_core.cross_ent_cost, device, [labels, probs], [])
    l64, p64 = labels.astype(np.float64), probs.astype(np.float64)
    terms = np.where(l64 != 0, -l64 * np.log(np.where(l64 != 0, p64, 1.0)), 0.0)
    assert_close(cost, terms.sum(), what="cost")
    assert error == np.sum(np.argmax(p64, axis=0) != np.argmax(l64, axis=0))


@pytest.mark.parametrize("classes,cases", [(4, 1), (5, 7), (3, 33)])
def test_cross_ent_grad_matches_finite_differences(device, rng, classes, cases):
    probs = away_from_zero(rng, classes, cases)
    labels = random_distributions(rng, classes, cases)
    coeff = -0.4
    expected = numeric_grad(lambda p: coeff * np.sum(labels * np.log(p)), probs, eps=1e-4)
    (out,) = run_op(_core.cross_ent_grad, device, [labels, probs], [probs.shape], coeff=coeff)
    assert_close(out, expected, rtol=1e-3)
    old = rng.standard_normal(probs.shape).astype(np.float32)
    (out,) = run_op(_core.cross_ent_grad, device, [labels, probs], [old.copy()], coeff=coeff, scale_targets=1.0)
    assert_close(out, old + expected, rtol=1e-3)


@pytest.mark.parametrize("classes,cases", [(4, 1), (5, 7), (3, 33)])
@pytest.mark.parametrize("total", [1.0, 2.5])  # labels need not sum to one
def test_softmax_cross_ent_grad_matches_finite_differences(device, rng, classes, cases, total):
    x, probs, _ = random_case(rng, classes, cases)
    labels = random_distributions(rng, classes, cases, total)
    coeff = 0.9
    expected = numeric_grad(lambda v: coeff * np.sum(labels * np.log(ref_softmax(v))), x)
    (out,) = run_op(_core.softmax_cross_ent_grad, device, [labels, probs], [x.shape], coeff=coeff)
    assert_close(out, expected, rtol=1e-3)
    old = rng.standard_normal(x.shape).astype(np.float32)
    (out,) = run_op(_core.softmax_cross_ent_grad, device, [labels, probs], [old.copy()], coeff=coeff,
                    scale_targets=2.0, scale_output=-1.0)
    assert_close(out, 2.0 * old - expected, rtol=1e-3)


# ---------------------------------------------------------------- sum of squares

@pytest.mark.parametrize("shape", [(1,), (7, 33), (3, 5, 5, 7), (300001,)])
def test_sum_of_squares(device, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    _, result = run_op(_core.sum_of_squares, device, [x], [])
    assert_close(result, np.sum(x.astype(np.float64) ** 2), rtol=1e-6)


def test_costs_are_repeatable_across_thread_counts(rng):
    _, probs, labels = random_case(rng, 10, 3001)
    before = _core.num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            _core.set_num_threads(threads)
            results.append((_core.logreg_cost(labels, probs, top_k=5), _core.sum_of_squares(probs)))
    finally:
        _core.set_num_threads(before)
    assert results[0] == results[1] == results[2]


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("bad", [3.0, -1.0, 1.5, float("nan"), 1e9])
def test_bad_labels_raise_value_error(device, rng, bad):
    _, probs, labels = random_case(rng, 3, 5)
    labels[2] = bad
    targets = np.full(probs.shape, np.nan, np.float32)
    with pytest.raises(ValueError, match="labels"):
        run_op(_core.logreg_cost, device, [labels, probs], [])
    for fn in (_core.logreg_grad, _core.softmax_logreg_grad):
        with pytest.raises(ValueError, match="labels"):
            run_op(fn, device, [labels, probs], [targets])


def test_cost_argument_errors(rng):
    _, probs, labels = random_case(rng, 4, 6)
    out = np.empty_like(probs)
    with pytest.raises(ValueError, match="'labels'"):
        _core.logreg_cost(labels[:5].copy(), probs)
    with pytest.raises(ValueError, match="topK"):
        _core.logreg_cost(labels, probs, top_k=0)
    with pytest.raises(ValueError, match="top_k"):
        _core.logreg_cost(labels, probs, top_k=-2)
    with pytest.raises(ValueError, match="'targets'"):
        _core.logreg_grad(labels, probs, np.empty((6, 4), np.float32))
    with pytest.raises(ValueError, match="'targets'"):
        _core.softmax(probs, np.empty((4, 5), np.float32))
    with pytest.raises(ValueError, match="share memory"):
        _core.softmax(probs, probs)
    with pytest.raises(ValueError, match="'outGrads'"):
        _core.softmax_grad(np.ones((4, 5), np.float32), probs, out)
    with pytest.raises(ValueError, match="'labels'"):
        _core.cross_ent_cost(np.ones((3, 6), np.float32), probs)
    with pytest.raises(ValueError, match="'targets'"):
        _core.softmax_cross_ent_grad(probs, probs, np.empty((4, 7), np.float32))
    with pytest.raises(TypeError, match="'probs'"):
        _core.cross_ent_grad(probs, probs.astype(np.float64), out)
    with pytest.raises(TypeError, match="'inputs'"):
        _core.sum_of_squares("not an array")
    with pytest.raises(ValueError, match="'probs'"):
        _core.logreg_cost(np.empty(0, np.float32), np.empty((0, 0), np.float32))
