"""Fashion-MNIST provider: IDX files (gzipped or not) -> batches of 1x28x28 images.

Batches 1..6 split the training images into six equal consecutive parts (10000 each for
the real 60000), batch 7 is the test set (t10k). Pixels are scaled to [0, 1] and the
training set's mean image is subtracted (computed once per file and cached in memory),
cuda-convnet's usual normalisation. Data layout (784, numCases) float32, case fastest;
labels (1, numCases) float32 in 0..9.

IDX format: a 4-byte big-endian magic number 0x000008NN (two zero bytes, type code 0x08 =
unsigned byte, NN = number of dimensions), NN big-endian uint32 sizes, then the bytes.
"""
import gzip
import os
import struct
import threading
import zlib

import numpy as np

from .base import (CorruptDataError, DataProvider, MissingDataError, batch_rng, labels_row,
                   register_provider, to_layout)

DEFAULT_DATA_PATH = "/usr/share/datasets/fashion-mnist"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NUM_TRAIN_BATCHES = 6
TEST_BATCH = 7
LABEL_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
IDX_UNSIGNED_BYTE = 0x08

# Decoded files and mean images, keyed by (real path, size, mtime): a train and a test
# provider (and repeated runs in one process) read and decode each file once.
_cache = {}
_cache_lock = threading.Lock()


def read_idx(path, expected_ndim):
    """The uint8 array stored in an IDX file (``.gz`` suffix: gzipped), header checked."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise CorruptDataError(f"{path}: not a readable gzip file ({e})") from None
    if len(raw) < 4:
        raise CorruptDataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    expected_magic = (IDX_UNSIGNED_BYTE << 8) | expected_ndim
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise CorruptDataError(f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x}: "
                               f"unsigned bytes, {expected_ndim} dimension(s))")
    header_size = 4 + 4 * expected_ndim
    if len(raw) < header_size:
        raise CorruptDataError(f"{path}: IDX header truncated ({len(raw)} bytes, needs {header_size})")
    dims = struct.unpack(f">{expected_ndim}I", raw[4:header_size])
    expected_bytes = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header_size != expected_bytes:
        raise CorruptDataError(f"{path}: holds {len(raw) - header_size} data bytes but its header "
                               f"(sizes {'x'.join(map(str, dims))}) says {expected_bytes}: truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def find_idx_file(data_path, base_name):
    """The path of ``base_name`` or ``base_name.gz`` in data_path; MissingDataError if neither."""
    for candidate in (base_name, base_name + ".gz"):
        path = os.path.join(data_path, candidate)
        if os.path.isfile(path):
            return path
    raise MissingDataError(f"Fashion-MNIST file {os.path.join(data_path, base_name)}[.gz] not found; "
                           f"install the Debian package dataset-fashion-mnist (files in {DEFAULT_DATA_PATH}) "
                           f"or pass --data-path=<folder with the IDX files>")


def _cached(kind, path, compute):
    stat = os.stat(path)
    key = (kind, os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = compute()
        return _cache[key]


def load_split(data_path, split):
    """(images uint8 (n, rows, cols), labels uint8 (n,)) of the "train" or "test" split."""
    images_path, labels_path = (find_idx_file(data_path, name) for name in SPLIT_FILES[split])
    images = _cached("idx", images_path, lambda: read_idx(images_path, 3))
    labels = _cached("idx", labels_path, lambda: read_idx(labels_path, 1))
    if len(images) != len(labels):
        raise CorruptDataError(f"{images_path} holds {len(images)} images but {labels_path} "
                               f"holds {len(labels)} labels")
    if labels.size and labels.max() >= len(LABEL_NAMES):
        raise CorruptDataError(f"{labels_path}: label {labels.max()} out of range 0..{len(LABEL_NAMES) - 1}")
    return images, labels, images_path


@register_provider("fashion-mnist")
class FashionMNISTProvider(DataProvider):
    """Fashion-MNIST; params: seed (case shuffling), shuffle (training batches only)."""

    label_names = LABEL_NAMES

    def __init__(self, data_path, batch_range, test=False, seed=0, shuffle=True):
        self.shuffle = bool(shuffle)
        super().__init__(data_path or DEFAULT_DATA_PATH, batch_range, test, seed)

    def valid_batches(self):
        return range(1, TEST_BATCH + 1)

    def default_batch_range(self, test):
        return [TEST_BATCH] if test else list(range(1, NUM_TRAIN_BATCHES + 1))

    def setup(self):
        if not os.path.isdir(self.data_path):
            raise MissingDataError(f"Fashion-MNIST folder {self.data_path} not found; install the Debian package "
                                   f"dataset-fashion-mnist or pass --data-path=<folder with the IDX files>")
        self._train_images, self._train_labels, train_path = load_split(self.data_path, "train")
        if len(self._train_images) < NUM_TRAIN_BATCHES:
            raise CorruptDataError(f"{train_path}: {len(self._train_images)} images cannot fill "
                                   f"{NUM_TRAIN_BATCHES} training batches")
        self._mean = _cached("mean", train_path, lambda: self._mean_image(self._train_images))
        self.data_dims = (1,) + self._train_images.shape[1:]
        if TEST_BATCH in self.batch_range:
            self._test_images, self._test_labels, test_path = load_split(self.data_path, "test")
            if self._test_images.shape[1:] != self._train_images.shape[1:]:
                raise CorruptDataError(f"{test_path}: images are {self._test_images.shape[1:]}, "
                                       f"the training images {self._train_images.shape[1:]}")

    def mean_column(self):
        return self._mean

    @staticmethod
    def _mean_image(images):
        mean = images.reshape(len(images), -1).mean(axis=0, dtype=np.float64) / 255.0
        return mean.astype(np.float32)

    def load_batch(self, epoch, batchnum):
        if batchnum == TEST_BATCH:
            images, labels = self._test_images, self._test_labels
        else:
            n = len(self._train_images)
            start = n * (batchnum - 1) // NUM_TRAIN_BATCHES
            stop = n * batchnum // NUM_TRAIN_BATCHES
            images, labels = self._train_images[start:stop], self._train_labels[start:stop]
        if self.shuffle and not self.test:
            order = batch_rng(self.seed, epoch, batchnum).permutation(len(images))
            images, labels = images[order], labels[order]
        data = to_layout(images)
        data /= np.float32(255.0)
        data -= self._mean[:, None]
        return [data, labels_row(labels)]
