"""treefc (a weight column per class-tree node; a class's weights sum its path from the root):
forward and the update rule against float64 NumPy, gradients against finite differences, the
class tree's sources (dummy-lr-N, batches.meta) and its errors, training and resuming."""
import os
import pickle

import numpy as np
import pytest

from ccn import _core, config
from ccn.cli import convnet_main
from ccn.data import get_provider
from ccn.data.base import CorruptDataError, class_tree_parents
from ccn.data.dummy import SMALL_CLASS_TREE
from oprunner import assert_close
from test_net import check_gradients, data, fc, labels, learning, logreg, neuron, simple

N = 7
PARENTS = class_tree_parents(*SMALL_CLASS_TREE, 10, "test")  # 17 nodes, root 16


def treefc(name, src, parents=PARENTS, classes=10, **kw):
    layer = dict(name=name, type="treefc", inputs=[src["name"]], outputs=classes, treeParents=list(parents),
                 initW=0.4, initB=0.05, **learning(1))
    layer.update(kw)
    return layer


def tree_net(rng, rows=6):
    d, lab = data("data", 0, rows=rows), data("labels", 1, rows=1)
    f1 = fc("fc1", d, 5)
    t = neuron("tanh", f1, "tanh[1.0,1.0]")
    tree = treefc("tree", t)
    sm = simple("probs", "softmax", tree)
    layers = [d, lab, f1, t, tree, sm, logreg("logprob", lab, sm)]
    batch = [rng.uniform(-1, 1, (rows, N)).astype(np.float32), labels(rng, 10)]
    return layers, batch


def ancestors_matrix(parents, classes):
    """P (nodes, classes): P[n, k] = 1 iff node n is class k or above it."""
    paths = np.zeros((len(parents), classes))
    for k in range(classes):
        n = k
        while n != -1:
            paths[n, k] = 1
            n = parents[n]
    return paths


def device_name(device):
    return "cpu" if device == "cpu" else device.split(":")[1]


def test_small_tree_is_the_2012_dummy_tree():
    assert PARENTS[:10] == [10, 10, 10, 11, 11, 11, 12, 12, 13, 13]
    assert PARENTS[10:] == [14, 14, 15, 15, 16, 16, -1]


def test_forward_matches_numpy_and_inner_nodes_start_at_zero(rng, device):
    layers, batch = tree_net(rng)
    net = _core.Net(layers, [device_name(device)], 3)
    w = net.get_params("tree")["weights"][0]
    assert w.shape == (5, 17)
    assert np.all(w[:, 10:] == 0) and np.abs(w[:, :10]).min() > 0  # inner nodes start at 0
    w = rng.standard_normal(w.shape).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    net.set_params("tree", {"weights": [w], "biases": b})
    net.fprop(batch, False)
    x = net.get_acts("tanh").astype(np.float64)
    classes = w.astype(np.float64) @ ancestors_matrix(PARENTS, 10)
    for k in (0, 4, 9):  # class 4's weights: columns 4, 11, 14, 16
        assert_close(classes[:, k], w[:, [k, PARENTS[k], PARENTS[PARENTS[k]], 16]].astype(np.float64).sum(axis=1))
    assert_close(net.get_acts("tree"), classes.T @ x + b[:, None].astype(np.float64), rtol=1e-5, what="treefc acts")


def test_gradients_match_finite_differences(rng):
    layers, batch = tree_net(rng)
    assert check_gradients(layers, batch) == 4


def test_update_scales_each_node_by_its_class_count(rng, device):
    """inc = mom * inc + eps / size(n) * (grad / N - wc / size(n) * w) for node column n."""
    layers, batch = tree_net(rng)
    net = _core.Net(layers, [device_name(device)], 3)
    shape = net.get_params("tree")["weights"][0].shape
    net.set_params("tree", {"weights": [rng.standard_normal(shape).astype(np.float32)],
                            "weightsInc": [rng.standard_normal(shape).astype(np.float32)]})
    eps, mom, wc = 0.3, 0.8, 0.05
    net.set_learning_params("tree", [eps], 0.0, [mom], 0.0, [wc])
    for name in ("fc1",):
        net.set_learning_params(name, [0.0], 0.0, [0.0], 0.0, [0.0])
    net.fprop(batch, True)
    net.bprop()
    before, grad = net.get_params("tree"), net.get_grads("tree")["weights"][0].astype(np.float64)
    net.update(N)
    after = net.get_params("tree")
    size = ancestors_matrix(PARENTS, 10).sum(axis=1)  # classes under each node: 1 .. 10
    assert sorted(set(size)) == [1, 2, 3, 4, 6, 10]
    w, inc = before["weights"][0].astype(np.float64), before["weightsInc"][0].astype(np.float64)
    new_inc = mom * inc + eps / size * (grad / N - wc / size * w)
    assert_close(after["weightsInc"][0], new_inc, rtol=1e-5, what="treefc weightsInc")
    assert_close(after["weights"][0], w + new_inc, rtol=1e-5, what="treefc weights")


def test_provider_trees_and_their_errors(tmp_path):
    with get_provider("dummy-lr-192", None, None, batch_size=4) as p:
        assert p.class_tree == PARENTS and p.get_data_dims(0) == 192
    with get_provider("dummy-cn-192", None, None, batch_size=4) as p:
        assert p.class_tree is None
    children, root = SMALL_CLASS_TREE
    bad = [
        ({**children, 16: [14, 15, 3]}, root, "node 3 has two parents"),
        ({**children, 15: [12]}, root, "3 node\\(s\\) cannot be reached from the root 16"),
        ({**children, 13: [8]}, root, "node 9 has two parents|cannot be reached"),
        ({**children, 14: [10, 11, 16]}, root, "node 16 has two parents"),
        ({**children, 9: [0]}, root, "node 0 has two parents"),
        (children, 17, "root 17 is not one of its nodes"),
        ({k: v for k, v in children.items() if k != 5}, root, "numbered 0..15"),
        ({**children, 2: "x"}, root, "children must be a list"),
    ]
    for tree, r, message in bad:
        with pytest.raises(CorruptDataError, match=f"where: class tree: .*({message})"):
            class_tree_parents(tree, r, 10, "where")
    with pytest.raises(CorruptDataError, match="leaves must be the classes 0..10"):
        class_tree_parents(children, root, 11, "where")


def write_files(tmp_path, outputs=""):
    layers = tmp_path / "layers.cfg"
    layers.write_text("[data]\ntype=data\ndataIdx=0\n\n[labels]\ntype=data\ndataIdx=1\n\n"
                      "[fc1]\ntype=fc\ninputs=data\noutputs=16\nneuron=tanh\ninitW=0.1\n\n"
                      f"[tree]\ntype=treefc\ninputs=fc1\ninitW=0.3\n{outputs}\n"
                      "[probs]\ntype=softmax\ninputs=tree\n\n[logprob]\ntype=cost.logreg\ninputs=labels,probs\n")
    params = tmp_path / "params.cfg"
    params.write_text("[fc1]\nepsW=0.01\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.001\n\n"
                      "[tree]\nepsW=0.05\nepsB=0.02\nmomW=0.9\nmomB=0.9\nwc=0.01\nwball=0.5\n\n[logprob]\ncoeff=1\n")
    return str(layers), str(params)


def test_config_needs_a_tree_with_matching_outputs(tmp_path, capsys):
    layers, params = write_files(tmp_path)
    with pytest.raises(config.ConfigError, match=r"\[tree\] type: treefc needs a class tree"):
        config.load_layers(layers, params, {0: 192, 1: 1})
    resolved = {l["name"]: l for l in config.load_layers(layers, params, {0: 192, 1: 1}, PARENTS)}
    assert resolved["tree"]["outputs"] == 10 and resolved["tree"]["treeParents"] == PARENTS
    assert "wball" not in resolved["tree"] and "wball: ignored on a treefc layer" in capsys.readouterr().err
    layers, params = write_files(tmp_path, "outputs=12\n")
    with pytest.raises(config.ConfigError, match="outputs: is 12, but the class tree has 10 classes"):
        config.load_layers(layers, params, {0: 192, 1: 1}, PARENTS)


def test_engine_refuses_a_cyclic_tree(rng):
    layers, _ = tree_net(rng)
    cyclic = list(PARENTS)
    cyclic[16] = 14  # 14 -> 16 -> 14
    layers[4] = dict(layers[4], treeParents=cyclic)
    with pytest.raises(ValueError, match="layer 'tree': key 'treeParents': class 0 has no path to the root"):
        _core.Net(layers, ["cpu"], 1)


def test_trains_from_a_batches_meta_tree_and_resumes(tmp_path, capsys):
    """cuda-convnet's CIFAR batches with a class tree in batches.meta: train, then resume."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar"
    folder.mkdir()
    for b in range(1, 7):
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (3072, 32), dtype=np.uint8),
                         "labels": [int(x) for x in rng.integers(0, 10, 32)]}, f)
    children, root = SMALL_CLASS_TREE
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072, "tree": children,
                     "all_wnids": {"gproot": root}, "data_mean": np.full((3072, 1), 128.0, np.float32)}, f)
    layers, params = write_files(tmp_path)
    args = [f"--layer-def={layers}", f"--layer-params={params}", "--data-provider=cifar", f"--data-path={folder}",
            "--train-range=1-2", "--test-range=6", "--gpu=cpu", "--mini=16", f"--save-path={tmp_path / 'runs'}"]
    assert convnet_main(args + ["--epochs=2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "tree             treefc         -> 10" in out
    run = os.path.join(tmp_path / "runs", os.listdir(tmp_path / "runs")[0])
    assert convnet_main(["-f", run, "--epochs=3"]) == 0, capsys.readouterr().err
    assert "epoch 3/3" in capsys.readouterr().out
    # the same net in torch (ccn.export.to_torch) gives the engine's test probabilities
    torch = pytest.importorskip("torch")
    from ccn import checkpoint, export
    state, _, _ = checkpoint.load(run)
    net = _core.Net(state["layers"], ["cpu"], 0)
    for name, params in state["params"].items():
        net.set_params(name, params)
    with get_provider("cifar", str(folder), [6], test=True, seed=0) as dp:
        _, _, batch = dp.get_next_batch()
    net.fprop(batch, False)
    probs = net.get_acts("probs")
    with torch.no_grad():
        ours = export.to_torch(run)(torch.from_numpy(batch[0].T.copy())).numpy()
    assert probs.std() > 1e-3
    np.testing.assert_allclose(ours, probs.T, atol=1e-5, rtol=0)
