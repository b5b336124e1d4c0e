"""The whole layer graph on each device: a small net with every common layer type trains
the same on the device under test as on the CPU, and split across two logical devices of
that kind as on one."""
import numpy as np
import pytest

from ccn import _core, config

NET = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv1]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
padding=1
initW=0.1
neuron=relu
[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
[rnorm1]
type=cmrnorm
inputs=pool1
size=5
[local2]
type=local
inputs=rnorm1
filters=4
filterSize=3
padding=1
stride=2
initW=0.05
neuron=tanh[1,1]
[fc1]
type=fc
inputs=local2,rnorm1
outputs=20
initW=0.05
neuron=relu
[drop1]
type=dropout
inputs=fc1
[fc10]
type=fc
inputs=drop1
outputs=10
initW=0.05
[probs]
type=softmax
inputs=fc10
[logprob]
type=cost.logreg
inputs=labels,probs
"""

PARAMS = "".join(f"[{name}]\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.0005\n"
                 for name in ("conv1", "local2", "fc1", "fc10")) + "[rnorm1]\nscale=0.001\npow=0.75\n"


def _write(tmp_path, split=False):
    net_text = NET.replace("[fc10]\ntype=fc", "[fc10]\ntype=fc\ngpu=1") if split else NET
    if split:
        net_text = net_text.replace("[logprob]\ntype=cost.logreg", "[logprob]\ntype=cost.logreg\ngpu=1")
    (tmp_path / "net.cfg").write_text(net_text)
    (tmp_path / "params.cfg").write_text(PARAMS)
    return str(tmp_path / "net.cfg"), str(tmp_path / "params.cfg")


def build(tmp_path, devices, split):
    layers = config.load_layers(*_write(tmp_path, split), {0: (3, 11, 9), 1: 1})
    net = _core.Net(layers, devices, 5)
    config.set_learning_params(net, layers, 0.0)
    return net


def train(net, steps=3, batch=7):
    rng = np.random.default_rng(1)
    costs = []
    for _ in range(steps):
        x = rng.standard_normal((3 * 11 * 9, batch)).astype(np.float32)
        y = rng.integers(0, 10, (1, batch)).astype(np.float32)
        costs.append(net.train_step([x, y])["logprob"][0])
    return costs, {name: net.get_params(name) for name in net.weight_layer_names()}


def assert_same_training(a, b, rtol):
    costs_a, params_a = a
    costs_b, params_b = b
    np.testing.assert_allclose(costs_a, costs_b, rtol=rtol)
    for name in params_a:
        for wa, wb in zip(params_a[name]["weights"], params_b[name]["weights"]):
            np.testing.assert_allclose(wa, wb, rtol=rtol, atol=rtol * np.abs(wa).max(), err_msg=name)
        np.testing.assert_allclose(params_a[name]["biases"], params_b[name]["biases"], rtol=rtol,
                                   atol=rtol * max(np.abs(params_a[name]["biases"]).max(), 1e-3), err_msg=name)


def as_net_device(device):
    return "cpu" if device == "cpu" else device.split(":")[1]


def test_device_trains_like_cpu(tmp_path, device):
    reference = train(build(tmp_path, ["cpu"], split=False))
    assert_same_training(train(build(tmp_path, [as_net_device(device)], split=False)), reference, rtol=1e-4)


def test_two_logical_devices_train_like_one(tmp_path, device):
    d = as_net_device(device)
    one = train(build(tmp_path, [d], split=False))
    assert_same_training(train(build(tmp_path, [d, d], split=True)), one, rtol=1e-4)


def test_one_seed_gives_the_same_initial_weights_on_every_device(tmp_path, device):
    """Initial weights are drawn once, on the host, from the seed's Philox stream: bit for bit
    the same on the CPU, on a CUDA device and split over two logical devices."""
    d = as_net_device(device)
    nets = [build(tmp_path, ["cpu"], split=False), build(tmp_path, [d], split=False),
            build(tmp_path, [d, d], split=True)]
    for name in nets[0].weight_layer_names():
        first = nets[0].get_params(name)
        for other in nets[1:]:
            params = other.get_params(name)
            for wa, wb in zip(first["weights"], params["weights"]):
                np.testing.assert_array_equal(wa, wb, err_msg=name)
            np.testing.assert_array_equal(first["biases"], params["biases"], err_msg=name)


def test_initial_weights_follow_initw_and_the_seed(tmp_path):
    """Each matrix is initW * N(0, 1), biases initB; another seed draws other weights."""
    layers = config.load_layers(*_write(tmp_path), {0: (3, 11, 9), 1: 1})
    init_w = {layer["name"]: layer["initW"] for layer in layers if "initW" in layer}
    a, b = _core.Net(layers, ["cpu"], 5), _core.Net(layers, ["cpu"], 6)
    for name, scales in init_w.items():
        scale = scales[0] if isinstance(scales, list) else scales
        w = a.get_params(name)["weights"][0]
        assert abs(w.mean()) < 4 * scale / np.sqrt(w.size)
        assert abs(w.std() / scale - 1) < 4 / np.sqrt(w.size) + 0.02, name
        assert (a.get_params(name)["biases"] == 0).all()
        assert not np.array_equal(w, b.get_params(name)["weights"][0])


def test_staged_batches_sliced_on_the_device_train_like_host_minibatches(tmp_path, device):
    """stage_batch copies a whole batch to the device once and train_slice takes minibatches
    of it there; the next batch is staged while the current one trains (double buffer).
    The weights after two batches equal those of train_step on host-sliced minibatches."""
    d = as_net_device(device)
    rng = np.random.default_rng(3)
    batches = [(rng.standard_normal((3 * 11 * 9, 20)).astype(np.float32),
                rng.integers(0, 10, (1, 20)).astype(np.float32)) for _ in range(2)]
    reference = build(tmp_path, [d], split=False)
    for x, y in batches:
        for s in range(0, 20, 8):
            reference.train_step([np.ascontiguousarray(x[:, s:s + 8]), np.ascontiguousarray(y[:, s:s + 8])])
    staged = build(tmp_path, [d], split=False)
    staged.stage_batch(list(batches[0]))
    test_x = rng.standard_normal((3 * 11 * 9, 6)).astype(np.float32)
    for i in range(2):
        assert staged.begin_batch() == 20
        if i == 0:
            staged.stage_batch(list(batches[1]))  # the back buffer, while batch 0 trains
        for s in range(0, 20, 8):
            staged.train_slice(s, min(s + 8, 20))
        # a test batch on channel 1 leaves the training channel's staged batch alone
        staged.stage_batch([test_x, np.zeros((1, 6), np.float32)], 1)
        assert staged.begin_batch(1) == 6
        staged.fprop_slice(2, 5, False)
        assert staged.get_acts("conv1").shape[-1] == 3
    for name in reference.weight_layer_names():
        for wa, wb in zip(reference.get_params(name)["weights"], staged.get_params(name)["weights"]):
            np.testing.assert_array_equal(wa, wb, err_msg=name)


def test_staged_batch_errors(tmp_path):
    net = build(tmp_path, ["cpu"], split=False)
    with pytest.raises(ValueError, match="no data batch is staged"):
        net.begin_batch()
    with pytest.raises(ValueError, match="no data batch is loaded"):
        net.train_slice(0, 4)
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"data\[0\] must have shape \(297, numCases\)"):
        net.stage_batch([x, np.zeros((1, 4), np.float32)])
    x = np.ones((297, 6), np.float32)
    with pytest.raises(ValueError, match=r"data\[1\] has 4 cases"):
        net.stage_batch([x, np.zeros((1, 4), np.float32)])
    net.stage_batch([x, np.zeros((1, 6), np.float32)])
    net.begin_batch()
    with pytest.raises(ValueError, match=r"cases \[4, 9\) are not a range within the current batch's 6"):
        net.train_slice(4, 9)


def _step(net, rng):
    x = rng.standard_normal((3 * 11 * 9, 7)).astype(np.float32)
    net.train_step([x, rng.integers(0, 10, (1, 7)).astype(np.float32)])


def test_non_finite_names_the_update_that_overflowed(tmp_path, device):
    """A huge weight decay on fc10 alone: its update overflows; the check after that step
    names fc10's weights, not the first layer of the net."""
    net = build(tmp_path, [as_net_device(device)], split=False)
    _step(net, np.random.default_rng(0))
    assert net.check_finite() is None
    net.set_learning_params("fc10", [10.0], 0.02, [0.9], 0.9, [1e38])  # wc * eps overflows
    _step(net, np.random.default_rng(1))
    assert net.check_finite() == "the weights of layer 'fc10'"


def test_non_finite_names_the_layer_whose_gradient_overflowed(tmp_path, device):
    """A cost coefficient of 3e38: the forward pass is finite, fc10's weight gradient (a sum
    over the cases) overflows; named as fc10's gradient, not as the weights it spoils."""
    net = build(tmp_path, [as_net_device(device)], split=False)
    net.set_layer_param("logprob", "coeff", 3e38)
    _step(net, np.random.default_rng(0))
    assert net.check_finite() == "the gradients computed by layer 'fc10'"


def test_non_finite_names_the_first_activations(tmp_path, device):
    net = build(tmp_path, [as_net_device(device)], split=False)
    w = net.get_params("local2")["weights"][0]
    w[:, 2] = np.inf  # every module of filter 2
    net.set_params("local2", {"weights": [w]})
    x = np.random.default_rng(0).standard_normal((297, 5)).astype(np.float32)
    net.fprop([x, np.zeros((1, 5), np.float32)], False)
    assert net.check_finite() == "the activations of layer 'local2'"


# The originals' forms: two towers crossing at a two-input conv, sparse connectivity, the
# 2012 release's image layers, dropout2 / hs / pass, cuda-convnet2's sum pooling.
TOWERS = """
[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[blur]
type=blur
inputs=data
channels=3
filterSize=3
stdev=1.0

[href]
type=href
inputs=blur
channels=3

[conv1a]
type=conv
inputs=href
channels=3
filters=8
filterSize=3
padding=1
initW=0.1
neuron=relu

[conv1b]
type=conv
inputs=data
channels=3
filters=8
filterSize=3
padding=1
initW=0.1
neuron=tanh[1,1]
gpu=1

[conv2a]
type=conv
inputs=conv1a,conv1b
channels=8,8
filters=8,4
groups=1,2
randSparse=0,1
filterChannels=8,4
filterSize=3,3
padding=1,1
initW=0.05,0.05

[conv2b]
type=conv
inputs=conv1b,conv1a
channels=8,8
filters=8,8
filterSize=3,3
padding=1,1
initW=0.05,0.05
gpu=1

[nails]
type=nailbed
inputs=conv2b
channels=8
stride=2

[poolsum]
type=pool
pool=avg
sum=1
inputs=conv2a
sizeX=3
stride=2

[drop2]
type=dropout2
inputs=poolsum
keep=0.7

[hs]
type=hs
inputs=nails
keep=0.8

[pass]
type=pass
inputs=drop2,hs
gpu=0

[fc10]
type=fc
inputs=pass,hs
outputs=10
initW=0.05

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
"""
TOWER_PARAMS = "".join(f"[{name}]\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.0005\n"
                       for name in ("conv1a", "conv1b", "conv2a", "conv2b", "fc10")) + "[hs]\nenable=1\n"


def build_towers(tmp_path, devices, split):
    (tmp_path / "towers.cfg").write_text(TOWERS)
    (tmp_path / "towers-params.cfg").write_text(TOWER_PARAMS)
    layers = config.load_layers(str(tmp_path / "towers.cfg"), str(tmp_path / "towers-params.cfg"),
                                {0: (3, 12, 12), 1: 1})
    if not split:
        layers = [dict(layer, gpu=0) for layer in layers]
    net = _core.Net(layers, devices, 5)
    config.set_learning_params(net, layers, 0.0)
    return net


def train_towers(net, steps=3, batch=7):
    rng = np.random.default_rng(2)
    costs = []
    for _ in range(steps):
        x = rng.standard_normal((3 * 12 * 12, batch)).astype(np.float32)
        y = rng.integers(0, 10, (1, batch)).astype(np.float32)
        costs.append(net.train_step([x, y])["logprob"][0])
    return costs, {name: net.get_params(name) for name in net.weight_layer_names()}


def test_originals_forms_train_like_cpu_and_split_like_one(tmp_path, device):
    d = as_net_device(device)
    reference = train_towers(build_towers(tmp_path, ["cpu"], split=False))
    assert_same_training(train_towers(build_towers(tmp_path, [d], split=False)), reference, rtol=1e-4)
    assert_same_training(train_towers(build_towers(tmp_path, [d, d], split=True)), reference, rtol=1e-4)


ELEMENT_COSTS = """
[data]
type=data
dataIdx=0

[targets]
type=data
dataIdx=1

[fc]
type=fc
inputs=data
outputs=6
initW=0.3
neuron=logistic

[xent]
type=cost.crossent2
inputs=targets,fc

[robust]
type=cost.rflickr
inputs=targets,fc
coeff=0.5
"""


@pytest.mark.parametrize("steps", [3])
def test_element_costs_train_like_cpu(tmp_path, device, steps):
    (tmp_path / "c.cfg").write_text(ELEMENT_COSTS)
    (tmp_path / "c-params.cfg").write_text("[fc]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\n")
    layers = config.load_layers(str(tmp_path / "c.cfg"), str(tmp_path / "c-params.cfg"), {0: 9, 1: 6})
    results = []
    for d in ("cpu", as_net_device(device)):
        net = _core.Net(layers, [d], 5)
        config.set_learning_params(net, layers, 0.0)
        rng = np.random.default_rng(3)
        costs = []
        for _ in range(steps):
            x = rng.standard_normal((9, 7)).astype(np.float32)
            t = (rng.random((6, 7)) < 0.5).astype(np.float32)
            out = net.train_step([x, t])
            costs.append([out["xent"][0], out["robust"][0]])
        results.append((costs, net.get_params("fc")["weights"][0]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)
