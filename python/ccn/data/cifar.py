"""CIFAR-10 providers: ``cifar`` (whole 3x32x32 images) and ``cifar-cropped`` (cuda-convnet's
random crops + flips for training, centre or 10-view test).

Two layouts of the files in data_path are read, told apart by their shapes:
* the python release: data_batch_1..data_batch_5 and test_batch, pickles of a dict with
  b'data' (10000x3072 uint8, one image per row: R plane (32x32 row-major), then G, then B)
  and b'labels' (10000 ints); batches.meta with b'label_names';
* cuda-convnet's own batches: data_batch_1..data_batch_6 (6 is the test batch), 'data'
  uint8 (3072, numCases), one image per column; batches.meta with 'label_names',
  'num_vis' (3072) and 'data_mean' (3072 or 3072x1 floats, pixel units).
A (3072, 3072) batch is read as columns when batches.meta has data_mean, else as rows.
Batch numbers follow cuda-convnet: 1..5 are the training batches, 6 the test batch
(test_batch, or data_batch_6 when there is no test_batch). Pickles from Python 2 (byte-string keys) and
Python 3 (str keys) both load. Loading a pickle runs code chosen by whoever wrote it: only
point data_path at files you trust.

Values: pixel (0..255) minus the mean image (batches.meta's data_mean if present, else
the mean of the five training batches), times ``scale`` (default 1: cuda-convnet's units).
Data layout (3*imgSize*imgSize, numCases) float32, case fastest, rows in (C, H, W) order.

cifar-cropped: inner_size (default 24, or 32 - 2*crop_border) square crops of the
mean-subtracted image. Training: a uniform random position and a horizontal flip with
probability 1/2 per image; with color_noise > 0, each image's channel c gets one Gaussian
offset of std color_noise * sigma_c, sigma_c being channel c's pixel std around the mean
image over the training set (so color_noise is unitless, like cuda-convnet2's PCA noise
scale). Test: the centre crop; with multiview=True ten views per image — top-left,
top-right, bottom-left, bottom-right, centre, then the same five flipped — returned as
(rows, 10*numCases), view-major (view 0 of every case, then view 1, ...), labels
(1, numCases) once.
"""
import os
import threading

import numpy as np

from . import safe_pickle
from .base import (CorruptDataError, DataProvider, MissingDataError, ProviderOption, batch_rng, labels_row,
                   meta_class_tree, register_provider, to_layout)

IMAGE_SIZE = 32
CHANNELS = 3
PIXELS = CHANNELS * IMAGE_SIZE * IMAGE_SIZE
NUM_TRAIN_BATCHES = 5
TEST_BATCH = 6
META_FILE = "batches.meta"

# Training-set statistics (mean image, channel std), keyed by the files they came from.
_stats_cache = {}
_stats_lock = threading.Lock()


def batch_file_name(batchnum):
    return "test_batch" if batchnum == TEST_BATCH else f"data_batch_{batchnum}"


def load_pickle(path):
    """A CIFAR pickle as a dict with str keys (Python 2 byte-string keys decoded), read as
    data only (safe_pickle: no code runs)."""
    obj = safe_pickle.load(path, "CIFAR file", "; pass --data-path=<folder with data_batch_1..5, test_batch and "
                                               "batches.meta> (CIFAR-10 python version)")
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _file_key(paths):
    return tuple((os.path.realpath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in paths)


@register_provider("cifar")
class CIFARProvider(DataProvider):
    """CIFAR-10 whole images; params: seed, shuffle (training batches only), scale, scalar_mean."""

    options = (
        ProviderOption("scalar_mean", float, -1.0, "subtract this value from every pixel instead of the mean "
                                                   "image (cuda-convnet's option; -1: the mean image)"),
    )

    def __init__(self, data_path, batch_range, test=False, seed=0, shuffle=True, scale=1.0, scalar_mean=-1.0):
        self.scalar_mean = None if scalar_mean is None or scalar_mean < 0 else float(scalar_mean)
        if data_path is None:
            raise ValueError(f"the {self.name} provider needs a data path (--data-path=<folder with "
                             f"data_batch_1..5, test_batch and batches.meta>)")
        self.shuffle = bool(shuffle)
        self.scale = float(scale)
        super().__init__(data_path, batch_range, test, seed)

    def valid_batches(self):
        return range(1, TEST_BATCH + 1)

    def _subtracted_mean(self, meta, meta_path):
        """The mean subtracted from every image: scalar_mean at every pixel when given (as
        cuda-convnet's --scalar-mean), else batches.meta's data_mean, else the training mean."""
        if self.scalar_mean is not None:
            return np.full(PIXELS, self.scalar_mean, dtype=np.float32)
        if "data_mean" in meta:
            mean = np.asarray(meta["data_mean"], dtype=np.float32)
            if mean.size != PIXELS:
                raise CorruptDataError(f"{meta_path}: data_mean has {mean.size} values, expected {PIXELS}")
            return mean.reshape(PIXELS)
        return self._training_stats()[0]

    def default_batch_range(self, test):
        return [TEST_BATCH] if test else list(range(1, NUM_TRAIN_BATCHES + 1))

    def setup(self):
        if not os.path.isdir(self.data_path):
            raise MissingDataError(f"CIFAR folder {self.data_path} not found; pass --data-path=<folder with "
                                   f"data_batch_1..5, test_batch and batches.meta>")
        meta_path = os.path.join(self.data_path, META_FILE)
        meta = load_pickle(meta_path)
        if "label_names" not in meta:
            raise CorruptDataError(f"{meta_path}: no label_names entry")
        self.label_names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
        self.class_tree = meta_class_tree(meta, len(self.label_names), meta_path)
        for batchnum in self.batch_range:
            path = self._batch_path(batchnum)
            if not os.path.isfile(path):
                load_pickle(path)  # raises the MissingDataError naming the file
        self._columns_if_square = "data_mean" in meta
        self._mean = self._subtracted_mean(meta, meta_path)
        self.data_dims = (CHANNELS, IMAGE_SIZE, IMAGE_SIZE)

    def _batch_path(self, batchnum):
        path = os.path.join(self.data_path, batch_file_name(batchnum))
        if batchnum == TEST_BATCH and not os.path.isfile(path):
            own_layout = os.path.join(self.data_path, f"data_batch_{TEST_BATCH}")
            if os.path.isfile(own_layout):
                return own_layout
        return path

    def read_batch(self, batchnum):
        """(images uint8 (n, 3072), labels int64 (n,)) of one batch file, validated."""
        path = self._batch_path(batchnum)
        batch = load_pickle(path)
        for key in ("data", "labels"):
            if key not in batch:
                raise CorruptDataError(f"{path}: no {key!r} entry")
        images = batch["data"]
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
                or PIXELS not in images.shape:
            desc = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise CorruptDataError(f"{path}: 'data' must be a uint8 array of shape (numCases, {PIXELS}) (python "
                                   f"release) or ({PIXELS}, numCases) (cuda-convnet's batches), found {desc}")
        if images.shape[0] == PIXELS and (images.shape[1] != PIXELS or self._columns_if_square):
            images = np.ascontiguousarray(images.T)  # cuda-convnet's layout: one image per column
        labels = np.asarray(batch["labels"])
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise CorruptDataError(f"{path}: 'labels' must be {len(images)} ints, found {labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.label_names)):
            raise CorruptDataError(f"{path}: labels outside 0..{len(self.label_names) - 1}")
        return images, labels.astype(np.int64)

    def _training_stats(self):
        """(mean image (3072,), per-channel pixel std around it (3,)) over batches 1..5, cached."""
        paths = [self._batch_path(b) for b in range(1, NUM_TRAIN_BATCHES + 1)]
        for path in paths:
            if not os.path.isfile(path):
                load_pickle(path)  # raises the MissingDataError naming the file
        key = _file_key(paths)
        with _stats_lock:
            if key not in _stats_cache:
                _stats_cache[key] = self._compute_training_stats()
            return _stats_cache[key]

    def _compute_training_stats(self, chunk=1000):
        # One pass of per-pixel sums and sums of squares (exact in float64 for uint8 data);
        # chunked so the float64 copies stay small.
        total = np.zeros(PIXELS, dtype=np.float64)
        total_squares = np.zeros(PIXELS, dtype=np.float64)
        count = 0
        for batchnum in range(1, NUM_TRAIN_BATCHES + 1):
            images, _ = self.read_batch(batchnum)
            for start in range(0, len(images), chunk):
                block = images[start:start + chunk].astype(np.float64)
                total += block.sum(axis=0)
                total_squares += (block * block).sum(axis=0)
            count += len(images)
        if count == 0:
            raise CorruptDataError(f"{self.data_path}: the training batches hold no images")
        mean = total / count
        # sum over the batch of (x - mean_pixel)^2, per pixel, summed per channel
        squares = (total_squares - count * mean * mean).reshape(CHANNELS, -1).sum(axis=1)
        channel_std = np.sqrt(np.maximum(squares, 0.0) / (count * IMAGE_SIZE * IMAGE_SIZE))
        return mean.astype(np.float32), channel_std.astype(np.float32)

    def load_batch(self, epoch, batchnum):
        images, labels = self.read_batch(batchnum)
        rng = None
        if not self.test:
            rng = batch_rng(self.seed, epoch, batchnum)
            if self.shuffle:
                order = rng.permutation(len(images))
                images, labels = images[order], labels[order]
        return [self.images_to_data(images, rng), labels_row(labels)]

    def mean_column(self):
        if tuple(self.data_dims) != (CHANNELS, IMAGE_SIZE, IMAGE_SIZE):
            return None  # crops: no mean image of the data's size
        return self._mean * np.float32(self.scale)

    def images_to_data(self, images, rng):
        """uint8 (n, 3072) images -> the data matrix; rng is None for test batches."""
        data = to_layout(images)
        data -= self._mean[:, None]
        data *= np.float32(self.scale)
        return data


@register_provider("cifar-cropped")
class CroppedCIFARProvider(CIFARProvider):
    """CIFAR-10 crops; params: seed, shuffle, scale, inner_size, crop_border, multiview, color_noise."""

    options = CIFARProvider.options + (
        ProviderOption("crop_border", int, 4, "pixels cropped from each border (crops of 32 - 2*N)"),
        ProviderOption("inner_size", int, 0, "size of the square crops; overrides --crop-border (0: unset); "
                                             "dummy: the image size (3 x N x N)"),
        ProviderOption("color_noise", float, 0.0, "std of per-channel colour noise, in units of each "
                                                  "channel's pixel std (training only)", phase="train"),
    )
    multiview_capable = True

    def __init__(self, data_path, batch_range, test=False, seed=0, shuffle=True, scale=1.0,
                 inner_size=0, crop_border=4, multiview=False, color_noise=0.0, scalar_mean=-1.0):
        self.inner_size = self._resolve_inner_size(inner_size, crop_border)
        if multiview and not test:
            raise ValueError("multiview applies to test providers only (test=True)")
        self.multiview = bool(multiview)
        self.num_views = 10 if self.multiview else 1
        self.color_noise = float(color_noise)
        if not self.color_noise >= 0:
            raise ValueError(f"color_noise must be >= 0, got {color_noise!r}")
        super().__init__(data_path, batch_range, test, seed, shuffle, scale, scalar_mean)

    @staticmethod
    def _resolve_inner_size(inner_size, crop_border):
        """inner_size when given (not 0 / None), else 32 - 2 * crop_border."""
        if inner_size:
            if not isinstance(inner_size, (int, np.integer)) or not 1 <= inner_size <= IMAGE_SIZE:
                raise ValueError(f"inner_size must be an int in 1..{IMAGE_SIZE}, got {inner_size!r}")
            return int(inner_size)
        if not isinstance(crop_border, (int, np.integer)) or not 0 <= crop_border < IMAGE_SIZE // 2:
            raise ValueError(f"crop_border must be an int in 0..{IMAGE_SIZE // 2 - 1}, got {crop_border!r}")
        return IMAGE_SIZE - 2 * int(crop_border)

    def setup(self):
        super().setup()
        self.data_dims = (CHANNELS, self.inner_size, self.inner_size)
        if self.color_noise > 0 and not self.test:
            self._channel_std = self._training_stats()[1]

    def images_to_data(self, images, rng):
        if rng is None:
            return self._test_views(images)
        n, size = len(images), self.inner_size
        room = IMAGE_SIZE - size
        images = images.reshape(n, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        mean = self._mean.reshape(CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        offset_y = rng.integers(0, room + 1, size=n)
        offset_x = rng.integers(0, room + 1, size=n)
        flip = rng.random(n) < 0.5
        # Cases sharing a crop (position, flip) are cut together: at most 2*(room+1)^2
        # slicing copies instead of a per-pixel gather.
        crop_id = (offset_y * (room + 1) + offset_x) * 2 + flip
        crops = np.empty((n, CHANNELS, size, size), dtype=np.float32)
        for crop in np.unique(crop_id):
            cases = np.flatnonzero(crop_id == crop)
            y, x, flipped = offset_y[cases[0]], offset_x[cases[0]], flip[cases[0]]
            cut = images[cases, :, y:y + size, x:x + size] - mean[:, y:y + size, x:x + size]
            crops[cases] = cut[..., ::-1] if flipped else cut
        if self.color_noise > 0:
            noise = rng.standard_normal((n, CHANNELS, 1, 1)).astype(np.float32)
            crops += noise * (np.float32(self.color_noise) * self._channel_std[None, :, None, None])
        data = to_layout(crops)
        data *= np.float32(self.scale)
        return data

    def _test_views(self, images):
        """The centre crop, or the 10 views (view-major columns) for multiview."""
        n, size = len(images), self.inner_size
        room = IMAGE_SIZE - size
        centre = room // 2
        full = super().images_to_data(images, None).reshape(CHANNELS, IMAGE_SIZE, IMAGE_SIZE, n)
        corners = [(0, 0), (0, room), (room, 0), (room, room), (centre, centre)] if self.multiview \
            else [(centre, centre)]
        views = [(y, x, False) for y, x in corners]
        if self.multiview:
            views += [(y, x, True) for y, x in corners]
        # (C, size, size, view, case) is the row-major form of (rows, views*n) view-major:
        # every copy below moves rows of n contiguous floats.
        data = np.empty((CHANNELS, size, size, len(views), n), dtype=np.float32)
        for v, (y, x, flipped) in enumerate(views):
            crop = full[:, y:y + size, x:x + size, :]
            data[:, :, :, v, :] = crop[:, :, ::-1, :] if flipped else crop
        return data.reshape(CHANNELS * size * size, len(views) * n)
