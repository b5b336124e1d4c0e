"""Data parallelism inside one process (dropout included: random numbers are drawn per case
of the whole minibatch): a layer's replicas (its dict's "replicas": logical
devices) each take an equal slice of every minibatch; weight gradients are summed over the
replicas before one update. Nets split that way train like the same net on one device, to
fp32 rounding, whether the replicated layers feed single-device layers (gathered), single
layers feed replicas (scattered), or replicas feed model-parallel layers on each device."""
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
filters=8
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
[conv2]
type=conv
inputs=pool1
filters=8
filterSize=3
padding=1
initW=0.1
neuron=relu
[fca]
type=fc
inputs=conv2
outputs=6
initW=0.05
neuron=relu
[fcb]
type=fc
inputs=conv2
outputs=6
initW=0.05
neuron=relu
[drop]
type=dropout
inputs=fcb
[fc10]
type=fc
inputs=fca,drop
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
                 for name in ("conv1", "conv2", "fca", "fcb", "fc10"))
DIMS = {0: (3, 9, 9), 1: 1}

# name -> replicas (logical devices), or a single device
LAYOUTS = {
    # cuda-convnet2's "data" nets: every layer replicated, the costs too
    "all-data": {name: [0, 1, 2, 3] for name in ("conv1", "conv1_neuron", "pool1", "conv2", "conv2_neuron",
                                                  "fca", "fca_neuron", "fcb", "fcb_neuron", "drop", "fc10", "probs",
                                                  "logprob")},
    # replicated convolutions gathered into single-device fc layers (the one weird trick)
    "data-model": dict({name: [0, 1, 2, 3] for name in ("conv1", "conv1_neuron", "pool1", "conv2",
                                                          "conv2_neuron")},
                       fca=[0], fca_neuron=[0], fcb=[1], fcb_neuron=[1], drop=[1], fc10=[2], probs=[2], logprob=[2]),
    # two replicas feeding four, and back to one
    "mixed": dict(conv1=[0, 1], conv1_neuron=[0, 1], pool1=[2, 3, 0, 1], conv2=[1, 2, 3, 0],
                  conv2_neuron=[1, 2, 3, 0], fca=[3, 1], fca_neuron=[3, 1], fcb=[1], fcb_neuron=[1],
                  drop=[0, 2, 1, 3]),
}


def load(tmp_path, layout=None):
    (tmp_path / "net.cfg").write_text(NET)
    (tmp_path / "params.cfg").write_text(PARAMS)
    layers = config.load_layers(str(tmp_path / "net.cfg"), str(tmp_path / "params.cfg"), DIMS)
    for layer in layers:
        devices = (layout or {}).get(layer["name"])
        if devices is None:
            continue
        layer["gpu"] = devices[0]
        if len(devices) > 1:
            layer["replicas"] = devices
    return layers


def build(layers, devices):
    net = _core.Net(layers, devices, 7)
    config.set_learning_params(net, layers, 0.0)
    return net


def train(net, steps=3, batch=128):
    rng = np.random.default_rng(11)
    costs = []
    for _ in range(steps):
        x = rng.standard_normal((3 * 9 * 9, batch)).astype(np.float32)
        y = rng.integers(0, 10, (1, batch)).astype(np.float32)
        costs.append(net.train_step([x, y])["logprob"])
    return np.array(costs), {name: net.get_params(name) for name in net.weight_layer_names()}


def device_list(device, count=4):
    return ["cpu" if device == "cpu" else device.split(":")[1]] * count


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_replicas_train_like_one_device(tmp_path, device, layout):
    """4 replicas x 32 cases == one device x 128 cases after 3 steps (fp32 rounding)."""
    one_costs, one_params = train(build(load(tmp_path), device_list(device, 1)))
    costs, params = train(build(load(tmp_path, LAYOUTS[layout]), device_list(device)))
    np.testing.assert_allclose(costs[:, 0], one_costs[:, 0], rtol=1e-5)
    np.testing.assert_array_equal(costs[:, 1:], one_costs[:, 1:])  # errors are counts
    for name, p in one_params.items():
        for wa, wb in zip(p["weights"], params[name]["weights"]):
            np.testing.assert_allclose(wb, wa, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(params[name]["biases"], p["biases"], rtol=1e-4, atol=1e-6, err_msg=name)


def test_replicated_activations_and_gradients_are_whole(tmp_path):
    """get_acts gathers every replica's cases; get_grads is the sum over all replicas."""
    one = build(load(tmp_path), ["cpu"])
    four = build(load(tmp_path, LAYOUTS["all-data"]), ["cpu"] * 4)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3 * 9 * 9, 12)).astype(np.float32)
    y = rng.integers(0, 10, (1, 12)).astype(np.float32)
    for net in (one, four):
        net.fprop([x, y], True)
        net.bprop()
    np.testing.assert_allclose(four.get_acts("conv2"), one.get_acts("conv2"), rtol=1e-5, atol=1e-6)
    for name in ("conv1", "fc10"):
        np.testing.assert_allclose(four.get_grads(name)["weights"][0], one.get_grads(name)["weights"][0],
                                   rtol=1e-4, atol=1e-5)
    assert four.layer_names() == one.layer_names()


def test_replicas_start_from_the_same_weights(tmp_path):
    four = build(load(tmp_path, LAYOUTS["all-data"]), ["cpu"] * 4)
    one = build(load(tmp_path), ["cpu"])
    for name in one.weight_layer_names():
        np.testing.assert_array_equal(four.get_params(name)["weights"][0], one.get_params(name)["weights"][0])


def test_replica_errors(tmp_path):
    net = build(load(tmp_path, LAYOUTS["all-data"]), ["cpu"] * 4)
    x = np.ones((243, 6), np.float32)
    with pytest.raises(ValueError, match="layer 'conv1' has 4 data-parallel replicas: a minibatch of 6 cases"):
        net.fprop([x, np.zeros((1, 6), np.float32)], False)
    with pytest.raises(ValueError, match="'replicas'.*out of range"):
        _core.Net(load(tmp_path, LAYOUTS["all-data"]), ["cpu"] * 3, 0)
    layers = load(tmp_path, {"conv1": [1, 1]})
    with pytest.raises(ValueError, match="twice"):
        _core.Net(layers, ["cpu"] * 2, 0)


@pytest.mark.parametrize("layout", [None, "all-data", "data-model"])
def test_gradients_can_be_taken_layer_by_layer_during_bprop(tmp_path, device, layout):
    """start_bprop / wait_gradients / finish_bprop: each layer's weight gradients, read as
    soon as wait_gradients returns (the backward pass still running below it), are the
    final ones (replicas' sums included)."""
    layers = load(tmp_path, LAYOUTS.get(layout))
    devices = device_list(device, 4 if layout else 1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3 * 9 * 9, 16)).astype(np.float32)
    y = rng.integers(0, 10, (1, 16)).astype(np.float32)
    whole, watched = build(layers, devices), build(layers, devices)
    whole.fprop([x, y], True)
    whole.bprop()
    watched.fprop([x, y], True)
    watched.start_bprop()
    early = {}
    for name in reversed(watched.weight_layer_names()):
        watched.wait_gradients(name)
        early[name] = watched.get_grads(name)
    watched.finish_bprop()
    for name, grads in early.items():
        final = whole.get_grads(name)
        for a, b in zip(grads["weights"], final["weights"]):
            np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_array_equal(grads["biases"], final["biases"], err_msg=name)
    with pytest.raises(ValueError, match="needs a bprop started"):
        watched.wait_gradients("fc10")


def test_layers_inherit_their_first_inputs_replicas(tmp_path):
    """cuda-convnet2's rule: a layer without gpu= runs where its first input runs, replicas
    included; gpu= on a layer makes it single (or its own replicas)."""
    text = NET.replace("[conv1]\ntype=conv", "[conv1]\ntype=conv\ngpu=0,1,2,3").replace(
        "[fca]\ntype=fc", "[fca]\ntype=fc\ngpu=1").replace("[fcb]\ntype=fc", "[fcb]\ntype=fc\ngpu=2,3")
    (tmp_path / "net.cfg").write_text(text)
    (tmp_path / "params.cfg").write_text(PARAMS)
    layers = {l["name"]: l for l in config.load_layers(str(tmp_path / "net.cfg"), str(tmp_path / "params.cfg"), DIMS)}
    for name in ("conv1", "conv1_neuron", "pool1", "conv2", "conv2_neuron"):
        assert layers[name]["replicas"] == [0, 1, 2, 3], name
    assert "replicas" not in layers["fca"] and layers["fca"]["gpu"] == 1
    assert layers["fcb_neuron"]["replicas"] == [2, 3] and layers["drop"]["replicas"] == [2, 3]
    assert "replicas" not in layers["data"] and layers["data"]["gpu"] == 0
