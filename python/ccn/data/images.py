"""Image-folder provider: data_path/<class name>/<image files> -> batches of resized images.

Classes are the subfolders of data_path in sorted order (their names are label_names).
Every image file (.jpg, .jpeg, .png, .bmp, .ppm) is listed, the list is put in a fixed
order (sorted, then permuted with a constant seed so batches mix classes, the same for a
train and a test provider on the same folder) and cut into batches of batch_size
(the last one may be smaller). The last batch is the default test range, the others the
training range. Images are decoded with Pillow, converted to RGB (channels=3) or
grayscale (channels=1), resized to size (an int or (imgSizeY, imgSizeX)) bilinearly,
scaled to [0, 1] and shifted by -0.5 (no dataset statistics needed, so large folders
start at once). Layout (channels*imgSizeY*imgSizeX, numCases) float32, case fastest,
rows in (C, H, W) order; training batches have their cases shuffled by (seed, epoch, batch).
"""
import os

import numpy as np

from .base import (CorruptDataError, DataProvider, MissingDataError, batch_rng, labels_row,
                   register_provider, to_layout)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")
LISTING_SEED = 0x1A6E5


def list_images(data_path):
    """(class names, [(path, label), ...] in the fixed batch order)."""
    if not os.path.isdir(data_path):
        raise MissingDataError(f"image folder {data_path} not found; pass --data-path=<folder with one "
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
class ImageFolderProvider(DataProvider):
    """Folder of class subfolders; params: seed, shuffle, size, channels, batch_size."""

    def __init__(self, data_path, batch_range, test=False, seed=0, shuffle=True, size=32, channels=3,
                 batch_size=1000):
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
        self.shuffle = bool(shuffle)
        self.batch_size = int(batch_size)
        self.data_dims = (channels, int(size[0]), int(size[1]))
        self.label_names, self._files = list_images(data_path)
        self.num_batches = -(-len(self._files) // self.batch_size)
        super().__init__(data_path, batch_range, test, seed)

    def valid_batches(self):
        return range(1, self.num_batches + 1)

    def default_batch_range(self, test):
        if self.num_batches < 2 and not test:
            raise ValueError(f"image folder {self.data_path}: {len(self._files)} images make a single batch "
                             f"of batch_size {self.batch_size}, which is the test batch; pass a smaller "
                             f"batch_size or an explicit batch_range")
        return [self.num_batches] if test else list(range(1, self.num_batches))

    def setup(self):
        try:
            import PIL.Image  # noqa: F401  (checked here so a missing Pillow fails early)
        except ImportError:
            raise ImportError("the images provider needs Pillow (pip install pillow)") from None

    def _read_image(self, path):
        from PIL import Image
        channels, height, width = self.data_dims
        try:
            with Image.open(path) as image:
                image = image.convert("RGB" if channels == 3 else "L")
                image = image.resize((width, height), Image.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as e:
            raise CorruptDataError(f"{path}: cannot decode image ({e})") from None
        return pixels.reshape(height, width, channels).transpose(2, 0, 1)

    def load_batch(self, epoch, batchnum):
        entries = self._files[(batchnum - 1) * self.batch_size:batchnum * self.batch_size]
        images = np.stack([self._read_image(path) for path, _ in entries])
        labels = np.array([label for _, label in entries])
        cases = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0) - np.float32(0.5)
        if self.shuffle and not self.test:
            order = batch_rng(self.seed, epoch, batchnum).permutation(len(cases))
            cases, labels = cases[order], labels[order]
        return [to_layout(cases), labels_row(labels)]
