"""Small layer files and CIFAR-format data for the trainer tests."""
import os
import pickle

import numpy as np

SMALL_NET = """
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
initW=0.0001
neuron=relu

[pool1]
type=pool
pool=max
inputs=conv1
sizeX=3
stride=2
channels=8

[fc10]
type=fc
inputs=pool1
outputs=10
initW=0.01

[probs]
type=softmax
inputs=fc10

[logprob]
type=cost.logreg
inputs=labels,probs
"""

SMALL_PARAMS = """
[conv1]
epsW=0.0001
epsB=0.0002
momW=0.9
momB=0.9
wc=0.0005

[fc10]
epsW=0.0001
epsB=0.0002
momW=0.9
momB=0.9
wc=0.0005

[logprob]
coeff=1
"""


def write_cifar(path, cases_per_batch=40, seed=0):
    """CIFAR-10 python batches (data_batch_1..5, test_batch, batches.meta) with learnable
    classes: each class has its own mean colour."""
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    colours = rng.uniform(40, 215, (10, 3))

    def batch(n):
        labels = rng.integers(0, 10, n)
        pixels = colours[labels][:, :, None] + rng.normal(0, 30, (n, 3, 1024))
        return np.clip(pixels, 0, 255).astype(np.uint8).reshape(n, 3072), [int(x) for x in labels]

    for i in range(1, 6):
        data, labels = batch(cases_per_batch)
        with open(os.path.join(path, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": f"training batch {i}".encode()}, f)
    data, labels = batch(cases_per_batch)
    with open(os.path.join(path, "test_batch"), "wb") as f:
        pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"testing batch"}, f)
    with open(os.path.join(path, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}, f)
    return path


def write_net(tmp_path, net=SMALL_NET, params=SMALL_PARAMS, name="net"):
    layers = tmp_path / f"{name}.cfg"
    layer_params = tmp_path / f"{name}-params.cfg"
    layers.write_text(net)
    layer_params.write_text(params)
    return str(layers), str(layer_params)
