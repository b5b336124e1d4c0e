"""``image``: cuda-convnet2's JPEG batches, as ``python -m ccn.make_data`` writes them.

data_path holds batches.meta and one folder per batch, data_batch_N/, of sub-batch files
data_batch_N.0, data_batch_N.1, ... (pickled dicts: 'data' a list of JPEG bytes, 'labels'
a list of [class index]). batches.meta gives 'label_names', 'data_mean' (the mean image,
3*S*S values in (C, H, W) order, pixel units), 'num_vis' (3*S*S) and, from make_data,
'color_pca_eigvals' / 'color_pca_eigvecs' and the default 'train_batch_range' /
'test_batch_range'. Every file is read with ``safe_pickle.load``, which runs no code
(cuda-convnet2's own batches, pickled with protocol 2, load the same way; their meta has no
colour-PCA keys, so --color-noise needs ours, and no ranges, so give --train-range and
--test-range).

Values are pixel - mean (the centre crop of the mean image, or --scalar-mean), in pixel
units as in cuda-convnet2; augmentation, multiview and the worker processes are
``augmented.AugmentedImageProvider``'s. A case with several labels uses its first.
"""
import math
import os
import re

import numpy as np

from . import safe_pickle
from .augmented import AugmentedImageProvider
from .base import CorruptDataError, MissingDataError, meta_class_tree, register_provider

META_FILE = "batches.meta"
CHANNELS = 3


@register_provider("image")
class JPEGBatchProvider(AugmentedImageProvider):
    """make-data batches; params: seed, shuffle, inner_size, multiview, color_noise, scalar_mean, decode_workers."""

    def __init__(self, data_path, batch_range, test=False, seed=0, shuffle=True, inner_size=0, multiview=False,
                 color_noise=0.0, scalar_mean=-1.0, decode_workers=-1):
        if data_path is None:
            raise ValueError("the image provider needs a data path (--data-path=<folder written by "
                             "python -m ccn.make_data>)")
        if not os.path.isdir(data_path):
            raise MissingDataError(f"batch folder {data_path} not found; make it with python -m ccn.make_data")
        self._meta_path = os.path.join(data_path, META_FILE)
        self._meta = safe_pickle.load(self._meta_path, "batches.meta")
        if not isinstance(self._meta, dict):
            raise CorruptDataError(f"{self._meta_path}: expected a pickled dict")
        self._batches = {int(m.group(1)): name for name in os.listdir(data_path)
                         if (m := re.fullmatch(r"data_batch_(\d+)", name))
                         and os.path.isdir(os.path.join(data_path, name))}
        super().__init__(data_path, batch_range, test, seed, shuffle, inner_size, multiview, color_noise,
                         scalar_mean, decode_workers)

    def valid_batches(self):
        return sorted(self._batches)

    def default_batch_range(self, test):
        key = "test_batch_range" if test else "train_batch_range"
        if key not in self._meta:
            raise ValueError(f"{self._meta_path} names no {key}; pass --{'test' if test else 'train'}-range")
        return [int(b) for b in self._meta[key]]

    def _meta_value(self, key):
        if key not in self._meta:
            raise CorruptDataError(f"{self._meta_path}: no {key!r} entry")
        return self._meta[key]

    def read_source_info(self):
        names = self._meta_value("label_names")
        self.label_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
        self.class_tree = meta_class_tree(self._meta, len(self.label_names), self._meta_path)
        num_vis = int(self._meta_value("num_vis"))
        size = math.isqrt(num_vis // CHANNELS)
        if CHANNELS * size * size != num_vis:
            raise CorruptDataError(f"{self._meta_path}: num_vis {num_vis} is not 3 * size^2")
        self.image_size, self.channels = (size, size), CHANNELS
        mean = np.asarray(self._meta_value("data_mean"), dtype=np.float32)
        if mean.size != num_vis:
            raise CorruptDataError(f"{self._meta_path}: data_mean has {mean.size} values, expected {num_vis}")
        self.mean_image = mean.reshape(CHANNELS, size, size)
        if "color_pca_eigvals" in self._meta and "color_pca_eigvecs" in self._meta:
            eigvals = np.asarray(self._meta["color_pca_eigvals"], np.float64)
            eigvecs = np.asarray(self._meta["color_pca_eigvecs"], np.float64)
            if eigvals.shape != (3,) or eigvecs.shape != (3, 3):
                raise CorruptDataError(f"{self._meta_path}: colour PCA must be 3 eigenvalues and 3x3 eigenvectors")
            self.color_pca = (eigvals, eigvecs)

    def read_sources(self, batchnum):
        folder = os.path.join(self.data_path, self._batches[batchnum])
        parts = sorted((int(m.group(1)), name) for name in os.listdir(folder)
                       if (m := re.fullmatch(rf"data_batch_{batchnum}\.(\d+)", name)))
        if not parts:
            raise MissingDataError(f"{folder}: no sub-batch files data_batch_{batchnum}.0, ...")
        sources, names, labels = [], [], []
        for _, name in parts:
            path = os.path.join(folder, name)
            batch = safe_pickle.load(path)
            if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
                raise CorruptDataError(f"{path}: expected a dict with 'data' and 'labels'")
            data, batch_labels = batch["data"], batch["labels"]
            if not isinstance(data, list) or not all(isinstance(d, bytes) for d in data) \
                    or len(batch_labels) != len(data):
                raise CorruptDataError(f"{path}: 'data' must be a list of JPEG bytes with one label per image")
            for k, (jpeg, label) in enumerate(zip(data, batch_labels)):
                label = label[0] if isinstance(label, (list, tuple, np.ndarray)) and len(label) else label
                if isinstance(label, bool) or not isinstance(label, (int, np.integer)) \
                        or not 0 <= label < len(self.label_names):
                    raise CorruptDataError(f"{path}: case {k} has label {label!r}, expected a class index "
                                           f"in 0..{len(self.label_names) - 1}")
                sources.append(jpeg)
                names.append(f"{path} case {k}")
                labels.append(int(label))
        return sources, names, labels
