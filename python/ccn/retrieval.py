"""Nearest training images of test images in a layer's feature space (the retrieval figure of
the 2012 ImageNet paper, drawn by shownet.py --show-similar=LAYER).

Features of the training and test ranges are computed once per (checkpoint, layer, ranges)
and cached as <run dir>/features/similar-<layer>-<checkpoint>.npz. Search is exact (float64
squared Euclidean distances by NumPy, in blocks) up to EXACT_LIMIT training cases; above it,
faiss (pip install "ccn[retrieval]": an HNSW graph) when installed, else exact with a note.
"""
import os
import sys

import numpy as np

EXACT_LIMIT = 200_000   # training cases searched exactly by default
BLOCK = 1024            # queries per block of the exact search


def layer_features(trainer, layer_name, dp):
    """(features (N, D) float32, labels (N,), positions [(batchnum, column)]) of every batch of dp."""
    from . import config
    from .trainer import _slices
    layer = config.output_layer(trainer.by_name, layer_name)["name"]
    feats, labels, positions = [], [], []
    for _ in range(len(dp.batch_range)):
        _, batchnum, (images, batch_labels) = dp.get_next_batch()
        num_cases = trainer._begin_test_batch(images, batch_labels)
        batch = []
        for s, e in _slices(num_cases, trainer.op["mini"], trainer.replica_multiple):
            trainer.net.fprop_slice(s, e, False)
            acts = trainer.net.get_acts(layer)
            batch.append(np.ascontiguousarray(acts.reshape(-1, e - s).T, np.float32))
        count = sum(len(f) for f in batch)  # a remainder that does not split over replicas is left out
        feats.extend(batch)
        labels.append(batch_labels.reshape(-1)[:count])
        positions.extend((batchnum, c) for c in range(count))
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64), positions


def cached_features(trainer, layer_name, train_dp, test_dp, cache_path):
    """The training and test features, from cache_path when it was written for the same request."""
    key = np.array(f"{layer_name}|{list(train_dp.batch_range)}|{list(test_dp.batch_range)}")
    if os.path.isfile(cache_path):
        with np.load(cache_path, allow_pickle=False) as z:
            if str(z["key"]) == str(key):
                return {k: z[k] for k in z.files}
    train = layer_features(trainer, layer_name, train_dp)
    test = layer_features(trainer, layer_name, test_dp)
    out = {"key": key, "train": train[0], "train_labels": train[1], "train_pos": np.array(train[2], np.int64),
           "test": test[0], "test_labels": test[1], "test_pos": np.array(test[2], np.int64)}
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    tmp = cache_path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **out)
    os.replace(tmp, cache_path)
    return out


def exact_neighbours(train, queries, k):
    """Indices (Q, k) of each query's k nearest training rows, nearest first (ties: lower index)."""
    train = np.asarray(train, np.float64)
    norms = (train * train).sum(axis=1)
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), BLOCK):
        q = np.asarray(queries[s:s + BLOCK], np.float64)
        d = norms[None, :] - 2.0 * q @ train.T  # + |q|^2, the same for every training row
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(q), 1))
        rows = np.arange(len(q))[:, None]
        order = np.lexsort((part, d[rows, part]), axis=1)
        out[s:s + BLOCK] = part[rows, order]
    return out


def approximate_neighbours(train, queries, k):
    """faiss's HNSW graph (exact distances on the candidates it visits)."""
    import faiss
    index = faiss.IndexHNSWFlat(train.shape[1], 32)
    index.hnsw.efSearch = max(64, 4 * k)
    index.add(np.ascontiguousarray(train, np.float32))
    _, found = index.search(np.ascontiguousarray(queries, np.float32), k)
    return found.astype(np.int64)


def neighbours(train, queries, k, method="auto"):
    """method: exact, faiss, or auto (exact up to EXACT_LIMIT training cases, then faiss if installed)."""
    if method == "auto":
        method = "exact"
        if len(train) > EXACT_LIMIT:
            try:
                import faiss  # noqa: F401
                method = "faiss"
            except ImportError:
                print(f"shownet: {len(train)} training cases searched exactly (pip install 'ccn[retrieval]' for "
                      "faiss's approximate search)", file=sys.stderr)
    return approximate_neighbours(train, queries, k) if method == "faiss" else exact_neighbours(train, queries, k)


def class_agreement(found, train_labels, test_labels):
    """The share of all (query, neighbour) pairs where the neighbour has the query's class."""
    return float((train_labels[found] == test_labels[:, None]).mean())
