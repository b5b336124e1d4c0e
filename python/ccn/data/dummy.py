"""Dummy provider: random images and labels of given sizes, for tests, benchmarks and for
running a net of any input size without data.

Batch b holds batch_size cases: data float32 (rows, batch_size) in cuda-convnet's layout,
standard normal (or uniform in [0, 1) with ``uniform=True``, as cuda-convnet's dummy data),
labels uniform in 0..num_classes-1, both a function of (seed, b) only, so every epoch sees
the same batch b. Batches 1..num_batches are the training range, batch num_batches+1 the
test batch. No files are read (data_path is ignored). ``label_rows=K`` gives one-hot
(K, cases) label matrices over K classes instead (for cross-entropy costs).

Input shape: ``dims`` = (channels, imgSizeY, imgSizeX), or an int for flat rows (a layer
then reads them as square images through its channels= key, as in cuda-convnet);
``inner_size`` = S gives (3, S, S). The originals' names: ``dummy-cn-N`` is this provider
with N flat rows of uniform [0, 1) values, the data cuda-convnet's own dummy provider gave
(its gradient-check nets, layers.gc.cfg, are scaled for it); the 2012 release's
``dummy-ce-N`` adds one-hot (16, cases) labels and ``dummy-lr-N`` its fixed class tree over
the 10 classes (for treefc layers): 10 = {0, 1, 2}, 11 = {3, 4, 5}, 12 = {6, 7},
13 = {8, 9}, 14 = {10, 11}, 15 = {12, 13}, root 16 = {14, 15}.
"""
import numpy as np

from .base import (DataProvider, ProviderOption, class_tree_parents, labels_row, register_provider,
                   register_provider_pattern)

# The class tree of dummy-lr-N: {node: children} over 10 classes and 7 inner nodes, root 16.
SMALL_CLASS_TREE = ({**{k: [] for k in range(10)}, 10: [0, 1, 2], 11: [3, 4, 5], 12: [6, 7], 13: [8, 9],
                     14: [10, 11], 15: [12, 13], 16: [14, 15]}, 16)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@register_provider("dummy")
class DummyProvider(DataProvider):
    """Random data; params: dims=(C, H, W) or rows, inner_size, num_classes, batch_size,
    num_batches, seed, uniform, small_class_tree (SMALL_CLASS_TREE over 10 classes), label_rows
    (K > 0: one-hot (K, cases) label matrices over K classes instead of a row of indices)."""

    options = (
        ProviderOption("inner_size", int, 0, "size of the square crops; overrides --crop-border (0: unset); "
                                             "dummy: the image size (3 x N x N)"),
        ProviderOption("batch_size", int, 128, "cases per batch"),
        ProviderOption("num_batches", int, 4, "training batches (batch num_batches+1 is the test batch)"),
        ProviderOption("label_rows", int, 0, "dummy: labels as one-hot (label_rows, cases) matrices, for "
                                             "cross-entropy costs (0: a row of class indices)"),
    )

    def __init__(self, data_path, batch_range, test=False, seed=0, dims=(3, 32, 32), num_classes=10,
                 batch_size=128, num_batches=4, inner_size=0, uniform=False, small_class_tree=False, label_rows=0):
        self.uniform = bool(uniform)
        if isinstance(label_rows, bool) or not isinstance(label_rows, (int, np.integer)) or label_rows < 0:
            raise ValueError(f"label_rows must be an int >= 0, got {label_rows!r}")
        self.label_rows = int(label_rows)
        if self.label_rows:
            num_classes = self.label_rows
        if inner_size:
            dims = (3, _positive_int("inner_size", inner_size), int(inner_size))
        if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
            self.data_dims = _positive_int("dims", dims)
        else:
            try:
                dims = tuple(dims)
            except TypeError:
                raise ValueError(f"dims must be (channels, imgSizeY, imgSizeX) or rows, got {dims!r}") from None
            if len(dims) != 3:
                raise ValueError(f"dims must be (channels, imgSizeY, imgSizeX) or rows, got {dims!r}")
            self.data_dims = tuple(_positive_int("dims", d) for d in dims)
        self.label_names = [f"class {k}" for k in range(_positive_int("num_classes", num_classes))]
        if small_class_tree:
            self.class_tree = class_tree_parents(*SMALL_CLASS_TREE, len(self.label_names), "dummy-lr")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.num_batches = _positive_int("num_batches", num_batches)
        super().__init__(data_path, batch_range, test, seed)

    def valid_batches(self):
        return range(1, self.num_batches + 2)

    def default_batch_range(self, test):
        return [self.num_batches + 1] if test else list(range(1, self.num_batches + 1))

    def setup(self):
        pass

    def load_batch(self, epoch, batchnum):
        rng = np.random.default_rng([self.seed, batchnum])
        rows = int(np.prod(self.data_dims))
        shape = (rows, self.batch_size)
        data = rng.random(shape, dtype=np.float32) if self.uniform else rng.standard_normal(shape, dtype=np.float32)
        labels = rng.integers(0, len(self.label_names), size=self.batch_size)
        if self.label_rows:  # one-hot columns
            one_hot = np.zeros((self.label_rows, self.batch_size), np.float32)
            one_hot[labels, np.arange(self.batch_size)] = 1
            return [data, one_hot]
        return [data, labels_row(labels)]

    def get_data_dims(self, idx=0):
        return self.label_rows if idx == 1 and self.label_rows else super().get_data_dims(idx)


register_provider_pattern(r"dummy-cn-(\d+)", "dummy", lambda match: {"dims": int(match.group(1)), "uniform": True})
register_provider_pattern(r"dummy-ce-(\d+)", "dummy",
                          lambda match: {"dims": int(match.group(1)), "uniform": True, "label_rows": 16})
register_provider_pattern(r"dummy-lr-(\d+)", "dummy",
                          lambda match: {"dims": int(match.group(1)), "uniform": True, "small_class_tree": True})
