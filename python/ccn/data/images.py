"""Image-folder provider: data_path/<class name>/<image files> -> batches of resized images.

Classes are the subfolders of data_path in sorted order (their names are label_names).
Every image file (.jpg, .jpeg, .png, .bmp, .ppm) is listed, the list is put in a fixed
order (sorted, then permuted with a constant seed so batches mix classes, the same for a
train and a test provider on the same folder) and cut into batches of batch_size
(the last one may be smaller). The last batch is the default test range, the others the
training range. Images are decoded with Pillow in worker processes, converted to RGB
(channels=3) or grayscale (channels=1) and resized to size (an int or (imgSizeY,
imgSizeX)) bilinearly. Values are (pixel - 127.5) / 255, i.e. [0, 1] shifted by -0.5 (no
dataset statistics needed, so large folders start at once), or (pixel - scalar_mean) /
255 with scalar_mean >= 0. Crops, flips, multiview and colour noise are
``augmented.AugmentedImageProvider``'s; the colour PCA for the noise comes from the first
PCA_SAMPLE images of the batch range. Layout (channels*innerY*innerX, views*numCases)
float32, case fastest, rows in (C, H, W) order; training batches have their cases
shuffled by (seed, epoch, batch).
"""
import os

import numpy as np

from . import augment
from .augmented import AugmentedImageProvider
from .base import CorruptDataError, MissingDataError, register_provider
from .decode_pool import decode

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
LISTING_SEED = 0x1A6E5
PCA_SAMPLE = 256


def list_images(data_path, option="--data-path"):
    """(class names, [(path, label), ...] in the fixed batch order); option names the
    command-line option that gave data_path, for the error messages."""
    if not os.path.isdir(data_path):
        raise MissingDataError(f"image folder {data_path} not found; pass {option}=<folder with one "
                               f"subfolder of images per class>")
    classes = sorted(d for d in os.listdir(data_path) if os.path.isdir(os.path.join(data_path, d)))
    if not classes:
        raise MissingDataError(f"image folder {data_path} has no class subfolders")
    files = []
    for label, name in enumerate(classes):
        folder = os.path.join(data_path, name)
        files.extend((os.path.join(folder, f), label) for f in sorted(os.listdir(folder))
                     if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise MissingDataError(f"image folder {data_path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) "
                               f"in its class subfolders")
    order = np.random.default_rng(LISTING_SEED).permutation(len(files))
    return classes, [files[i] for i in order]


@register_provider("images")
class ImageFolderProvider(AugmentedImageProvider):
    """Folder of class subfolders; params: seed, shuffle, size, channels, batch_size, inner_size,
    multiview, color_noise, scalar_mean, decode_workers."""

    pixel_scale = 1.0 / 255.0
    default_mean = 127.5

    def __init__(self, data_path, batch_range, test=False, seed=0, shuffle=True, size=32, channels=3,
                 batch_size=1000, inner_size=0, multiview=False, color_noise=0.0, scalar_mean=-1.0,
                 decode_workers=-1):
        if data_path is None:
            raise ValueError("the images provider needs a data path (--data-path=<folder with one "
                             "subfolder of images per class>)")
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                                 for s in size):
            raise ValueError(f"size must be a positive int or (imgSizeY, imgSizeX), got {size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.image_size = (int(size[0]), int(size[1]))
        self.channels = int(channels)
        self._names, self._files = list_images(data_path)
        self.num_batches = -(-len(self._files) // self.batch_size)
        super().__init__(data_path, batch_range, test, seed, shuffle, inner_size, multiview, color_noise,
                         scalar_mean, decode_workers)

    def valid_batches(self):
        return range(1, self.num_batches + 1)

    def default_batch_range(self, test):
        if self.num_batches < 2 and not test:
            raise ValueError(f"image folder {self.data_path}: {len(self._files)} images make a single batch "
                             f"of batch_size {self.batch_size}, which is the test batch; pass a smaller "
                             f"batch_size or an explicit batch_range")
        return [self.num_batches] if test else list(range(1, self.num_batches))

    def read_source_info(self):
        try:
            import PIL.Image  # noqa: F401  (checked here so a missing Pillow fails early)
        except ImportError:
            raise ImportError("the images provider needs Pillow (pip install pillow)") from None
        self.label_names = self._names
        if self.color_noise > 0:
            if self.channels != 3:
                raise ValueError("color_noise needs RGB images (channels=3)")
            self.color_pca = self._sample_color_pca()

    def _sample_color_pca(self):
        """Colour PCA of the first PCA_SAMPLE images of the batch range (no stored statistics)."""
        entries = [e for b in self.batch_range for e in self._batch_entries(b)][:PCA_SAMPLE]
        rgb_sum, rgb_outer, count = np.zeros(3), np.zeros((3, 3)), 0
        for path, _ in entries:
            try:
                pixels = decode(path, self.image_size, 3).reshape(-1, 3).astype(np.float64)
            except (OSError, SyntaxError, ValueError) as e:
                raise CorruptDataError(f"{path}: cannot decode image ({e})") from None
            rgb_sum += pixels.sum(axis=0)
            rgb_outer += pixels.T @ pixels
            count += len(pixels)
        return augment.color_pca(rgb_sum, rgb_outer, count)

    def _batch_entries(self, batchnum):
        return self._files[(batchnum - 1) * self.batch_size:batchnum * self.batch_size]

    def read_sources(self, batchnum):
        entries = self._batch_entries(batchnum)
        paths = [path for path, _ in entries]
        return paths, paths, [label for _, label in entries]
