"""python -m ccn.export --layout=torch and ccn.export.to_torch: a small net with every
translated kind of layer (strided padded conv whose last module hangs over the image, local
with untied biases, max and avg pooling, cross-map and spatial normalisation, tanh, dropout,
hs, href, pass, a two-input fc, eltsum, concat, softmax) is trained, exported and rebuilt in torch, whose
test-set probabilities must match ccn's to 1e-5; a second net (randSparse conv, cmpool, blur,
nailbed, maxabs pooling) with random weights must match the engine's forward pass."""
import json
import os

import numpy as np
import pytest

from ccn import checkpoint, data, export
from ccn.cli import convnet_main
from trainer_fixtures import write_cifar, write_net

torch = pytest.importorskip("torch")

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
filterSize=5
padding=2
stride=2
initW=0.05
neuron=relu

[rnorm1]
type=cmrnorm
inputs=conv1
size=3

[pool1]
type=pool
pool=max
inputs=rnorm1
sizeX=3
stride=2

[local2]
type=local
inputs=pool1
filters=4
filterSize=3
padding=1
stride=2
initW=0.05
neuron=tanh[1.5,0.7]

[flip]
type=href
inputs=pool1
channels=8

[mix]
type=pass
inputs=flip,pool1

[apool]
type=pool
pool=avg
inputs=mix
sizeX=3
stride=3
start=-1

[snorm]
type=rnorm
inputs=apool
size=2

[fca]
type=fc
inputs=pool1,local2
outputs=10
initW=0.01

[fcb]
type=fc
inputs=snorm
outputs=10
initW=0.01

[both]
type=eltsum
inputs=fca,fcb
coeffs=1,0.5

[drop]
type=dropout
inputs=both

[drop2]
type=hs
inputs=drop

[cat]
type=concat
inputs=drop2,fcb

[fc10]
type=fc
inputs=cat
outputs=10
initW=0.05

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
"""

LEARN = "epsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0\n"
PARAMS = "".join(f"[{name}]\n{LEARN}\n" for name in ("conv1", "local2", "fca", "fcb", "fc10")) + \
    "[rnorm1]\nscale=0.01\npow=0.75\n\n[snorm]\nscale=0.02\npow=0.5\n\n[drop]\nkeep=0.8\n\n[drop2]\nkeep=0.9\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torch")
    cifar = write_cifar(str(tmp / "cifar"))
    layers, params = write_net(tmp, net=NET, params=PARAMS)
    assert convnet_main([f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}",
                         "--data-provider=cifar", f"--save-path={tmp / 'runs'}", "--train-range=1-5", "--test-range=6",
                         "--mini=16", "--gpu=cpu", "--seed=2", "--epochs=1"]) == 0
    run_dir = str(tmp / "runs" / os.listdir(tmp / "runs")[0])
    assert convnet_main(["-f", run_dir, "--test-only=1", "--write-features=probs"]) == 0
    return run_dir, cifar


def ccn_probs_and_images(run_dir, cifar):
    """ccn's test-set probabilities (written by --write-features, under the run directory) and
    the test images as the provider gives them."""
    written = os.path.join(run_dir, "features", "probs", "data_batch_6.npz")
    probs = np.load(written)["data"]
    dp = data.get_provider("cifar", cifar, [6], test=True, seed=0)
    _, _, (images, _) = dp.get_next_batch()
    dp.close()
    return probs, images.T.copy()


def test_torch_layout_shapes_and_metadata(trained, tmp_path):
    run_dir, _ = trained
    out = tmp_path / "w.safetensors"
    assert export.main(["-f", run_dir, "--layout=torch", f"--out={out}"]) == 0
    arrays, meta = export.read_export(str(out))
    state, _, _ = checkpoint.load(run_dir)
    conv, local, fca = (state["params"][n] for n in ("conv1", "local2", "fca"))
    assert arrays["conv1.weights.0"].shape == (8, 3, 5, 5)
    # torch's conv weight [f, c, y, x] is the engine's row (c, y, x) of column f
    np.testing.assert_array_equal(arrays["conv1.weights.0"][5, 2, 1, 3], conv["weights"][0][2 * 25 + 1 * 5 + 3, 5])
    my, mx = 5, 5  # 1 + ceil((8 + 2 - 3) / 2): the last module hangs over the image
    assert arrays["local2.weights.0"].shape == (my, mx, 4, 8, 3, 3) and arrays["local2.biases"].shape == (4, my, mx)
    module, f, c, y, x = (2 * mx + 1), 3, 6, 2, 0
    assert arrays["local2.weights.0"][2, 1, f, c, y, x] == local["weights"][0][module * 72 + c * 9 + y * 3 + x, f]
    np.testing.assert_array_equal(arrays["fca.weights.1"], fca["weights"][1].T)
    assert json.loads(meta["order"])[:3] == ["data", "labels", "conv1"] and meta["layout"] == "torch"
    assert json.loads(meta["shapes"])["fca.weights.0"] == [10, 8 * 8 * 8]
    assert json.loads(meta["layers"])[2]["modulesX"] == 17


@pytest.mark.parametrize("how", ["checkpoint", "torch-npz", "ccn-safetensors"])
def test_to_torch_matches_ccn_probabilities(trained, tmp_path, how):
    run_dir, cifar = trained
    source = run_dir
    if how != "checkpoint":
        layout, fmt = how.split("-")
        source = str(tmp_path / f"w.{fmt}")
        assert export.main(["-f", run_dir, f"--layout={layout}", f"--out={source}"]) == 0
    net = export.to_torch(source)
    probs, images = ccn_probs_and_images(run_dir, cifar)
    with torch.no_grad():
        ours = net(torch.from_numpy(images)).numpy()
    assert ours.shape == probs.shape == (40, 10)
    assert np.abs(probs.sum(axis=1) - 1).max() < 1e-5 and probs.std() > 1e-3  # real, varied probabilities
    np.testing.assert_allclose(ours, probs, atol=1e-5, rtol=0)


def test_export_defaults_under_the_run_directory(trained, capsys):
    run_dir, _ = trained
    assert export.main(["-f", run_dir, "--layout=torch"]) == 0
    written = capsys.readouterr().out.split()[1]
    assert os.path.dirname(written) == os.path.join(run_dir, "exports") and written.endswith("-torch.npz")


def test_an_untranslated_layer_is_named(trained):
    run_dir, _ = trained
    state, _, _ = checkpoint.load(run_dir)
    layers = [dict(layer, pool="rand") if layer["name"] == "pool1" else layer for layer in state["layers"]]
    from ccn.torch_net import TorchNet
    net = TorchNet(layers, export.weight_arrays(dict(state, layers=layers), "torch"))
    with pytest.raises(ValueError, match="pool=rand of layer 'pool1'"):
        net(torch.zeros(2, 3 * 32 * 32))
    layers = [dict(layer, type="sfc") if layer["name"] == "fca" else layer for layer in state["layers"]]
    with pytest.raises(ValueError, match="to_torch: layer 'fca' has type sfc, which is not translated"):
        TorchNet(layers, export.weight_arrays(dict(state, layers=layers), "torch"))


def test_cmrnorm_is_torchs_local_response_norm(rng):
    from ccn.torch_net import _norm
    x = torch.from_numpy(rng.normal(size=(3, 7, 5, 4)).astype(np.float32))
    for size in (3, 4):
        layer = {"type": "cmrnorm", "channels": 7, "imgSizeY": 5, "imgSizeX": 4, "size": size,
                 "scale": 0.3 / size, "pow": 0.75, "minDiv": 2.0}
        expected = torch.nn.LocalResponseNorm(size, alpha=0.3, beta=0.75, k=2.0)(x)
        np.testing.assert_allclose(_norm(None, layer, [x]).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_eps_zero_freezes_a_layer_when_fine_tuning(trained, tmp_path):
    run_dir, cifar = trained
    layers = tmp_path / "net.cfg"
    layers.write_text(NET)
    frozen = tmp_path / "frozen-params.cfg"
    frozen.write_text(PARAMS.replace("[conv1]\n" + LEARN, "[conv1]\n" + LEARN.replace("epsW=0.001", "epsW=0")
                                     .replace("epsB=0.002", "epsB=0")))
    assert "[conv1]\nepsW=0\nepsB=0\n" in frozen.read_text()
    assert convnet_main([f"--finetune={run_dir}", f"--layer-def={layers}", f"--layer-params={frozen}",
                         f"--save-path={tmp_path / 'runs'}", "--epochs=1", "--gpu=cpu"]) == 0
    before = checkpoint.load(run_dir)[0]["params"]
    after = checkpoint.load(str(tmp_path / "runs" / os.listdir(tmp_path / "runs")[0]))[0]["params"]
    np.testing.assert_array_equal(after["conv1"]["weights"][0], before["conv1"]["weights"][0])
    np.testing.assert_array_equal(after["conv1"]["biases"], before["conv1"]["biases"])
    assert np.abs(after["fca"]["weights"][0] - before["fca"]["weights"][0]).max() > 1e-6


PIXEL_NET = """
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
initW=0.3
neuron=tanh

[sparse]
type=conv
inputs=conv1
channels=8
filters=4
groups=2
randSparse=1
filterChannels=4
filterSize=3
padding=1
initW=0.3

[cmp]
type=cmpool
inputs=sparse
channels=8
size=3
stride=2

[blur]
type=blur
inputs=cmp
channels=4
filterSize=5
stdev=1.2

[nails]
type=nailbed
inputs=blur
channels=4
stride=2

[pool]
type=pool
pool=maxabs
inputs=nails
channels=4
sizeX=2
stride=2

[fc]
type=fc
inputs=pool
outputs=5
initW=0.3

[probs]
type=softmax
inputs=fc

[logprob]
type=cost.logreg
inputs=labels,probs
"""


def test_to_torch_translates_randsparse_cmpool_blur_nailbed_and_maxabs(tmp_path, rng):
    from ccn import _core, config
    from ccn.torch_net import TorchNet
    (tmp_path / "net.cfg").write_text(PIXEL_NET)
    (tmp_path / "params.cfg").write_text("".join(f"[{n}]\nepsW=0.1\nepsB=0.1\nmomW=0.9\nmomB=0.9\n\n"
                                                 for n in ("conv1", "sparse", "fc")))
    layers = config.load_layers(str(tmp_path / "net.cfg"), str(tmp_path / "params.cfg"), {0: (3, 12, 12), 1: 1})
    assert next(l for l in layers if l["name"] == "sparse")["filterConns"][0] is not None
    net = _core.Net(layers, ["cpu"], 4)
    params = {}
    for name in net.weight_layer_names():
        p = net.get_params(name)
        params[name] = {"weights": [rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in p["weights"]],
                        "biases": rng.standard_normal(p["biases"].shape).astype(np.float32)}
        net.set_params(name, params[name])
    images = rng.standard_normal((3 * 12 * 12, 6)).astype(np.float32)
    net.fprop([images, np.zeros((1, 6), np.float32)], False)
    probs = net.get_acts("probs")
    torch_net = TorchNet(layers, export.weight_arrays({"layers": layers, "params": params}, "torch")).eval()
    with torch.no_grad():
        ours = torch_net(torch.from_numpy(images.T.copy()))
        pooled = torch_net(torch.from_numpy(images.T.copy()), output="pool").numpy()
    engine_pool = net.get_acts("pool")
    assert (engine_pool < 0).mean() > 0.2  # maxabs keeps negative winners
    np.testing.assert_allclose(pooled.reshape(6, -1), engine_pool.reshape(-1, 6).T, atol=1e-5, rtol=0)
    assert probs.std() > 1e-2
    np.testing.assert_allclose(ours.numpy(), probs.T, atol=1e-5, rtol=0)
