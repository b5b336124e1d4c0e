"""shownet.py --show-similar: nearest training images in a layer's feature space. The exact
search against a float64 brute force written here; the features against the net's own
activations; the cache reused; the figure's content; faiss (when installed) finding nearly
the same neighbours."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from ccn import retrieval
from ccn.cli import convnet_main, shownet_main
from trainer_fixtures import SMALL_NET, SMALL_PARAMS, write_cifar, write_net

NET = SMALL_NET.replace("[fc10]\ntype=fc\ninputs=pool1\n", "[hid]\ntype=fc\ninputs=pool1\noutputs=16\ninitW=0.05\n"
                        "neuron=relu\n\n[fc10]\ntype=fc\ninputs=hid\n")
PARAMS = SMALL_PARAMS.replace("[fc10]", "[hid]\nepsW=0.001\nepsB=0.002\nmomW=0.9\nmomB=0.9\nwc=0\n\n[fc10]")


def brute_force(train, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - train[None, :, :]) ** 2).sum(axis=2)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def test_exact_search_matches_brute_force(rng):
    train = rng.normal(size=(3000, 17)).astype(np.float32)
    queries = rng.normal(size=(2100, 17)).astype(np.float32)  # more than one block of queries
    found = retrieval.exact_neighbours(train, queries, 5)
    np.testing.assert_array_equal(found, brute_force(train, queries, 5))
    assert retrieval.exact_neighbours(train[:3], queries[:4], 3).shape == (4, 3)


def test_class_agreement_counts_pairs():
    found = np.array([[0, 1], [2, 0]])
    assert retrieval.class_agreement(found, np.array([1, 1, 2]), np.array([1, 2])) == 0.75


def test_faiss_finds_nearly_the_exact_neighbours(rng):
    pytest.importorskip("faiss")
    train = rng.normal(size=(5000, 16)).astype(np.float32)
    queries = rng.normal(size=(200, 16)).astype(np.float32)
    exact, approx = brute_force(train, queries, 5), retrieval.neighbours(train, queries, 5, "faiss")
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx, exact)])
    assert recall > 0.9


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("similar")
    cifar = write_cifar(str(tmp / "cifar"))
    layers, params = write_net(tmp, net=NET, params=PARAMS)
    assert convnet_main([f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}",
                         "--data-provider=cifar", f"--save-path={tmp / 'runs'}", "--train-range=1-5", "--test-range=6",
                         "--mini=16", "--gpu=cpu", "--seed=1", "--epochs=3"]) == 0
    return str(tmp / "runs" / os.listdir(tmp / "runs")[0])


def test_show_similar_draws_queries_beside_neighbours_and_caches(run_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "plots"
    assert shownet_main(["-f", run_dir, "--show-similar=hid", "--neighbours=4", "--queries=3", f"--out={out}"]) == 0
    printed = capsys.readouterr().out
    share = float(re.search(r"([\d.]+)% of the 4 nearest training images of 40 test images", printed).group(1)) / 100
    cache = [f for f in os.listdir(os.path.join(run_dir, "features")) if f.startswith("similar-hid-")]
    assert len(cache) == 1
    z = np.load(os.path.join(run_dir, "features", cache[0]))
    assert z["train"].shape == (200, 16) and z["test"].shape == (40, 16) and (z["train"] >= 0).all()
    found = brute_force(z["train"], z["test"], 4)
    expected = (z["train_labels"][found] == z["test_labels"][:, None]).mean()
    assert abs(share - expected) < 1e-3 and share > 0.3  # the classes are learnable: well above chance (0.1)
    # the figure: 3 rows of 1 + 4 images, green or red titles, not blank
    png = out / "hid-similar-k4-queries3-test6-3.5.png"
    image = np.asarray(Image.open(png).convert("RGB"), np.float32)
    assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 20
    green = ((image[..., 1] > 100) & (image[..., 0] < 80) & (image[..., 2] < 80)).sum()
    red = ((image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)).sum()
    assert green + red > 50
    # a second request reuses the cached features
    monkeypatch.setattr(retrieval, "layer_features", lambda *a: pytest.fail("features computed again"))
    assert shownet_main(["-f", run_dir, "--show-similar=hid", "--neighbours=2", f"--out={out}"]) == 0
    assert sorted(os.listdir(out)) == ["hid-similar-k2-test6-3.5.png", "hid-similar-k4-queries3-test6-3.5.png"]


def test_show_similar_names_a_missing_layer(run_dir, capsys):
    assert shownet_main(["-f", run_dir, "--show-similar=nope"]) == 2
    assert "--show-similar: no layer named 'nope'" in capsys.readouterr().err
