"""Running cuda-convnet's own files: its provider names and options, its CIFAR batch layout,
and tools/compat_check.py on a folder of layer files."""
import os
import subprocess
import sys

import math

import numpy as np
import pytest

from ccn.cli import convnet_main
from ccn.data import get_provider
from trainer_fixtures import SMALL_NET, SMALL_PARAMS, write_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dummy_cn_names_give_flat_rows_of_uniform_values():
    # cuda-convnet's dummy data: uniform in [0, 1) (its gradient-check nets are scaled for it)
    with get_provider("dummy-cn-192", None, None, batch_size=50) as p:
        assert p.get_data_dims(0) == 192
        data = p.get_next_batch()[2][0]
    assert data.shape == (192, 50) and data.min() >= 0 and data.max() < 1
    assert abs(data.mean() - 0.5) < 0.02 and abs(data.var() - 1 / 12) < 0.01
    with get_provider("dummy", None, None, inner_size=7, batch_size=300) as p:
        assert p.get_data_dims(0) == (3, 7, 7)
        data = p.get_next_batch()[2][0]
    assert abs(data.mean()) < 0.02 and abs(data.std() - 1) < 0.02 and data.min() < -2  # standard normal
    with pytest.raises(ValueError, match="unknown data provider 'dummy-cn-x'"):
        get_provider("dummy-cn-x", None, None)
    # the 2012 release's dummy-ce-N: one-hot (16, cases) labels; label_rows=K for any K
    with get_provider("dummy-ce-192", None, None, batch_size=40) as p:
        assert p.get_data_dims(1) == 16
        labels = p.get_next_batch()[2][1]
    assert labels.shape == (16, 40) and set(np.unique(labels)) == {0.0, 1.0}
    assert np.all(labels.sum(axis=0) == 1) and len(set(labels.argmax(axis=0))) > 5
    with get_provider("dummy", None, None, label_rows=3, batch_size=4) as p:
        assert p.get_data_dims(1) == 3 and p.get_next_batch()[2][1].shape == (3, 4)
    with pytest.raises(ValueError, match="label_rows must be an int >= 0"):
        get_provider("dummy", None, None, label_rows=-1)




def test_dummy_cn_trains_a_conv_net_on_flat_rows(tmp_path, capsys):
    layers, params = write_net(tmp_path)
    code = convnet_main([f"--layer-def={layers}", f"--layer-params={params}", "--data-provider=dummy-cn-768",
                         "--batch-size=8", "--num-batches=1", "--gpu=cpu", "--epochs=1",
                         f"--save-path={tmp_path / 'runs'}", "--mini=4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "conv1" in out.out and "|  test " in out.out  # 768 rows read as 3x16x16 through channels=3


@pytest.mark.parametrize("option, message", [
    ("--inner-size=24", "--inner-size: the fashion-mnist provider does not take it (cifar-cropped, dummy, image, images do)"),
    ("--crop-border=3", "--crop-border: the dummy provider does not take it (cifar-cropped do)"),
    ("--batch-size=x", "--batch-size: invalid int value"),
])
def test_provider_options_are_refused_not_ignored(tmp_path, capsys, option, message):
    layers, params = write_net(tmp_path)
    provider = "fashion-mnist" if "inner" in option else "dummy"
    code = _main_exit_code([f"--layer-def={layers}", f"--layer-params={params}", f"--data-provider={provider}",
                         "--gpu=cpu", f"--save-path={tmp_path / 'runs'}", option, f"--data-path={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err


def _main_exit_code(argv):
    """convnet_main's status; argparse's own errors (bad values) exit with 2 too."""
    try:
        return convnet_main(argv)
    except SystemExit as stop:
        return stop.code


def test_compat_check_runs_a_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "layers-tiny.cfg").write_text(SMALL_NET)
    (corpus / "layer-params-tiny.cfg").write_text(SMALL_PARAMS)
    (corpus / "layer-params-tiny-slow.cfg").write_text(SMALL_PARAMS.replace("epsW=0.0001", "epsW=0.00001"))
    (corpus / "layers-broken.cfg").write_text(SMALL_NET.replace("type=pool", "type=nosuchtype"))
    (corpus / "layer-params-broken.cfg").write_text(SMALL_PARAMS)
    # a treefc net runs on dummy-lr-N (its class tree); a definition without a params file and a
    # net whose init function's module is missing are expected failures, not failures
    (corpus / "layers-tree.cfg").write_text(SMALL_NET.replace("[fc10]\ntype=fc", "[fc10]\ntype=treefc")
                                            .replace("outputs=10\n", ""))
    (corpus / "layer-params-tree.cfg").write_text(SMALL_PARAMS)
    (corpus / "layers-alone.cfg").write_text(SMALL_NET)
    (corpus / "layers-initw.cfg").write_text(SMALL_NET.replace("initW=0.01", "initWFunc=nosuchinitmodule.makew(fc10)"))
    (corpus / "layer-params-initw.cfg").write_text(SMALL_PARAMS)
    env = dict(os.environ)  # the ccn this test runs with (installed, or a dev build)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "compat_check.py"), f"--corpus={corpus}"],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = proc.stdout.splitlines()
    tiny = [line for line in lines if line.startswith("layers-tiny.cfg")]
    assert len(tiny) == 2 and all(" yes    yes " in line for line in tiny), proc.stdout + proc.stderr
    broken = next(line for line in lines if line.startswith("layers-broken.cfg"))
    assert "unknown layer type 'nosuchtype'" in broken
    assert " yes    yes " in next(line for line in lines if line.startswith("layers-tree.cfg")), proc.stdout
    assert "n/a" in next(line for line in lines if line.startswith("layers-alone.cfg"))
    initw = next(line for line in lines if line.startswith("layers-initw.cfg"))
    assert " n/a " in initw and "cannot import module 'nosuchinitmodule'" in initw
    assert "summary: 6 pairs, " in proc.stdout and ", 3 trained, 0 ran but diverged (NaN/Inf on this data), " \
        "1 failed, 2 expected failures" in proc.stdout
    assert proc.returncode == 1


def _write_both_layouts(root, n=6, seed=5):
    """The same images as the python release and as cuda-convnet's own batches."""
    import pickle
    rng = np.random.default_rng(seed)
    images = {b: rng.integers(0, 256, (n, 3072), dtype=np.uint8) for b in range(1, 7)}
    labels = {b: [int(x) for x in rng.integers(0, 10, n)] for b in range(1, 7)}
    mean = np.mean([images[b].astype(np.float64) for b in range(1, 6)], axis=(0, 1))
    python, own = root / "python", root / "own"
    python.mkdir()
    own.mkdir()
    for b in range(1, 7):
        name = "test_batch" if b == 6 else f"data_batch_{b}"
        with open(python / name, "wb") as f:
            pickle.dump({b"data": images[b], b"labels": labels[b]}, f)
        with open(own / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": np.ascontiguousarray(images[b].T), "labels": labels[b]}, f)
    with open(python / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"c%d" % i for i in range(10)], b"num_vis": 3072}, f)
    with open(own / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072,
                     "data_mean": mean.reshape(3072, 1).astype(np.float32)}, f)
    return str(python), str(own), images, mean


@pytest.mark.parametrize("provider, params", [("cifar", {}), ("cifar-cropped", {"inner_size": 24})])
def test_both_cifar_layouts_give_the_same_images(tmp_path, provider, params):
    python, own, images, mean = _write_both_layouts(tmp_path)
    for batches, test in (([1, 2], False), ([6], True)):
        with get_provider(provider, python, batches, test=test, seed=4, **params) as a, \
                get_provider(provider, own, batches, test=test, seed=4, **params) as b:
            for _ in batches:
                (_, _, (da, la)), (_, _, (db, lb)) = a.get_next_batch(), b.get_next_batch()
                np.testing.assert_allclose(da, db, rtol=0, atol=1e-4)
                np.testing.assert_array_equal(la, lb)
    with get_provider("cifar", own, [6], test=True) as p:  # independent reference: pixels minus mean
        data = p.get_next_batch()[2][0]
    np.testing.assert_allclose(data, images[6].T.astype(np.float64) - mean[:, None], atol=1e-3)


# ---------------------------------------------------------------- the originals' syntax and keys

from ccn import config  # noqa: E402
from ccn.config import ConfigError, load_layers  # noqa: E402

DIMS = {0: (3, 16, 16), 1: 1}


def _load(tmp_path, net, params, labels=1):
    layers, layer_params = write_net(tmp_path, net, params)
    return {layer["name"]: layer for layer in load_layers(layers, layer_params, {**DIMS, 1: labels})}


def test_duplicate_sections_merge_like_python2(tmp_path, capsys):
    net = SMALL_NET + "\n[conv1]\nstride=1\nfilterSize=3\n"  # conv1 again: later keys win
    params = SMALL_PARAMS + "\n[conv1]\nepsW=0.5\n"
    layers = _load(tmp_path, net, params)
    assert layers["conv1"]["stride"] == 1 and layers["conv1"]["filterSize"] == 3
    assert layers["conv1"]["padding"] == 2  # kept from the first [conv1]
    assert layers["conv1"]["epsW"] == [{"type": "const", "base": 0.5}] and layers["conv1"]["momW"] == [0.9]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("[conv1] given twice" in line and "merged" in line for line in err)


def test_duplicate_key_takes_the_later_value_with_a_warning(tmp_path, capsys):
    layers = _load(tmp_path, SMALL_NET.replace("stride=2\ninitW", "stride=2\nstride=1\ninitW"), SMALL_PARAMS)
    assert layers["conv1"]["stride"] == 1
    assert "[conv1] stride: given twice" in capsys.readouterr().err


def test_params_section_for_absent_layer_warns(tmp_path, capsys):
    layers = _load(tmp_path, SMALL_NET, SMALL_PARAMS + "\n[conv9]\nepsW=0.1\n")
    assert "conv9" not in layers
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[conv9] has no layer of this name" in err[0]


def test_wcnorm_is_accepted_and_ignored_as_by_the_2012_parser(tmp_path, capsys):
    plain = _load(tmp_path, SMALL_NET, SMALL_PARAMS)
    zero = _load(tmp_path, SMALL_NET, SMALL_PARAMS.replace("[conv1]\n", "[conv1]\nwcnorm=0.00\n"))
    assert zero["conv1"] == plain["conv1"] and capsys.readouterr().err == ""
    set_ = _load(tmp_path, SMALL_NET, SMALL_PARAMS.replace("[conv1]\n", "[conv1]\nwcnorm=0.5\n"))
    assert set_["conv1"] == plain["conv1"]
    assert "[conv1] wcnorm: ignored, as by the 2012 release's parser" in capsys.readouterr().err


def test_kernel_tuning_keys_are_accepted_and_change_nothing(tmp_path):
    plain = _load(tmp_path, SMALL_NET, SMALL_PARAMS)
    tuned = _load(tmp_path, SMALL_NET.replace("stride=2\ninitW", "stride=2\nsumWidth=3\npartialSum=4\n"
                                              "randSparse=0\nfilterChannels=3\ninitW"), SMALL_PARAMS)
    for key in ("filters", "filterChannels", "groups", "modulesX"):
        assert tuned["conv1"][key] == plain["conv1"][key]


@pytest.mark.parametrize("extra, key, message", [
    ("randSparse=1\n", "randSparse", "needs groups > 1"),
    ("randSparse=1\ngroups=2\nfilterChannels=2\n", "filterChannels", "must divide channels"),
    ("filterChannels=2\n", "filterChannels", "not channels/groups"),
    ("initCFunc=mod.f\n", "initCFunc", "randSparse"),
])
def test_sparse_connectivity_errors_in_one_line(tmp_path, extra, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, SMALL_NET.replace("stride=2\ninitW", "stride=2\n" + extra + "initW"), SMALL_PARAMS)
    assert (err.value.section, err.value.key) == ("conv1", key) and "\n" not in str(err.value)


def test_2012_learning_keys(tmp_path):
    params = SMALL_PARAMS.replace("wc=0.0005\n\n[fc10]", "wc=0.0005\nwball=0.00\nschedW=exp[100,0]\n"
                                  "schedB=default\nsuperEps=0\nsuperMom=0\nupdatePeriod=1\n\n[fc10]", 1)
    params += "\n[fc10]\nschedW=dexp[10,0.5,4]\nwball=0.1\n"
    layers = _load(tmp_path, SMALL_NET, params)
    conv, fc = layers["conv1"], layers["fc10"]
    assert conv["epsW"] == [{"type": "exp", "base": 0.0001, "tgtFactor": 100.0}]
    assert conv["epsB"] == {"type": "const", "base": 0.0002} and "wball" not in conv
    assert fc["epsW"] == [{"type": "dexp", "base": 0.0001, "tgtFactor": 10.0, "noiseStdev": 0.5, "numSteps": 4}]
    assert fc["wball"] == [0.1]
    # exp: base * tgtFactor^-p, as the 2012 release's pow(base, 1 + p*(log(base/tgt)/log(base) - 1))
    base, tgt, p = 0.0001, 100.0, 0.3
    expected = base ** (1 + p * (math.log(base / tgt) / math.log(base) - 1))
    assert config.schedule_value(conv["epsW"][0], p) == pytest.approx(expected, rel=1e-12)
    # noise: 1 + |N(0,1)| * noiseStdev, from the rng given
    noisy = dict(fc["epsW"][0])
    values = [config.schedule_value(noisy, 0.0, np.random.default_rng(k)) for k in range(50)]
    draws = [abs(np.random.default_rng(k).standard_normal()) for k in range(50)]
    np.testing.assert_allclose(values, [0.0001 * (1 + 0.5 * d) for d in draws], rtol=1e-12)


def test_topk_on_element_costs_is_ignored_as_by_the_2012_parser(tmp_path, capsys):
    net = (SMALL_NET.replace("[probs]\ntype=softmax\ninputs=fc10", "[probs]\ntype=neuron\nneuron=logistic\n"
                             "inputs=fc10").replace("type=cost.logreg", "type=cost.crossent2"))
    layers = _load(tmp_path, net, SMALL_PARAMS + "\n[logprob]\ntopk=5\n", labels=10)
    assert "topk" not in layers["logprob"]
    assert "[logprob] topk: ignored, as by the 2012 release's parser" in capsys.readouterr().err


def test_2012_schedules_named_and_jumpy(tmp_path, capsys):
    """The 2012 parser's own form (name=value), jdexp, and sched (never read there)."""
    params = SMALL_PARAMS + ("\n[conv1]\nschedW=dexp[tgtFactor=250,noiseStdev=0,numSteps=4]\n"
                             "schedB=exp[tgtFactor=10,noiseStdev=0.5]\nsched=linear[1000]\n"
                             "\n[fc10]\nschedW=jdexp[100,0,4]\n")
    layers = _load(tmp_path, SMALL_NET, params)
    conv, fc = layers["conv1"], layers["fc10"]
    assert conv["epsW"] == [{"type": "dexp", "base": 0.0001, "tgtFactor": 250.0, "numSteps": 4}]
    assert conv["epsB"] == {"type": "exp", "base": 0.0002, "tgtFactor": 10.0, "noiseStdev": 0.5}
    assert "[conv1] sched: ignored, as by the 2012 release's parser" in capsys.readouterr().err
    # jdexp: dexp's rates 1, 100^(-1/3), 100^(-2/3), 1/100 (base 1), but in the second half of a
    # step's interval, for progress in (0.2, 0.9), the geometric mean with the previous rate
    jdexp = dict(fc["epsW"][0], base=1.0)
    rates = [1.0, 100 ** (-1 / 3), 100 ** (-2 / 3), 0.01]
    for progress, expected in [(0.1, rates[0]), (0.2, rates[0]), (0.3, rates[1]), (0.4, (rates[1] * rates[0]) ** 0.5),
                               (0.6, rates[2]), (0.7, (rates[2] * rates[1]) ** 0.5), (0.8, rates[3]),
                               (0.9, rates[3]), (1.0, rates[3])]:
        assert config.schedule_value(jdexp, progress) == pytest.approx(expected, rel=1e-12), progress
    assert config.schedule_value(dict(jdexp, type="dexp"), 0.4) == pytest.approx(rates[1], rel=1e-12)


@pytest.mark.parametrize("extra, key", [("updatePeriod=-1", "updatePeriod"), ("superEps=0.1", "superEps"),
                                        ("schedW=tanh[1,1]", "schedW"), ("schedW=linear[1]", "schedW"),
                                        ("schedW=dexp[1000,4]", "schedW"),
                                        ("schedW=dexp[tgtFactor=2,noiseStdev=0,steps=4]", "schedW"),
                                        ("epsW=exp[0.1;10]\nschedW=linear[1,0]", "schedW")])
def test_2012_learning_keys_refused_in_one_line(tmp_path, extra, key):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, SMALL_NET, SMALL_PARAMS + f"\n[conv1]\n{extra}\n")
    assert (err.value.section, err.value.key) == ("conv1", key) and "\n" not in str(err.value)


def test_dropout_enable_and_pool_sum_keys(tmp_path):
    net = SMALL_NET.replace("[fc10]\ntype=fc\ninputs=pool1", "[drop]\ntype=dropout2\ninputs=pool1\nkeep=0.7\n\n"
                            "[fc10]\ntype=fc\ninputs=drop").replace("pool=max", "pool=avg\nsum=0")
    layers = _load(tmp_path, net, SMALL_PARAMS + "\n[drop]\nenable=false\n")
    assert layers["drop"]["type"] == "dropout2" and layers["drop"]["keep"] == 0.7
    assert layers["drop"]["enable"] is False and layers["pool1"]["pool"] == "avg" and "sum" not in layers["pool1"]
    assert _load(tmp_path, net.replace("sum=0", "sum=1"), SMALL_PARAMS)["pool1"]["sum"] is True
    with pytest.raises(ConfigError, match="pool=avg only"):
        _load(tmp_path, net.replace("pool=avg\nsum=0", "pool=max\nsum=1"), SMALL_PARAMS)


# ---------------------------------------------------------------- init functions and constraints

INIT_MODULE = '''
import numpy as np

def weights(name, idx, shape, params=None):
    rng = np.random.default_rng(int(params[0]))
    return (float(params[1]) * rng.standard_normal(shape)).astype(np.float32)

def biases(name, shape, params=None):
    return np.full(shape, float(params[0]), dtype=np.float32)

def broken(name, idx, shape, params=None):
    raise KeyError("no such table")
'''


def _run_with(tmp_path, capsys, net, params, extra=()):
    layers, layer_params = write_net(tmp_path, net, params)
    code = convnet_main([f"--layer-def={layers}", f"--layer-params={layer_params}", "--data-provider=dummy",
                         "--batch-size=8", "--num-batches=1", "--gpu=cpu", "--epochs=1",
                         f"--save-path={tmp_path / 'runs'}", "--mini=8", *extra])
    return code, capsys.readouterr()


def test_init_functions_from_the_python_path(tmp_path, capsys, monkeypatch):
    from ccn import checkpoint
    (tmp_path / "myinit.py").write_text(INIT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = SMALL_NET.replace("initW=0.0001", "initWFunc=myinit.weights(7, 0.5)\ninitBFunc=myinit.biases(0.25)")
    params = SMALL_PARAMS.replace("epsW=0.0001\nepsB=0.0002", "epsW=0\nepsB=0", 1)  # conv1 frozen
    code, out = _run_with(tmp_path, capsys, net, params)
    assert code == 0, out.err
    runs = tmp_path / "runs"
    state, _, _ = checkpoint.load(str(runs / os.listdir(runs)[0]))
    conv = state["params"]["conv1"]
    expected = 0.5 * np.random.default_rng(7).standard_normal(conv["weights"][0].shape)
    np.testing.assert_allclose(conv["weights"][0], expected, rtol=1e-6)
    np.testing.assert_array_equal(conv["biases"], np.full(conv["biases"].shape, 0.25, np.float32))


@pytest.mark.parametrize("spec, message", [
    ("nomodule_xyz.f", "cannot import module 'nomodule_xyz'"),
    ("myinit.nothere", "has no function 'nothere'"),
    ("myinit.broken", "failed: KeyError"),
])
def test_init_function_errors_are_one_line(tmp_path, capsys, monkeypatch, spec, message):
    (tmp_path / "myinit.py").write_text(INIT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = _run_with(tmp_path, capsys, SMALL_NET.replace("initW=0.0001", f"initWFunc={spec}"), SMALL_PARAMS)
    assert code == 2 and message in out.err and len(out.err.strip().splitlines()) == 1


def test_wball_and_wcnorm_constraints_match_numpy():
    from ccn import constraints
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 5)).astype(np.float32)
    w[:, 1] *= 0.01  # a column inside the ball stays as it is
    fc = {"type": "fc", "epsW": [{"base": 0.1}], "wball": [0.1]}
    got = constraints.constrain(fc, [w])[0]
    radius = 0.1 * 12
    norms = np.linalg.norm(w.astype(np.float64), axis=0)
    expected = w * np.where(norms > radius, radius / norms, 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_array_equal(got[:, 1], w[:, 1])
    conv = {"type": "conv", "epsW": [{"base": 0.1}], "wcNormMax": [0.05], "wcNormMin": [0.02]}
    got = constraints.constrain(conv, [w])[0]
    norm = np.sqrt(((w - w.mean(axis=0)) ** 2).sum(axis=0)) / 12
    clamp = np.clip(norm, 0.02, 0.05)
    np.testing.assert_allclose(got, w * clamp / norm, rtol=1e-5)
    frozen = dict(fc, epsW=[{"base": 0.0}])
    assert constraints.constrain(frozen, [w]) == [None]


def test_trainer_applies_wball_after_each_update(tmp_path, capsys):
    from ccn import checkpoint
    params = SMALL_PARAMS.replace("[fc10]\nepsW=0.0001", "[fc10]\nwball=0.001\nepsW=0.01")
    code, out = _run_with(tmp_path, capsys, SMALL_NET, params)
    assert code == 0, out.err
    runs = tmp_path / "runs"
    state, _, _ = checkpoint.load(str(runs / os.listdir(runs)[0]))
    w = state["params"]["fc10"]["weights"][0]
    assert np.linalg.norm(w, axis=0).max() <= 0.001 * w.shape[0] * (1 + 1e-5)


def test_replica_lists_parse_and_run(tmp_path, capsys):
    net = SMALL_NET.replace("stride=2\ninitW", "stride=2\ngpu=0,1\ninitW")
    layers = _load(tmp_path, net, SMALL_PARAMS)
    assert layers["conv1"]["gpu"] == 0 and layers["conv1"]["replicas"] == [0, 1]
    code, out = _run_with(tmp_path, capsys, net, SMALL_PARAMS, ["--gpu=cpu,cpu"])
    assert code == 0, out.err
    with pytest.raises(ConfigError, match="lists a device twice"):
        _load(tmp_path, net.replace("gpu=0,1", "gpu=1,1"), SMALL_PARAMS)


def test_filters_count_one_group_as_in_the_originals(tmp_path):
    net = SMALL_NET.replace("channels=3\nfilters=8", "channels=3\nfilters=4\ngroups=3").replace(
        "channels=8", "channels=12")
    layers = _load(tmp_path, net, SMALL_PARAMS)
    conv = layers["conv1"]
    assert conv["filters"] == 12 and conv["outChannels"] == 12 and conv["filterChannels"] == 1
    from ccn import _core
    net = _core.Net(list(layers.values()), ["cpu"], 0)
    assert net.get_params("conv1")["weights"][0].shape == (1 * 5 * 5, 12)


def test_hs_is_dropout2_with_required_keep(tmp_path):
    net = SMALL_NET.replace("[fc10]\ntype=fc\ninputs=pool1", "[hs]\ntype=hs\ninputs=pool1\nkeep=0.6\n\n"
                            "[fc10]\ntype=fc\ninputs=hs")
    layers = _load(tmp_path, net, SMALL_PARAMS + "\n[hs]\nenable=1\n")
    assert (layers["hs"]["keep"], layers["hs"]["enable"]) == (0.6, True)
    with pytest.raises(ConfigError, match="keep"):
        _load(tmp_path, net.replace("keep=0.6\n", ""), SMALL_PARAMS)


# ---------------------------------------------------------------- the originals' command lines

from ccn import options  # noqa: E402
from ccn.cli import shownet_main  # noqa: E402
from ccn.show import SHOWNET_REFUSED  # noqa: E402


@pytest.mark.parametrize("option", sorted(options.CONVNET_REFUSED))
def test_convnet_refuses_originals_options_in_one_line(capsys, option):
    assert convnet_main([f"{option}=x", "--layer-def=a", "--layer-params=b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option} is not supported: " in err[0]


@pytest.mark.parametrize("option", sorted(SHOWNET_REFUSED))
def test_shownet_refuses_originals_options_in_one_line(capsys, option):
    assert shownet_main(["-f", "nowhere", f"{option}=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option} is not supported: " in err[0]


def test_originals_options_with_their_meaning(tmp_path, capsys):
    from ccn import checkpoint
    layers, params = write_net(tmp_path)
    folder, def_name, params_name = os.path.dirname(layers), os.path.basename(layers), os.path.basename(params)
    save = tmp_path / "mine"
    code = convnet_main([f"--layer-path={folder}", f"--layer-def={def_name}", f"--layer-params={params_name}",
                         "--data-provider=dummy", "--batch-size=8", "--num-batches=1",
                         "--gpu=cpu", "--epochs=1", f"--save-file={save}", "--conserve-mem=1", "--force-save=1"])
    assert code == 0, capsys.readouterr().err
    assert checkpoint.list_checkpoints(str(save))  # the run went to --save-file
    code = convnet_main([f"--load-file={save}", "--test-only=1"])
    assert code == 0 and "test:" in capsys.readouterr().out


def test_scalar_mean_replaces_the_mean_image(tmp_path):
    python, own, images, mean = _write_both_layouts(tmp_path)
    with get_provider("cifar", own, [6], test=True, scalar_mean=100.0) as p:
        data = p.get_next_batch()[2][0]
    np.testing.assert_allclose(data, images[6].T.astype(np.float64) - 100.0, atol=1e-4)


SPARSE_NET = SMALL_NET.replace("channels=3\nfilters=8", "channels=3\nfilters=4\ngroups=2\nrandSparse=1\n"
                               "filterChannels=3").replace("channels=8", "channels=8")


def test_sparse_connectivity_is_seeded_and_kept_in_the_checkpoint(tmp_path, capsys, monkeypatch):
    from ccn import checkpoint
    layers = _load(tmp_path, SPARSE_NET, SMALL_PARAMS)
    conns = layers["conv1"]["filterConns"]
    assert len(conns) == 1 and len(conns[0]) == 6 and sorted(conns[0][:3]) == [0, 1, 2] == sorted(conns[0][3:])
    assert _load(tmp_path, SPARSE_NET, SMALL_PARAMS)["conv1"]["filterConns"] == conns  # seeded
    code, out = _run_with(tmp_path, capsys, SPARSE_NET, SMALL_PARAMS)
    assert code == 0, out.err
    runs = tmp_path / "runs"
    state, _, _ = checkpoint.load(str(runs / os.listdir(runs)[0]))
    saved = next(layer for layer in state["layers"] if layer["name"] == "conv1")
    assert saved["filterConns"] == conns
    # initCFunc: the user's connectivity
    (tmp_path / "myconns.py").write_text("def conns(name, idx, shape, params=None):\n    return [2, 0, 1, 1, 2, 0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    custom = _load(tmp_path, SPARSE_NET.replace("filterChannels=3", "filterChannels=3\ninitCFunc=myconns.conns"),
                   SMALL_PARAMS)
    assert custom["conv1"]["filterConns"] == [[2, 0, 1, 1, 2, 0]]
    (tmp_path / "myconns.py").write_text("def conns(name, idx, shape, params=None):\n    return [2, 2, 1, 1, 2, 0]\n")
    import importlib, sys
    sys.modules.pop("myconns", None)
    importlib.invalidate_caches()
    with pytest.raises(ConfigError, match="not a permutation"):
        _load(tmp_path, SPARSE_NET.replace("filterChannels=3", "filterChannels=3\ninitCFunc=myconns.conns"),
              SMALL_PARAMS)


def test_image_layers_parse_as_the_2012_release(tmp_path):
    net = SMALL_NET.replace("[fc10]\ntype=fc\ninputs=pool1", "[blur]\ntype=blur\ninputs=pool1\nchannels=8\n"
                            "filterSize=3\nstdev=1.5\n\n[href]\ntype=href\ninputs=blur\n\n[nails]\ntype=nailbed\n"
                            "inputs=href\nchannels=8\nstride=3\n\n[fc10]\ntype=fc\ninputs=nails")
    layers = _load(tmp_path, net, SMALL_PARAMS)  # pool1: 8 maps of 4x4 (16x16 input)
    taps = np.exp(-((1 - np.arange(3)) ** 2) / (2 * 1.5 ** 2))
    np.testing.assert_allclose(layers["blur"]["filter"], taps / taps.sum(), rtol=1e-12)
    assert layers["href"]["outChannels"] == 8 and layers["href"]["outSizeX"] == 4
    # 4 pixels, stride 3: ceil(4/3) = 2 outputs, start (4 - 3*1) // 2 = 0
    assert (layers["nails"]["outputsX"], layers["nails"]["start"], layers["nails"]["outputs"]) == (2, 0, 8 * 2 * 2)
    with pytest.raises(ConfigError, match="must be 3, 5, 7 or 9"):
        _load(tmp_path, net.replace("filterSize=3", "filterSize=4"), SMALL_PARAMS)


def test_quantization_keys_default_only(tmp_path):
    layers = _load(tmp_path, SMALL_NET, SMALL_PARAMS + "\n[pool1]\nquantF=default\nquantB=default\n")
    assert "quantF" not in layers["pool1"]
    with pytest.raises(ConfigError, match="only default") as err:
        _load(tmp_path, SMALL_NET, SMALL_PARAMS + "\n[pool1]\nquantF=half\n")
    assert (err.value.section, err.value.key) == ("pool1", "quantF")


def _with_shared_copy(base):
    """base's conv1 plus conv1b, a sparse conv sharing conv1's weights, summed into pool1."""
    return base.replace("[pool1]", "[conv1b]\ntype=conv\ninputs=data\nchannels=3\nfilters=4\ngroups=2\n"
                        "randSparse=1\nfilterChannels=3\nfilterSize=5\npadding=2\nstride=2\n"
                        "weightSource=conv1\n\n[sum]\ntype=eltsum\ninputs=conv1,conv1b\n\n[pool1]").replace(
        "type=pool\npool=max\ninputs=conv1", "type=pool\npool=max\ninputs=sum")


def test_shared_sparse_weights_share_the_connectivity(tmp_path):
    params = SMALL_PARAMS + "\n[conv1b]\nepsW=0.1\nepsB=0.1\nmomW=0\nmomB=0\n"
    layers = _load(tmp_path, _with_shared_copy(SPARSE_NET), params)
    assert layers["conv1b"]["filterConns"] == layers["conv1"]["filterConns"]
    with pytest.raises(ConfigError, match="randSparse but 'conv1' does not"):
        _load(tmp_path, _with_shared_copy(SMALL_NET), params)  # conv1 dense: nothing to share


def test_update_period_averages_k_minibatches_into_one_update(tmp_path):
    """fc10 with updatePeriod=2 (conv1 frozen): unchanged after minibatch 1; after minibatch 2,
    w += eps * (g1 + g2) / (2 * mini), g1 and g2 the two minibatches' gradient sums at the
    initial weights (computed here on a fresh net with the same seed)."""
    from ccn import _core
    from ccn.trainer import Trainer
    from ccn import options
    params = SMALL_PARAMS.replace("epsW=0.0001\nepsB=0.0002", "epsW=0\nepsB=0", 1).replace(
        "[fc10]\nepsW=0.0001\nepsB=0.0002\nmomW=0.9\nmomB=0.9\nwc=0.0005", "[fc10]\nepsW=0.01\nepsB=0.02\nmomW=0\n"
        "momB=0\nwc=0\nupdatePeriod=2")
    layers_path, params_path = write_net(tmp_path, SMALL_NET, params)
    assert _load(tmp_path, SMALL_NET, params)["fc10"]["updatePeriod"] == 2
    op = options.merge({"layer_def": layers_path, "layer_params": params_path, "data_provider": "dummy",
                        "batch_size": 8, "num_batches": 1, "gpu": ["cpu"], "mini": 4, "epochs": 1,
                        "save_path": str(tmp_path / "runs")})
    trainer = Trainer(op)
    initial = trainer.net.get_params("fc10")
    epoch, batchnum, (x, y) = trainer.train_dp.get_next_batch()
    reference = _core.Net(trainer.layers, ["cpu"], op["seed"])
    config.set_learning_params(reference, trainer.layers, 0.0)  # frozen layers compute no gradient
    grads = []
    for s, e in ((0, 4), (4, 8)):
        reference.fprop([np.ascontiguousarray(x[:, s:e]), np.ascontiguousarray(y[:, s:e])], True)
        reference.bprop()
        grads.append(reference.get_grads("fc10"))
    trainer.net.stage_batch([x, y])
    assert trainer.net.begin_batch() == 8
    trainer._set_learning_params()
    trainer._train_batch(8, epoch, batchnum)
    after = trainer.net.get_params("fc10")
    expected = initial["weights"][0] + 0.01 * (grads[0]["weights"][0] + grads[1]["weights"][0]) / (2 * 4)
    np.testing.assert_allclose(after["weights"][0], expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(after["weights"][0], initial["weights"][0])
    trainer.train_dp.close()
    trainer.test_dp.close()
