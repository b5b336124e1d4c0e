"""Tests of ccn.config: the shipped layer files, derived sizes (checked by hand), schedules,
neuron shorthand, weight sharing, multi-input layers, rectangular images, resume-time
re-reading of layer params, and malformed files whose errors must name file, section, key."""
import copy
import math
from pathlib import Path

import pytest

from ccn import _core, config
from ccn.config import ConfigError, load_layer_params, load_layers, parse_schedule, schedule_value

REPO = Path(__file__).resolve().parent.parent
FMNIST_DIMS = {0: (1, 28, 28), 1: 1}
IMAGENET_DIMS = {0: (3, 224, 224), 1: 1}


_NETS = {}


def engine_shapes(layers, name):
    """([(rows, cols) of each weight matrix], bias length) of a layer as the engine builds it."""
    if _NETS.get("layers") is not layers:
        devices = ["cpu"] * (1 + max(layer["gpu"] for layer in layers))
        _NETS.update(layers=layers, net=_core.Net(layers, devices, 0))
    params = _NETS["net"].get_params(name)
    return [w.shape for w in params["weights"]], params["biases"].size


def by_name(layers):
    return {layer["name"]: layer for layer in layers}


def render(sections):
    """INI text from {section: {key: value or [values...] (key repeated)}}."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for key, value in keys.items():
            for v in value if isinstance(value, list) else [value]:
                lines.append(f"{key}={v}")
        lines.append("")
    return "\n".join(lines)


def write_net(tmp_path, definition, params):
    def_path, params_path = tmp_path / "layers.cfg", tmp_path / "params.cfg"
    def_path.write_text(definition if isinstance(definition, str) else render(definition))
    params_path.write_text(params if isinstance(params, str) else render(params))
    return str(def_path), str(params_path)


LEARN = {"epsW": "0.01", "epsB": "0.02", "momW": "0.9", "momB": "0.9", "wc": "0.0005"}
SMALL_DIMS = {0: (3, 16, 16), 1: 1}
SMALL_DEF = {
    "data": {"type": "data", "dataIdx": "0"},
    "labels": {"type": "data", "dataIdx": "1"},
    "conv1": {"type": "conv", "inputs": "data", "filters": "16", "filterSize": "5", "padding": "2",
              "neuron": "relu"},
    "pool1": {"type": "pool", "pool": "max", "inputs": "conv1", "sizeX": "3", "stride": "2"},
    "rnorm1": {"type": "rnorm", "inputs": "pool1", "size": "3"},
    "fc10": {"type": "fc", "inputs": "rnorm1", "outputs": "10"},
    "probs": {"type": "softmax", "inputs": "fc10"},
    "logprob": {"type": "cost.logreg", "inputs": "labels,probs"},
}
SMALL_PARAMS = {
    "conv1": dict(LEARN),
    "fc10": dict(LEARN),
    "rnorm1": {"scale": "0.001", "pow": "0.75"},
}


def small_net(tmp_path, def_edit=None, params_edit=None):
    definition, params = copy.deepcopy(SMALL_DEF), copy.deepcopy(SMALL_PARAMS)
    if def_edit:
        def_edit(definition)
    if params_edit:
        params_edit(params)
    return write_net(tmp_path, definition, params)


def upd(sections, name, **keys):
    """Sets keys of a section (creating it); a value None deletes the key."""
    section = sections.setdefault(name, {})
    for key, value in keys.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value


# ---------------------------------------------------------------------------------------
# Shipped layer files
# ---------------------------------------------------------------------------------------


def test_default_fashion_mnist_net():
    layers = load_layers(str(REPO / "layers.cfg"), str(REPO / "layer-params.cfg"), FMNIST_DIMS)
    net = by_name(layers)
    # conv1: 1 + ceil((2*2 + 28 - 5) / 1) = 28; pool 3/2: ceil((28 - 3) / 2) + 1 = 14
    assert (net["conv1"]["modulesY"], net["conv1"]["modulesX"], net["conv1"]["outChannels"]) == (28, 28, 32)
    assert net["conv1_neuron"]["neuron"] == "relu"
    assert (net["pool1"]["outputsY"], net["pool1"]["outputsX"]) == (14, 14)
    assert net["rnorm1"]["type"] == "cmrnorm" and net["rnorm1"]["size"] == 5
    assert net["rnorm1"]["scale"] == pytest.approx(0.0005 / 5)
    assert net["conv2"]["channels"] == 32 and net["conv2"]["modulesX"] == 14
    # pool2: ceil((14 - 3) / 2) + 1 = 7
    assert net["pool2"]["outputs"] == 64 * 7 * 7
    assert engine_shapes(layers, "fc1")[0] == [(3136, 256)]
    assert net["dropout1"]["keep"] == 0.5
    assert net["fc10"]["outputs"] == 10 and net["probs"]["outputs"] == 10
    assert net["logprob"]["inputs"] == ["labels", "probs"] and net["logprob"]["topk"] == 1
    for name in ("conv1", "conv2", "fc1", "fc10"):
        assert net[name]["momW"] == [0.9] and net[name]["wc"] == [0.0005]
        assert schedule_value(net[name]["epsW"][0], 0.0) == pytest.approx(0.02)
        assert schedule_value(net[name]["epsW"][0], 1.0) == pytest.approx(0.002)


def test_alexnet_single_tower():
    layers = load_layers(str(REPO / "layers/alexnet.cfg"), str(REPO / "layers/alexnet-params.cfg"), IMAGENET_DIMS)
    net = by_name(layers)
    # conv1: 1 + ceil((224 - 11) / 4) = 1 + ceil(53.25) = 55
    assert (net["conv1"]["modulesY"], net["conv1"]["modulesX"]) == (55, 55)
    # pool1: ceil((55 - 3) / 2) + 1 = 27; pool2: ceil((27 - 3) / 2) + 1 = 13; pool3: 6
    assert (net["pool1"]["outputsX"], net["pool2"]["outputsX"], net["pool3"]["outputsX"]) == (27, 13, 6)
    assert net["conv2"]["groups"] == 2 and net["conv2"]["filterChannels"] == 48
    assert engine_shapes(layers, "conv2")[0] == [(48 * 25, 256)]
    assert engine_shapes(layers, "fc6")[0] == [(256 * 6 * 6, 4096)]
    assert net["fc8"]["outputs"] == 1000 and net["logprob"]["topk"] == 5
    assert net["rnorm1"]["minDiv"] == 2.0 and net["rnorm1"]["scale"] == pytest.approx(1e-4)
    eps = net["conv1"]["epsW"][0]
    assert eps == {"type": "dexp", "base": 0.01, "tgtFactor": 1000.0, "numSteps": 4}
    assert [schedule_value(eps, p) for p in (0.1, 0.3, 0.6, 0.9)] == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    assert engine_shapes(layers, "conv1")[1] == 96


def test_alexnet_two_towers():
    layers = load_layers(str(REPO / "layers/alexnet-2gpu.cfg"), str(REPO / "layers/alexnet-2gpu-params.cfg"),
                         IMAGENET_DIMS)
    net = by_name(layers)
    for tower, gpu in (("a", 0), ("b", 1)):
        for name in ("conv1", "rnorm1", "pool1", "conv2", "pool2", "conv3", "conv5", "fc6", "fc7"):
            assert net[name + tower]["gpu"] == gpu, name + tower
        assert net[f"conv1{tower}_neuron"]["gpu"] == gpu
        assert net[f"conv1{tower}"]["modulesX"] == 55 and net[f"pool1{tower}"]["outputsX"] == 27
        # the crossing: conv3 reads both towers' pool2 (128 maps of 13x13 each), one matrix per input
        conv3 = net[f"conv3{tower}"]
        assert conv3["inputs"] == ["pool2a", "pool2b"]
        assert (conv3["channels"], conv3["imgSizeY"], conv3["imgSizeX"], conv3["filters"]) == ([128] * 2, [13] * 2,
                                                                                              [13] * 2, 192)
        assert conv3["filterChannels"] == [128, 128] and conv3["filterSize"] == [3, 3]
        assert net[f"fc6{tower}"]["inputs"] == ["pool3a", "pool3b"]
        assert engine_shapes(layers, f"fc6{tower}")[0] == [(128 * 36, 2048)] * 2
        assert len(net[f"fc7{tower}"]["epsW"]) == 2
    assert net["fc8"]["gpu"] == 0 and net["fc8"]["inputs"] == ["dropout7a", "dropout7b"]
    position = {layer["name"]: i for i, layer in enumerate(layers)}
    for layer in layers:
        assert all(position[i] < position[layer["name"]] for i in layer["inputs"])


# ---------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------


def test_schedule_forms():
    assert parse_schedule("0.01") == {"type": "const", "base": 0.01}
    assert parse_schedule("const[0.5]") == {"type": "const", "base": 0.5}
    assert parse_schedule("linear[0.1;10]") == {"type": "linear", "base": 0.1, "tgtFactor": 10.0}
    assert parse_schedule(" exp[ base = 0.1 ; tgtFactor = 100 ] ") == {"type": "exp", "base": 0.1, "tgtFactor": 100.0}
    assert parse_schedule("dexp[base=0.01;tgtFactor=250;numSteps=4]") == \
        {"type": "dexp", "base": 0.01, "tgtFactor": 250.0, "numSteps": 4}
    assert parse_schedule("dexp[0.01;tgtFactor=250;numSteps=4]")["numSteps"] == 4
    assert parse_schedule("dexp[numSteps=3;base=1e-2;tgtFactor=8]")["base"] == 0.01


@pytest.mark.parametrize("text", ["", "abc", "exp[0.1]", "exp[0.1;10;3]", "cos[0.1;2]", "linear[0.1;0]",
                                  "exp[-0.1;10]", "dexp[0.1;10;1]", "dexp[0.1;10;2.5]", "exp[base=0.1;tgt=2]",
                                  "exp[base=0.1;base=0.2]", "exp[base=0.1;10]", "linear[0.1;10"])
def test_bad_schedules(text):
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_schedule_values():
    const = parse_schedule("0.3")
    assert schedule_value(const, 0.0) == schedule_value(const, 0.7) == 0.3
    linear = parse_schedule("linear[1;4]")  # from 1 to 1/4
    assert [schedule_value(linear, p) for p in (0, 0.5, 1)] == pytest.approx([1.0, 0.625, 0.25])
    exp = parse_schedule("exp[2;16]")  # 2 * 16^-p
    assert [schedule_value(exp, p) for p in (0, 0.25, 0.5, 1)] == pytest.approx([2.0, 1.0, 0.5, 0.125])
    dexp = parse_schedule("dexp[1;100;3]")  # steps 1, 0.1, 0.01 over thirds of the run
    expected = {0.0: 1.0, 0.2: 1.0, 1 / 3: 1.0, 0.34: 0.1, 0.6: 0.1, 0.67: 0.01, 1.0: 0.01}
    for p, v in expected.items():
        assert schedule_value(dexp, p) == pytest.approx(v), p
    # progress is clamped to [0, 1]
    assert schedule_value(exp, 1.5) == pytest.approx(0.125) and schedule_value(exp, -1) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        schedule_value(exp, math.nan)


def test_schedules_in_params_file(tmp_path):
    def params(p):
        upd(p, "fc10", epsW="linear[base=0.1;tgtFactor=10]", epsB="dexp[0.2;100;2]")
    layers = by_name(load_layers(*small_net(tmp_path, params_edit=params), SMALL_DIMS))
    assert layers["fc10"]["epsW"] == [{"type": "linear", "base": 0.1, "tgtFactor": 10.0}]
    assert schedule_value(layers["fc10"]["epsB"], 0.9) == pytest.approx(0.002)


# ---------------------------------------------------------------------------------------
# Structure: neuron shorthand, order, weight sharing, multi-input, rectangular images
# ---------------------------------------------------------------------------------------


def test_neuron_shorthand(tmp_path):
    def edit(d):
        upd(d, "fc10", neuron=" tanh[ 1.7159, 0.6666 ]", gpu="1")
        upd(d, "extra", type="fc", inputs="rnorm1", outputs="10")
        upd(d, "probs", type="eltsum", inputs="fc10,extra")
        upd(d, "smax", type="softmax", inputs="probs")
        upd(d, "logprob", inputs="labels,smax")
    definition, params = copy.deepcopy(SMALL_DEF), copy.deepcopy(SMALL_PARAMS)
    edit(definition)
    params["extra"] = dict(LEARN)
    layers = load_layers(*write_net(tmp_path, definition, params), SMALL_DIMS)
    names = [layer["name"] for layer in layers]
    net = by_name(layers)
    assert names.index("conv1_neuron") == names.index("conv1") + 1
    assert net["conv1_neuron"] == {"name": "conv1_neuron", "type": "neuron", "inputs": ["conv1"], "gpu": 0,
                                   "neuron": "relu", "outputs": 16 * 16 * 16, "outChannels": 16,
                                   "outSizeY": 16, "outSizeX": 16}
    assert net["pool1"]["inputs"] == ["conv1_neuron"]
    assert "neuron" not in net["conv1"]
    assert net["fc10_neuron"]["neuron"] == "tanh[1.7159,0.6666]" and net["fc10_neuron"]["gpu"] == 1
    assert net["probs"]["inputs"] == ["fc10_neuron", "extra"] and net["probs"]["gpu"] == 1
    assert net["probs"]["coeffs"] == [1.0, 1.0]


def test_topological_order_and_gpu_default(tmp_path):
    text = """
[logprob]
type=cost.logreg
inputs=labels,probs
[probs]
type=softmax
inputs=fc
[fc]
type=fc
inputs=data
outputs=4
gpu=2
[labels]
type=data
dataIdx=1
[data]
type=data
dataIdx=0
"""
    params = "[fc]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\n"
    layers = load_layers(*write_net(tmp_path, text, params), {0: 7, 1: 1})
    assert [layer["name"] for layer in layers] == ["labels", "data", "fc", "probs", "logprob"]
    net = by_name(layers)
    assert net["data"]["gpu"] == 0 and net["probs"]["gpu"] == 2 and net["logprob"]["gpu"] == 0
    assert net["data"]["outputs"] == 7 and "outChannels" not in net["data"]
    assert net["fc"]["wc"] == [0.0]


def test_weight_source_sharing(tmp_path):
    def edit(d):
        upd(d, "conv2", type="conv", inputs="data", filters="16", filterSize="5", padding="2",
            weightSource="conv1")
        upd(d, "conv3", type="conv", inputs="data", filters="16", filterSize="5", padding="2",
            weightSource="conv2")  # chains to the owner, conv1
        upd(d, "sum", type="eltsum", inputs="conv1,conv2,conv3")
        upd(d, "pool1", inputs="sum")
        upd(d, "fcA", type="fc", inputs="rnorm1", outputs="10")
        upd(d, "fc10", inputs="rnorm1,rnorm1b", weightSource="fcA,fc10[0]")
        upd(d, "rnorm1b", type="rnorm", inputs="pool1", size="3")
        upd(d, "probs", inputs="fc10,fcA", type="eltsum")
        upd(d, "smax", type="softmax", inputs="probs")
        upd(d, "logprob", inputs="labels,smax")

    def params(p):
        for name in ("conv2", "conv3", "fcA", "fc10"):
            p[name] = dict(LEARN)
        upd(p, "rnorm1b", scale="1", pow="1")
    layers = load_layers(*small_net(tmp_path, edit, params), SMALL_DIMS)
    net = by_name(layers)
    assert net["conv2"]["weightSource"] == "conv1" and net["conv3"]["weightSource"] == "conv2"
    assert "weightSource" not in net["conv1"]
    assert net["fc10"]["weightSource"] == ["fcA", "fc10"]
    assert net["fc10"]["initW"] == [0.01, 0.01]
    # the engine follows the chains to the owner of each matrix
    engine = _core.Net(layers, ["cpu"], 0)
    conv1 = engine.get_params("conv1")["weights"][0]
    for name in ("conv2", "conv3"):
        assert (engine.get_params(name)["weights"][0] == conv1).all()
    fc10 = engine.get_params("fc10")["weights"]
    assert (fc10[0] == engine.get_params("fcA")["weights"][0]).all() and (fc10[1] == fc10[0]).all()


@pytest.mark.parametrize("edit, params, text", [
    (lambda d: upd(d, "fc10", weightSource="fc99"), None, "names no layer"),
    (lambda d: upd(d, "fc2", type="fc", inputs="rnorm1", outputs="10") or upd(d, "fc10", inputs="fc2",
                                                                             weightSource="fc2"),
     lambda p: upd(p, "fc2", **LEARN), "shape"),
    (lambda d: upd(d, "fc10", weightSource="conv1"), None, "names a conv layer"),
], ids=["missing layer", "shape mismatch", "type mismatch"])
def test_weight_source_errors_name_the_layer(tmp_path, edit, params, text):
    """The engine binds weightSource (the parser only reads its syntax): one ValueError naming
    the layer and the key."""
    layers = load_layers(*small_net(tmp_path, edit, params), SMALL_DIMS)
    with pytest.raises(ValueError, match=f"layer 'fc10': weightSource .*{text}"):
        _core.Net(layers, ["cpu"], 0)


def test_multi_input_fc_eltsum_concat(tmp_path):
    text = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[a]
type=fc
inputs=data
outputs=6
[b]
type=fc
inputs=data,a
outputs=6
initW=0.1,0.2
weightSource=,
[sum]
type=eltsum
inputs=a,b
[cat]
type=concat
inputs=sum,data
[max]
type=eltmax
inputs=a,sum
[out]
type=fc
inputs=cat,max
outputs=3
[probs]
type=softmax
inputs=out
[cost]
type=cost.logreg
inputs=labels,probs
[cost2]
type=cost.sum2
inputs=out
"""
    params = """
[a]
epsW=0.1
epsB=0.1
momW=0.9
momB=0.9
[b]
epsW=0.1,exp[0.1;10]
epsB=0.1
momW=0.9,0.5
momB=0.9
wc=0.01,0.02
[out]
epsW=0.1
epsB=0.1
momW=0.9
momB=0.9
[sum]
coeffs=0.5,-1
[cost2]
coeff=0.25
"""
    layers = load_layers(*write_net(tmp_path, text, params), {0: (2, 3, 3), 1: 1})
    net = by_name(layers)
    assert engine_shapes(layers, "b")[0] == [(18, 6), (6, 6)]
    assert net["b"]["initW"] == [0.1, 0.2] and "weightSource" not in net["b"]
    assert net["b"]["epsW"][1] == {"type": "exp", "base": 0.1, "tgtFactor": 10.0}
    assert net["b"]["momW"] == [0.9, 0.5] and net["b"]["wc"] == [0.01, 0.02]
    assert net["sum"]["coeffs"] == [0.5, -1.0] and net["sum"]["outputs"] == 6
    assert net["cat"]["outputs"] == 6 + 18 and "outChannels" not in net["cat"]
    assert engine_shapes(layers, "out")[0] == [(24, 3), (6, 3)]
    assert len(net["out"]["epsW"]) == 2 and net["out"]["momW"] == [0.9, 0.9]
    assert net["cost2"]["coeff"] == 0.25 and net["cost"]["coeff"] == 1.0


def test_rectangular_images(tmp_path):
    text = """
[data]
type=data
dataIdx=0
[labels]
type=data
dataIdx=1
[conv]
type=conv
inputs=data
filters=8
filterSize=5
padding=1
stride=2
groups=1
sharedBiases=0
[local]
type=local
inputs=conv
filters=4
filterSize=3
[pool]
type=pool
pool=avg
inputs=conv
sizeX=3
stride=2
[cm]
type=cmpool
inputs=pool
size=3
stride=2
[cnorm]
type=cnorm
inputs=cm
size=3
[cmr]
type=cmrnorm
inputs=local
size=3
blocked=1
[fc]
type=fc
inputs=cnorm,cmr
outputs=2
[probs]
type=softmax
inputs=fc
[cost]
type=cost.logreg
inputs=labels,probs
"""
    learn = "epsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\n"
    params = f"[conv]\n{learn}[local]\n{learn}[fc]\n{learn}[cnorm]\nscale=0.9\npow=0.5\nminDiv=3\n" \
             "[cmr]\nscale=0.9\npow=0.5\n"
    layers = load_layers(*write_net(tmp_path, text, params), {0: (3, 20, 31), 1: 1})
    net = by_name(layers)
    conv = net["conv"]
    # modulesY = 1 + ceil((2 + 20 - 5) / 2) = 10; modulesX = 1 + ceil((2 + 31 - 5) / 2) = 15
    assert (conv["imgSizeY"], conv["imgSizeX"], conv["modulesY"], conv["modulesX"]) == (20, 31, 10, 15)
    assert (conv["outSizeY"], conv["outSizeX"], conv["outputs"]) == (10, 15, 8 * 10 * 15)
    assert engine_shapes(layers, conv["name"])[1] == 8 * 150
    # local: 1 + ceil((10 - 3) / 1) = 8 rows, 13 columns; weights per module
    local = net["local"]
    assert (local["modulesY"], local["modulesX"]) == (8, 13) and "sharedBiases" not in local
    assert engine_shapes(layers, local["name"])[0] == [(8 * 13 * 8 * 9, 4)]
    assert engine_shapes(layers, local["name"])[1] == 4 * 8 * 13
    # pool: ceil((10 - 3) / 2) + 1 = 5 rows, ceil((15 - 3) / 2) + 1 = 7 columns
    assert (net["pool"]["outputsY"], net["pool"]["outputsX"], net["pool"]["pool"]) == (5, 7, "avg")
    # cmpool over 8 channels: ceil((8 - 3) / 2) + 1 = 4 output channels
    assert net["cm"]["outputChannels"] == 4 and net["cm"]["outputs"] == 4 * 5 * 7
    assert net["cnorm"]["scale"] == pytest.approx(0.1) and net["cnorm"]["minDiv"] == 3.0
    assert net["cmr"]["scale"] == pytest.approx(0.3) and net["cmr"]["blocked"] is True
    assert net["cmr"]["minDiv"] == 1.0


def test_flat_input_read_as_images(tmp_path):
    text = """
[data]
type=data
dataIdx=0
[conv]
type=conv
inputs=data
channels=2
filters=4
filterSize=3
initWFunc=mymodule.init(0.5, abc)
initBFunc=pkg.mod.zero
[cost]
type=cost.sum2
inputs=conv
"""
    params = "[conv]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\n"
    net = by_name(load_layers(*write_net(tmp_path, text, params), {0: 2 * 36}))
    assert (net["conv"]["channels"], net["conv"]["imgSizeY"], net["conv"]["modulesX"]) == (2, 6, 4)
    assert net["conv"]["initWFunc"] == "mymodule.init(0.5, abc)" and net["conv"]["initBFunc"] == "pkg.mod.zero"
    assert net["cost"]["coeff"] == 1.0


def test_tunables_in_definition_file_and_case_insensitive_keys(tmp_path):
    def edit(d):
        upd(d, "rnorm1", scale="0.009", pow="0.5", minDiv="2")
        upd(d, "conv1", filterSize=None, FILTERSIZE="5")
    net = by_name(load_layers(*small_net(tmp_path, edit, lambda p: upd(p, "rnorm1", scale=None)), SMALL_DIMS))
    assert net["rnorm1"]["scale"] == pytest.approx(0.001)  # 0.009 / 3^2, from the definition file
    assert net["rnorm1"]["pow"] == 0.75  # the layer-params file wins
    assert net["rnorm1"]["minDiv"] == 2.0
    assert net["conv1"]["filterSize"] == 5


def test_resume_rereads_params(tmp_path):
    def_path, params_path = small_net(tmp_path)
    layers = load_layers(def_path, params_path, SMALL_DIMS)
    new_params = tmp_path / "new.cfg"
    new_params.write_text("[conv1]\nepsW=exp[0.5;2]\nepsB=0.5\nmomW=0.5\nmomB=0.5\n"
                          "[fc10]\nepsW=0.3\nepsB=0.3\nmomW=0\nmomB=0\nwc=0.1\n[rnorm1]\npow=2\n")
    assert load_layer_params(str(new_params), layers) is layers
    net = by_name(layers)
    assert net["conv1"]["epsW"] == [{"type": "exp", "base": 0.5, "tgtFactor": 2.0}]
    assert net["conv1"]["wc"] == [0.0] and net["fc10"]["wc"] == [0.1]
    assert net["rnorm1"]["pow"] == 2.0 and net["rnorm1"]["scale"] == pytest.approx(0.001 / 9)  # kept
    bad = tmp_path / "bad.cfg"
    bad.write_text("[fc10]\nepsW=0.3\nepsB=0.3\nmomW=0\nmomB=0\n")
    with pytest.raises(ConfigError) as err:
        load_layer_params(str(bad), layers)
    assert (err.value.path, err.value.section, err.value.key) == (str(bad), "conv1", "epsW")
    bad.write_text(new_params.read_text() + "[ghost]\nkeep=1\n")
    load_layer_params(str(bad), layers)  # a section for an absent layer is a warning (test_compat)


def test_missing_file_and_bad_data_dims(tmp_path):
    def_path, params_path = small_net(tmp_path)
    missing = str(tmp_path / "nope.cfg")
    with pytest.raises(ConfigError, match="nope.cfg"):
        load_layers(missing, params_path, SMALL_DIMS)
    with pytest.raises(ConfigError, match="nope.cfg"):
        load_layers(def_path, missing, SMALL_DIMS)
    with pytest.raises(ValueError, match="data_dims"):
        load_layers(def_path, params_path, {0: (3, 16), 1: 1})


def test_registry_has_every_type():
    expected = {"data", "conv", "local", "fc", "pool", "cmpool", "rnorm", "cnorm", "cmrnorm", "neuron",
                "softmax", "eltsum", "eltmax", "concat", "dropout", "cost.logreg", "cost.sum2",
                "cost.crossent"}
    assert expected <= set(config.LAYER_PARSERS)
    assert all(issubclass(cls, config.LayerParser) for cls in config.LAYER_PARSERS.values())


# ---------------------------------------------------------------------------------------
# Malformed files: every error names file, section and key
# ---------------------------------------------------------------------------------------

D, P = "def", "params"


def add_params(name, **keys):
    return lambda p: upd(p, name, **keys)


MALFORMED = [
    # (id, definition edit, params edit, file, section, key, text in the message)
    ("unknown type", lambda d: upd(d, "conv1", type="convv"), None, D, "conv1", "type", "unknown layer type"),
    ("missing type", lambda d: upd(d, "conv1", type=None), None, D, "conv1", "type", "missing"),
    ("missing required key", lambda d: upd(d, "conv1", filters=None), None, D, "conv1", "filters", "missing"),
    ("typo key", lambda d: upd(d, "conv1", filterSize=None, filtrSize="5"), None, D, "conv1", "filtrSize",
     "did you mean 'filterSize'"),
    ("bad number", lambda d: upd(d, "conv1", filterSize="5x"), None, D, "conv1", "filterSize", "not an integer"),
    ("float for int", lambda d: upd(d, "pool1", stride="1.5"), None, D, "pool1", "stride", "not an integer"),
    ("bad float", lambda d: upd(d, "conv1", initW="0.0.1"), None, D, "conv1", "initW", "not a number"),
    ("empty value", lambda d: upd(d, "conv1", filters=""), None, D, "conv1", "filters", "empty"),
    ("bad input name", lambda d: upd(d, "pool1", inputs="conv9"), None, D, "pool1", "inputs", "no layer named"),
    ("malformed input list", lambda d: upd(d, "fc10", inputs="rnorm1,,pool1"), None, D, "fc10", "inputs",
     "not a layer name"),
    ("input is a cost", lambda d: upd(d, "extra", type="fc", inputs="logprob", outputs="2"), None, D, "extra",
     "inputs", "cost layer"),
    ("cycle", lambda d: (upd(d, "pool1", inputs="rnorm1"), upd(d, "rnorm1", inputs="pool1"),
                         upd(d, "fc10", inputs="conv1")), None, D, "pool1", "inputs", "cycle"),
    ("unused layer", lambda d: upd(d, "extra", type="softmax", inputs="fc10"), None, D, "extra", None, "not used"),
    ("unused data layer", lambda d: upd(d, "more", type="data", dataIdx="0"), None, D, "more", None, "not used"),
    ("channels mismatch", lambda d: upd(d, "conv1", channels="1"), None, D, "conv1", "channels", "does not match"),
    ("filter larger than padded image", lambda d: upd(d, "conv1", filterSize="21"), None, D, "conv1",
     "filterSize", "larger than the padded image"),
    ("groups not dividing channels", lambda d: upd(d, "conv1", groups="2"), None, D, "conv1", "groups",
     "does not divide"),
    ("softmax with two inputs", lambda d: upd(d, "probs", inputs="fc10,rnorm1"), None, D, "probs", "inputs",
     "exactly 1"),
    ("logreg labels not first", lambda d: upd(d, "logprob", inputs="probs,labels"), None, D, "logprob", "inputs",
     "labels"),
    ("logreg without softmax", lambda d: upd(d, "probs", type="dropout"), None, D, "logprob", "inputs",
     "softmax"),
    ("unknown neuron", lambda d: upd(d, "conv1", neuron="relux"), None, D, "conv1", "neuron", "unknown neuron"),
    ("neuron parameter count", lambda d: upd(d, "conv1", neuron="tanh[1]"), None, D, "conv1", "neuron",
     "2 parameter"),
    ("neuron on a cost", lambda d: upd(d, "logprob", neuron="relu"), None, D, "logprob", "neuron", "takes no neuron"),
    ("neuron layer name taken", lambda d: upd(d, "conv1_neuron", type="neuron", inputs="data", neuron="abs"),
     None, D, "conv1", "neuron", "already defined"),
    ("bad pool kind", lambda d: upd(d, "pool1", pool="min"), None, D, "pool1", "pool", "not one of"),
    ("pool window larger than image", lambda d: upd(d, "pool1", sizeX="17"), None, D, "pool1", "sizeX", "<= 16"),
    ("pool outputs past image", lambda d: upd(d, "pool1", outputsX="9"), None, D, "pool1", "outputsX",
     "run past"),
    ("cmpool outputs not covering", lambda d: upd(d, "cm", type="cmpool", inputs="pool1", size="4", stride="4",
                                                  outputs="2") or upd(d, "rnorm1", inputs="cm"),
     None, D, "cm", "outputs", "cover only"),
    ("data index not provided", lambda d: upd(d, "labels", dataIdx="5"), None, D, "labels", "dataIdx",
     "not provided"),
    ("negative gpu", lambda d: upd(d, "fc10", gpu="-1"), None, D, "fc10", "gpu", ">= 0"),
    ("bad bool", lambda d: upd(d, "conv1", sharedBiases="maybe"), None, D, "conv1", "sharedBiases", "boolean"),
    ("bad init function", lambda d: upd(d, "conv1", initWFunc="notafunction"), None, D, "conv1", "initWFunc",
     "module.function"),
    ("flat input without channels", lambda d: upd(d, "conv2", type="conv", inputs="fc10", filters="4",
                                                  filterSize="3") or upd(d, "probs", inputs="conv2"),
     None, D, "conv2", "channels", "flat"),
    ("eltsum size mismatch", lambda d: upd(d, "sum", type="eltsum", inputs="fc10,rnorm1")
     or upd(d, "probs", inputs="sum"), None, D, "sum", "inputs", "same number of outputs"),
    ("weightSource bad syntax", lambda d: upd(d, "fc10", weightSource="fc2[x]"), None, D, "fc10",
     "weightSource", "layer[index]"),
    ("learning key in definition", lambda d: upd(d, "conv1", epsW="0.1"), None, D, "conv1", "epsW",
     "layer-params file"),
    # layer-params file
    ("missing learning section", None, lambda p: p.pop("conv1"), P, "conv1", "epsW", "no section"),
    ("missing momB", None, add_params("fc10", momB=None), P, "fc10", "momB", "missing"),
    ("bad schedule arity", None, add_params("fc10", epsW="exp[0.01]"), P, "fc10", "epsW", "tgtFactor"),
    ("unknown schedule", None, add_params("fc10", epsB="cos[0.01;2]"), P, "fc10", "epsB", "unknown schedule"),
    ("unknown params key", None, add_params("fc10", epsw2="0.1"), P, "fc10", "epsw2", "unknown key"),
    ("definition key in params", None, add_params("conv1", filterSize="3"), P, "conv1", "filterSize",
     "layer definition file"),
    ("momentum out of range", None, add_params("conv1", momW="1.5"), P, "conv1", "momW", "<= 1.0"),
    ("wc list too long", None, add_params("fc10", wc="0.1,0.2,0.3"), P, "fc10", "wc", "3 entries; expected 1"),
    ("negative weight decay", None, add_params("fc10", wc="-0.1"), P, "fc10", "wc", ">= 0"),
    ("missing norm scale", None, add_params("rnorm1", scale=None), P, "rnorm1", "scale", "missing"),
    ("bad norm pow", None, add_params("rnorm1", pow="x"), P, "rnorm1", "pow", "not a number"),
    ("dropout keep out of range", lambda d: upd(d, "drop", type="dropout", inputs="rnorm1")
     or upd(d, "fc10", inputs="drop"), add_params("drop", keep="1.5"), P, "drop", "keep", "<= 1.0"),
    ("eltsum coeffs count", lambda d: upd(d, "sum", type="eltsum", inputs="fc10,fc10b")
     or upd(d, "fc10b", type="fc", inputs="rnorm1", outputs="10") or upd(d, "probs", inputs="sum"),
     lambda p: upd(p, "sum", coeffs="1,2,3") or upd(p, "fc10b", **LEARN), P, "sum", "coeffs", "3 entries"),
    ("topk larger than classes", None, add_params("logprob", topk="11"), P, "logprob", "topk", "<= 10"),
    ("bad cost coeff", None, add_params("logprob", coeff="one"), P, "logprob", "coeff", "not a number"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed(tmp_path, case):
    _, def_edit, params_edit, which, section, key, text = case
    def_path, params_path = small_net(tmp_path, def_edit, params_edit)
    with pytest.raises(ConfigError) as err:
        load_layers(def_path, params_path, SMALL_DIMS)
    error = err.value
    path = def_path if which == D else params_path
    message = str(error)
    assert isinstance(error, ValueError)
    assert (error.path, error.section, error.key) == (path, section, key), message
    assert path in message and f"[{section}]" in message, message
    if key is not None:
        assert key in message, message
    assert text in message, message


def test_ini_syntax_errors(tmp_path):
    def_path, params_path = small_net(tmp_path)
    Path(def_path).write_text("type=data\n[data]\ndataIdx=0\n")
    with pytest.raises(ConfigError, match="layers.cfg"):
        load_layers(def_path, params_path, SMALL_DIMS)
    Path(def_path).write_text(render(SMALL_DEF) + "\n[conv1]\ntype=nosuch\n")  # merged: the later type wins
    with pytest.raises(ConfigError) as err:
        load_layers(def_path, params_path, SMALL_DIMS)
    assert err.value.section == "conv1" and "nosuch" in str(err.value)
    Path(def_path).write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="no layers"):
        load_layers(def_path, params_path, SMALL_DIMS)
