"""The part the ``image`` and ``images`` providers share: AlexNet's augmentation, decoded
in worker processes (``decode_pool``), with the sources of the next batch read ahead.

A subclass says where its images come from: ``read_source_info()`` (in ``setup``) sets
``label_names``, ``image_size`` (H, W), ``mean_image`` (float32 (C, H, W) in pixel units,
or None for a scalar), ``default_mean`` (the scalar used without a mean image),
``color_pca`` ((eigvals, eigvecs) in pixel units, needed only for colour noise) and
``read_sources(batchnum)`` returns (sources, names for messages, labels).

Values: (pixel - mean) * pixel_scale, the mean being --scalar-mean when >= 0, else the
centre crop of the mean image (subtracted from every crop and view, as cuda-convnet2 does:
one mean for all positions lets the workers subtract it while they transpose), else
default_mean. Training: cases shuffled, a random inner crop and flip per
case (``augment.training_corners``), PCA colour noise of std --color-noise when > 0
(``augment.pca_offsets``); test: the centre crop, or ten views with multiview=True
(columns view-major: view 0 of every case, then view 1, ...; labels once).

Stages overlap: while the trainer trains batch n and copies n+1 to the devices, the
background loader has the workers decode and crop n+2, and a reader thread reads the
sources of the batch after it (n+3) from disk. Memory: two decoded batches (the one
training and the one being written) and two batches of compressed sources at most.
"""
import concurrent.futures
import os

import numpy as np

from . import augment
from .base import DataProvider, ProviderOption, batch_rng, labels_row
from .decode_pool import DecodePool


class AugmentedImageProvider(DataProvider):
    options = (
        ProviderOption("inner_size", int, 0, "size of the square crops (0: the whole image, no cropping)"),
        ProviderOption("color_noise", float, 0.0, "std of AlexNet's PCA colour-noise coefficients alpha "
                                                  "(the paper's 0.1; training only)", phase="train"),
        ProviderOption("scalar_mean", float, -1.0, "subtract this pixel value instead of the mean image (-1: off)"),
        ProviderOption("decode_workers", int, -1, "processes decoding images (-1: one per core; 0: none, "
                                                  "decode in the loader thread)"),
    )
    multiview_capable = True
    pixel_scale = 1.0
    default_mean = 0.0
    mean_image = None
    color_pca = None

    def __init__(self, data_path, batch_range, test, seed, shuffle, inner_size, multiview, color_noise,
                 scalar_mean, decode_workers):
        if multiview and not test:
            raise ValueError("multiview applies to test providers only (test=True)")
        if isinstance(inner_size, bool) or not isinstance(inner_size, (int, np.integer)) or inner_size < 0:
            raise ValueError(f"inner_size must be an int >= 0, got {inner_size!r}")
        if not float(color_noise) >= 0:
            raise ValueError(f"color_noise must be >= 0, got {color_noise!r}")
        if not np.isfinite(float(scalar_mean)):
            raise ValueError(f"scalar_mean must be a number, got {scalar_mean!r}")
        if isinstance(decode_workers, bool) or not isinstance(decode_workers, (int, np.integer)) \
                or decode_workers < -1:
            raise ValueError(f"decode_workers must be -1 (one per core), 0 or a positive int, got {decode_workers!r}")
        self.shuffle = bool(shuffle)
        self.inner_size = int(inner_size)
        self.multiview = bool(multiview)
        self.num_views = augment.NUM_VIEWS if self.multiview else 1
        self.color_noise = float(color_noise) if not test else 0.0
        self.scalar_mean = float(scalar_mean)
        self.decode_workers = (os.cpu_count() or 1) if decode_workers == -1 else int(decode_workers)
        self._pool = None
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-reader")
        self._read_ahead = None  # (batchnum, future of read_sources)
        super().__init__(data_path, batch_range, test, seed)

    def setup(self):
        self.read_source_info()
        height, width = self.image_size
        if self.inner_size > min(height, width):
            raise ValueError(f"inner_size {self.inner_size} is larger than the {height}x{width} images")
        self.inner = (self.inner_size, self.inner_size) if self.inner_size else (height, width)
        self.data_dims = (self.channels, *self.inner)
        if self.color_noise > 0 and self.color_pca is None:
            raise ValueError(f"{self.data_path}: --color-noise needs the colour PCA, which the data does not have")
        if self.scalar_mean >= 0:
            mean = np.float32(self.scalar_mean)
        elif self.mean_image is not None:
            top, left = (height - self.inner[0]) // 2, (width - self.inner[1]) // 2
            mean = self.mean_image[:, top:top + self.inner[0], left:left + self.inner[1]]
        else:
            mean = np.float32(self.default_mean)
        self._pool = DecodePool(self.decode_workers, self.image_size, self.channels, mean)

    def load_batch(self, epoch, batchnum):
        sources, names, labels = self._sources(batchnum)
        self._read_next(batchnum)
        labels = np.asarray(labels, dtype=np.int64)
        n = len(sources)
        if self.test:
            corners = augment.test_corners(n, self.image_size, self.inner, self.multiview)
            offsets = None
        else:
            rng = batch_rng(self.seed, epoch, batchnum)
            if self.shuffle:
                order = rng.permutation(n)
                sources, names, labels = [sources[i] for i in order], [names[i] for i in order], labels[order]
            corners = augment.training_corners(rng, n, self.image_size, self.inner)
            offsets = augment.pca_offsets(rng, n, self.color_noise, *self.color_pca) if self.color_noise > 0 else None
        data = self._pool.fill(sources, names, corners, offsets, self.inner, self.pixel_scale)
        return [data, labels_row(labels)]

    def _sources(self, batchnum):
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None and ahead[0] == batchnum:
            return ahead[1].result()
        return self.read_sources(batchnum)

    def _read_next(self, batchnum):
        """Starts reading the sources of the batch after ``batchnum`` in the range."""
        following = self.batch_range[(self.batch_range.index(batchnum) + 1) % len(self.batch_range)]
        if following != batchnum:
            self._read_ahead = (following, self._reader.submit(self.read_sources, following))

    def close(self):
        super().close()
        self._reader.shutdown(wait=True, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()
