"""Neurons: forward against float64 NumPy, backward against finite differences."""
import numpy as np
import pytest

from ccn import _core
from oprunner import assert_close, numeric_grad, run_op

# name -> (float64 reference f, input sampler)
NEURONS = {
    "ident": (lambda x: x, None),
    "relu": (lambda x: np.maximum(x, 0), None),
    "logistic": (lambda x: 1 / (1 + np.exp(-x)), None),
    "tanh[1.7159,0.6666]": (lambda x: 1.7159 * np.tanh(0.6666 * x), None),
    "abs": (np.abs, None),
    "square": (np.square, None),
    "sqrt": (np.sqrt, lambda rng, shape: rng.uniform(0.5, 3.0, shape)),
    "softrelu": (lambda x: np.log1p(np.exp(x)), None),
    "brelu[1.5]": (lambda x: np.clip(x, 0, 1.5), None),
    "linear[2,-0.5]": (lambda x: 2 * x - 0.5, None),
    "abstanh[1.5,0.7]": (lambda x: 1.5 * np.abs(np.tanh(0.7 * x)), None),
}


def sample(rng, name, shape):
    sampler = NEURONS[name][1]
    if sampler:
        return sampler(rng, shape).astype(np.float32)
    # keep away from the kinks of relu/abs/brelu so finite differences are meaningful
    x = rng.uniform(-3, 3, shape)
    x[np.abs(x) < 0.05] += 0.2
    x[np.abs(x - 1.5) < 0.05] += 0.2
    return x.astype(np.float32)


@pytest.mark.parametrize("name", sorted(NEURONS))
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (1, 33)])
def test_neuron_act(device, rng, name, shape):
    f = NEURONS[name][0]
    x = sample(rng, name, shape)
    (out,) = run_op(_core.neuron_act, device, [x], [shape], neuron=name)
    assert_close(out, f(x.astype(np.float64)))
    # scale_targets != 0 accumulates into the old target
    old = rng.standard_normal(shape).astype(np.float32)
    (out,) = run_op(_core.neuron_act, device, [x], [old.copy()], neuron=name, scale_targets=0.5, scale_output=2.0)
    assert_close(out, 0.5 * old + 2.0 * f(x.astype(np.float64)))


@pytest.mark.parametrize("name", sorted(NEURONS))
def test_neuron_grad_matches_finite_differences(device, rng, name):
    f = NEURONS[name][0]
    shape = (2, 3, 5)
    x = sample(rng, name, shape)
    w = rng.standard_normal(shape)  # a random linear objective sum(w * f(x))
    expected = numeric_grad(lambda v: np.sum(w * f(v)), x, eps=1e-4)
    y = f(x.astype(np.float64)).astype(np.float32)
    (out,) = run_op(_core.neuron_grad, device, [w.astype(np.float32), x, y], [shape], neuron=name)
    assert_close(out, expected, rtol=1e-3)


def test_neuron_names_are_checked():
    x = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match="unknown neuron"):
        _core.neuron_act(x, x.copy(), "swish")
    with pytest.raises(ValueError, match="parameter"):
        _core.neuron_act(x, x.copy(), "tanh[1,2,3]")
