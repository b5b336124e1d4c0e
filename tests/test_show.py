"""shownet.py, --write-features and python -m ccn.export on a small net trained on CIFAR-format
data: every plot is rendered to a PNG that is checked for size and content; features and
exported weights are read back and compared with the checkpoint (safetensors through a
reader written here from the format's description)."""
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ccn import checkpoint, export, show
from ccn.cli import convnet_main, shownet_main
from trainer_fixtures import SMALL_NET, SMALL_PARAMS, write_cifar, write_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# conv (colour filters), local (modules), and an fc layer with two image inputs (--input-idx)
LOCAL2 = """[local2]
type=local
inputs=pool1
filters=4
filterSize=3
padding=1
stride=2
initW=0.01
neuron=relu

"""
NET = SMALL_NET.replace("[fc10]\ntype=fc\ninputs=pool1\n", LOCAL2 + "[fc10]\ntype=fc\ninputs=pool1,local2\n")
assert "local2" in NET

PARAMS = SMALL_PARAMS.replace("[fc10]", "[local2]\nepsW=0.0001\nepsB=0.0002\nmomW=0.9\nmomB=0.9\nwc=0\n\n[fc10]")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run dir, checkpoint state, cifar folder) of a net trained for 2 epochs of 5 batches."""
    tmp = tmp_path_factory.mktemp("show")
    cifar = write_cifar(str(tmp / "cifar"))
    layers, params = write_net(tmp, net=NET, params=PARAMS)
    code = convnet_main([f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}",
                         "--data-provider=cifar", f"--save-path={tmp / 'runs'}", "--train-range=1-5",
                         "--test-range=6", "--test-freq=2", "--mini=16", "--gpu=cpu", "--seed=1", "--epochs=2"])
    assert code == 0
    run_dir = str(tmp / "runs" / os.listdir(tmp / "runs")[0])
    state, _, _ = checkpoint.load(run_dir)
    return run_dir, state, cifar


def check_png(path, min_size=(200, 150)):
    assert os.path.isfile(path), f"{path} was not written"
    image = Image.open(path)
    assert image.format == "PNG"
    w, h = image.size
    assert min_size[0] <= w <= 4000 and min_size[1] <= h <= 4000, f"{path}: odd size {w}x{h}"
    pixels = np.asarray(image.convert("RGB"), np.int32)
    colours = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    assert len(np.unique(colours)) > 20, f"{path}: nearly uniform image"
    return pixels


def shownet(args, capsys):
    code = shownet_main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, f"shownet {' '.join(map(str, args))} exited {code}: {captured.err}"
    return [line for line in captured.out.splitlines() if line.endswith(".png")]


def test_cost_curves(trained, tmp_path, capsys):
    run_dir, state, _ = trained
    out = tmp_path / "plots"
    written = shownet(["-f", run_dir, "--show-cost=logprob", f"--out={out}"], capsys)
    assert written == [str(out / "logprob-cost.png")]
    check_png(written[0])
    written = shownet(["-f", run_dir, "--show-cost=logprob", "--cost-idx=1", "--smooth-test-errors", f"--out={out}"],
                      capsys)
    assert written == [str(out / "logprob-error.png")]
    check_png(written[0])


def test_cost_positions_and_smoothing():
    outputs = [(e, b, {}, 40) for e in (1, 2) for b in (1, 2, 3, 4)]
    positions = show._epoch_positions(outputs, [1, 2, 3, 4])
    assert positions[(1, 1)] == 0.25 and positions[(1, 4)] == 1.0 and positions[(2, 2)] == 1.5
    np.testing.assert_allclose(show._smooth([1, 3, 5, 7], 2), [1, 2, 4, 6])


def test_default_out_dir_is_the_checkpoint_directory(trained, capsys):
    run_dir, _, _ = trained
    written = shownet(["-f", run_dir, "--show-cost=logprob", "--cost-idx=2"], capsys)
    assert written == [os.path.join(run_dir, "logprob-top-k-error.png")]
    check_png(written[0])
    os.remove(written[0])


def test_conv_filters_in_colour_and_grey(trained, tmp_path, capsys):
    run_dir, _, _ = trained
    out = tmp_path / "plots"
    [colour] = shownet(["-f", run_dir, "--show-filters=conv1", f"--out={out}"], capsys)
    assert colour == str(out / "conv1-filters.png")
    pixels = check_png(colour)
    assert (np.abs(pixels[..., 0] - pixels[..., 1]) > 30).mean() > 0.001, "colour filters drawn without colour"
    [grey] = shownet(["-f", run_dir, "--show-filters=conv1", "--no-rgb", "--norm-filters", f"--out={tmp_path}"], capsys)
    check_png(grey)


def test_local_and_fc_filters(trained, tmp_path, capsys):
    run_dir, _, _ = trained
    assert shownet(["-f", run_dir, "--show-filters=local2", f"--out={tmp_path}"], capsys) == \
        [str(tmp_path / "local2-filters.png")]
    check_png(str(tmp_path / "local2-filters.png"))
    [first] = shownet(["-f", run_dir, "--show-filters=fc10", f"--out={tmp_path}"], capsys)
    [second] = shownet(["-f", run_dir, "--show-filters=fc10", "--input-idx=1", "--channels=2", f"--out={tmp_path}"],
                       capsys)
    assert (first, second) == (str(tmp_path / "fc10-filters.png"), str(tmp_path / "fc10-filters-1.png"))
    check_png(first)
    check_png(second)


def test_filter_layouts_follow_the_weight_layouts(trained):
    """Pixel (c, y, x) of filter f is weight row (channel, row, col) as docs/DESIGN.md lays them out."""
    _, state, _ = trained
    layers = {layer["name"]: layer for layer in state["layers"]}
    w = state["params"]["conv1"]["weights"][0]
    [(_, filters)], _ = show._filter_images(layers["conv1"], layers, w, 0, np.random.default_rng(0))
    assert filters.shape == (8, 3, 5, 5)
    assert filters[6, 2, 1, 4] == w[2 * 25 + 1 * 5 + 4, 6]
    local = layers["local2"]
    w = state["params"]["local2"]["weights"][0]
    panels, note = show._filter_images(local, layers, w, 0, np.random.default_rng(0))
    modules = local["modulesY"] * local["modulesX"]
    assert len(panels) == show.LOCAL_MODULES and f"of {modules}" in note
    title, filters = panels[1]
    my, mx = (int(v) for v in title[title.index("(") + 1:-1].split(","))
    m = my * local["modulesX"] + mx
    assert filters[3, 7, 2, 0] == w[m * 8 * 9 + 7 * 9 + 2 * 3 + 0, 3]
    w = state["params"]["fc10"]["weights"][1]
    [(_, filters)], _ = show._filter_images(layers["fc10"], layers, w, 1, None)
    assert filters.shape == (10, 4, local["modulesY"], local["modulesX"])
    assert filters[9, 3, 1, 2] == w[3 * modules + 1 * local["modulesX"] + 2, 9]


def test_fc_on_a_flat_input_is_drawn_as_its_matrix(tmp_path):
    layers = {"fc1": {"name": "fc1", "type": "fc", "inputs": ["data"], "outputs": 20},
              "fc2": {"name": "fc2", "type": "fc", "inputs": ["fc1"], "outputs": 10}}
    weights = np.random.default_rng(0).standard_normal((20, 10)).astype(np.float32)
    plt = show._pyplot(False)
    fig = show.plot_filters(plt, layers["fc2"], layers, {"weights": [weights]}, 0, None, True, False)
    assert "weights 20x10" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "fc2.png")
    plt.close(fig)
    check_png(str(tmp_path / "fc2.png"))


def test_show_without_a_display_writes_the_files(trained, tmp_path, capsys, monkeypatch):
    run_dir, _, _ = trained
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = shownet_main(["-f", run_dir, "--show-cost=logprob", "--show", f"--out={tmp_path}"])
    captured = capsys.readouterr()
    assert code == 0 and "no display found" in captured.err
    check_png(str(tmp_path / "logprob-cost.png"))


def test_predictions_and_maps(trained, tmp_path, capsys):
    run_dir, _, _ = trained
    written = shownet(["-f", run_dir, "--show-preds=probs", "--show-maps=conv1", f"--out={tmp_path}"], capsys)
    assert written == [str(tmp_path / "probs-preds.png"), str(tmp_path / "conv1-maps.png")]
    for path in written:
        check_png(path)
    code = shownet_main(["-f", run_dir, "--show-preds=probs", "--only-errors", "--show-maps=fc10", f"--out={tmp_path}"])
    out = capsys.readouterr().out
    assert code == 0
    assert str(tmp_path / "fc10-maps.png") in out
    check_png(str(tmp_path / "fc10-maps.png"))
    if "no misclassified image" not in out:
        check_png(str(tmp_path / "probs-errors.png"))


def test_shownet_script(trained, tmp_path):
    run_dir, _, _ = trained
    result = subprocess.run([sys.executable, os.path.join(REPO, "shownet.py"), "-f", run_dir,
                             "--show-filters=conv1", f"--out={tmp_path}"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "conv1-filters.png")


@pytest.mark.parametrize("args, message", [
    (["--show-filters=conv9"], "no layer named 'conv9'"),
    (["--show-filters=pool1"], "'pool1' is a pool layer and has no weights"),
    (["--show-cost=conv1"], "not a cost layer"),
    (["--show-preds=fc10"], "not a softmax layer"),
    (["--show-filters=fc10", "--input-idx=2"], "--input-idx"),
    (["--show-cost=logprob", "--show-filters=conv1", "--no-rgb", "--channels=4"], "3-channel filters"),
    ([], "nothing to show"),
])
def test_bad_requests_are_one_line_errors(trained, tmp_path, capsys, args, message):
    run_dir, _, _ = trained
    assert shownet_main(["-f", run_dir, f"--out={tmp_path}"] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "3.5"
    bogus.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    assert shownet_main(["-f", str(bogus), "--show-cost=logprob"]) == 2
    assert export.main(["-f", str(bogus), f"--out={tmp_path / 'w.npz'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("not a convnet checkpoint") == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2


def test_write_features(trained, tmp_path, capsys):
    """fc10's written features equal pool1's and local2's through fc10's weights: the feature
    files hold what the net computed, in the (case, channel, row, col) order of the weights.
    local2 has neuron=relu: its features are taken after the neuron, as the layer file means."""
    run_dir, state, cifar = trained
    feats = {}
    for name in ("pool1", "local2", "fc10"):
        path = tmp_path / name
        assert convnet_main(["-f", run_dir, "--test-only=1", f"--write-features={name}", f"--feature-path={path}"]) == 0
        assert f"wrote {path / 'data_batch_6.npz'}" in capsys.readouterr().out
        with np.load(path / "data_batch_6.npz") as f:
            feats[name] = f["data"]
            labels = f["labels"]
            assert str(f["layer"]) == ("local2_neuron" if name == "local2" else name)
    with open(os.path.join(cifar, "test_batch"), "rb") as f:
        expected_labels = pickle.load(f)[b"labels"]
    np.testing.assert_array_equal(labels, expected_labels)
    n = len(expected_labels)
    layers = {layer["name"]: layer for layer in state["layers"]}
    for name in ("pool1", "local2"):
        layer = layers[name]
        assert feats[name].shape == (n, layer["outChannels"], layer["outSizeY"], layer["outSizeX"])
    assert feats["fc10"].shape == (n, 10)
    params = state["params"]["fc10"]
    assert feats["local2"].min() == 0 and feats["local2"].max() > 0  # after the relu
    expected = (feats["pool1"].reshape(n, -1).astype(np.float64) @ params["weights"][0]
                + feats["local2"].reshape(n, -1) @ params["weights"][1] + params["biases"])
    np.testing.assert_allclose(feats["fc10"], expected, rtol=1e-4, atol=1e-5)


def read_safetensors(path):
    """A reader written from the safetensors format description, independent of export.py."""
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    data = blob[8 + length:]
    tensors, end = {}, 0
    for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        assert info["dtype"] == "F32"
        begin, stop = info["data_offsets"]
        assert begin == end, "tensors must be packed back to back"
        end = stop
        tensors[name] = np.frombuffer(data[begin:stop], dtype="<f4").reshape(info["shape"])
    assert end == len(data)
    return tensors, metadata, length


def test_export_npz_and_safetensors(trained, tmp_path, capsys):
    run_dir, state, _ = trained
    expected = {}
    for name, params in state["params"].items():
        for i, w in enumerate(params["weights"]):
            expected[f"{name}.weights.{i}"] = w
        expected[f"{name}.biases"] = params["biases"]
    assert {"conv1.weights.0", "conv1.biases", "local2.weights.0", "fc10.weights.1"} <= set(expected)

    assert export.main(["-f", run_dir, "--format=npz", f"--out={tmp_path / 'w.npz'}"]) == 0
    with np.load(tmp_path / "w.npz") as f:
        assert set(f.files) == set(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(f[name], value, err_msg=name)

    target = tmp_path / "w.safetensors"
    result = subprocess.run([sys.executable, "-m", "ccn.export", "-f", run_dir, f"--out={target}"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert f"wrote {target}" in result.stdout
    tensors, metadata, header_length = read_safetensors(target)
    assert header_length % 8 == 0 and metadata["format"] == "ccn"
    assert set(tensors) == set(expected)
    for name, value in expected.items():
        assert tensors[name].dtype == np.float32
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)
