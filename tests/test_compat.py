"""Running cuda-convnet's own files: its provider names and options, its CIFAR batch layout,
and tools/compat_check.py on a folder of layer files."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ccn.cli import convnet_main
from ccn.data import get_provider
from trainer_fixtures import SMALL_NET, SMALL_PARAMS, write_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dummy_cn_names_give_flat_rows():
    with get_provider("dummy-cn-192", None, None, batch_size=5) as p:
        assert p.get_data_dims(0) == 192
        data = p.get_next_batch()[2][0]
    assert data.shape == (192, 5) and data.std() > 0.5
    with get_provider("dummy", None, None, inner_size=7, batch_size=3) as p:
        assert p.get_data_dims(0) == (3, 7, 7)
    with pytest.raises(ValueError, match="unknown data provider 'dummy-cn-x'"):
        get_provider("dummy-cn-x", None, None)




def test_dummy_cn_trains_a_conv_net_on_flat_rows(tmp_path, capsys):
    layers, params = write_net(tmp_path)
    code = convnet_main([f"--layer-def={layers}", f"--layer-params={params}", "--data-provider=dummy-cn-768",
                         "--dp-param=batch_size=8", "--dp-param=num_batches=1", "--gpu=cpu", "--epochs=1",
                         f"--save-path={tmp_path / 'runs'}", "--mini=4"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "conv1" in out.out and "test:" in out.out  # 768 rows read as 3x16x16 through channels=3


@pytest.mark.parametrize("option, message", [
    ("--inner-size=24", "--inner-size: the fashion-mnist provider has no inner size"),
    ("--dp-param=crop=3", "--dp-param crop: the dummy provider takes"),
    ("--dp-param=batch_size=x", "--dp-param batch_size=x: expected a int"),
])
def test_provider_options_are_refused_not_ignored(tmp_path, capsys, option, message):
    layers, params = write_net(tmp_path)
    provider = "fashion-mnist" if "inner" in option else "dummy"
    code = convnet_main([f"--layer-def={layers}", f"--layer-params={params}", f"--data-provider={provider}",
                         "--gpu=cpu", f"--save-path={tmp_path / 'runs'}", option, f"--data-path={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_compat_check_runs_a_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "layers-tiny.cfg").write_text(SMALL_NET)
    (corpus / "layer-params-tiny.cfg").write_text(SMALL_PARAMS)
    (corpus / "layer-params-tiny-slow.cfg").write_text(SMALL_PARAMS.replace("epsW=0.0001", "epsW=0.00001"))
    (corpus / "layers-broken.cfg").write_text(SMALL_NET.replace("type=pool", "type=nosuchtype"))
    (corpus / "layer-params-broken.cfg").write_text(SMALL_PARAMS)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "compat_check.py"), f"--corpus={corpus}"],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = proc.stdout.splitlines()
    tiny = [line for line in lines if line.startswith("layers-tiny.cfg")]
    assert len(tiny) == 2 and all(" yes    yes " in line for line in tiny), proc.stdout + proc.stderr
    broken = next(line for line in lines if line.startswith("layers-broken.cfg"))
    assert "unknown layer type 'nosuchtype'" in broken
    assert "summary: 3 pairs, 2 parsed, 2 trained, 1 failed" in proc.stdout
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
