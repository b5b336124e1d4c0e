"""Decoding and cropping images in worker processes, straight into the batch matrix.

A provider hands ``DecodePool.fill`` its cases' sources (JPEG bytes or file paths) and the
choices made for them (``augment``: crop corners and flips per view, colour offsets). The
pool makes the output (rows, views*numCases) float32 — view-major columns, rows (C, H, W) —
in a shared-memory file, cuts the cases into chunks and sends each chunk to a worker
process. A worker decodes with Pillow (JPEGs at the smallest DCT scale that still covers
the wanted size), resizes to ``image_size`` if needed, crops, flips, subtracts the mean (a
crop-sized image or a scalar), adds the offsets, scales, and writes its columns; the parent
only waits, so its per-image work is nothing and the pipeline scales with the workers.

Memory stays bounded: one fill at a time per pool (the provider's background loader asks
for one batch ahead of the trainer), its chunks hold compressed images only, and the
output file is unlinked as soon as the batch is written (the returned array keeps the
mapping alive). Workers start from a forkserver, never by forking a process that runs
the engine's threads. ``workers=0`` decodes in the calling thread (tests, debugging).
"""
import concurrent.futures
import io
import mmap
import multiprocessing
import os
import tempfile

import numpy as np

from .base import CorruptDataError

_STATE = None  # (image_size, channels, mean) in a worker, set once by _init_worker


def decode(source, image_size, channels):
    """uint8 (H, W, channels) of an image file path or its bytes, resized to image_size."""
    from PIL import Image
    height, width = image_size
    mode = "RGB" if channels == 3 else "L"
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as image:
        if image.format == "JPEG":
            image.draft(mode, (width, height))  # decode at a reduced DCT scale when that is still big enough
        image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)


def _init_worker(state):
    global _STATE
    _STATE = state


def _worker_fill(job):
    return _fill_chunk(_STATE, job, None)


def _fill_chunk(state, job, out):
    """Writes one chunk's columns into ``out``, or into the shared file named in the job.

    Crops and flips are cut from the decoded uint8 image; the conversion to float32, the
    transposition to case-fastest columns and the mean subtraction are one NumPy pass
    straight into the batch, the colour offsets and the scale one more each."""
    path, shape, start, sources, names, corners, offsets, inner, scale = job
    image_size, channels, mean = state
    k, views = corners.shape[:2]
    per_view = shape[1] // views
    inner_y, inner_x = inner
    crops = np.empty((views, k, inner_y, inner_x, channels), dtype=np.uint8)
    for i, (source, name) in enumerate(zip(sources, names)):
        try:
            pixels = decode(source, image_size, channels)
        except (OSError, SyntaxError, ValueError) as e:
            raise CorruptDataError(f"{name}: cannot decode image ({e})") from None
        for v in range(views):
            y, x, flip = (int(c) for c in corners[i, v])
            crop = pixels[y:y + inner_y, x:x + inner_x]
            crops[v, i] = crop[:, ::-1] if flip else crop
    mapping = None
    if out is None:
        with open(path, "r+b") as f:
            mapping = mmap.mmap(f.fileno(), 0)
        out = np.frombuffer(mapping, dtype=np.float32).reshape(shape)
    planes = out.reshape(channels, inner_y, inner_x, shape[1])
    mean = mean[..., None] if isinstance(mean, np.ndarray) else np.float32(mean)
    for v in range(views):
        first = v * per_view + start
        target = planes[..., first:first + k]
        np.subtract(crops[v].transpose(3, 1, 2, 0), mean, out=target, dtype=np.float32)
        if offsets is not None:
            target += offsets.T[:, None, None, :]
        if scale != 1:
            target *= np.float32(scale)
    if mapping is not None:
        del out, planes, target
        mapping.close()


def _shared_matrix(shape):
    """(path of a new shared-memory file, float32 array of ``shape`` mapped on it)."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="ccn-batch-", dir=folder)
    try:
        os.ftruncate(fd, int(np.prod(shape)) * 4)
        mapping = mmap.mmap(fd, 0)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return path, np.frombuffer(mapping, dtype=np.float32).reshape(shape)


class DecodePool:
    """Worker processes that turn sources into batch columns; see the module docstring.

    image_size: (H, W) every image is brought to before cropping; channels: 3 (RGB) or 1;
    mean: a float32 (channels, innerY, innerX) crop or a scalar, in pixel units, subtracted
    from every crop and view.
    """

    def __init__(self, workers, image_size, channels, mean):
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
            raise ValueError(f"decode_workers must be an int >= 0, got {workers!r}")
        if isinstance(mean, np.ndarray):
            mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.workers = int(workers)
        self._state = (tuple(image_size), int(channels), mean)
        self._executor = None
        if self.workers:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("forkserver"),
                initializer=_init_worker, initargs=(self._state,))

    def fill(self, sources, names, corners, offsets, inner, scale):
        """The (channels*innerY*innerX, views*n) float32 matrix of n sources (see module doc)."""
        n, views = corners.shape[:2]
        channels = self._state[1]
        inner = tuple(int(i) for i in inner)
        shape = (channels * inner[0] * inner[1], views * n)
        if self._executor is None:
            out = np.empty(shape, dtype=np.float32)
            _fill_chunk(self._state, (None, shape, 0, sources, names, corners, offsets, inner, scale), out)
            return out
        path, out = _shared_matrix(shape)
        try:
            chunk = max(1, min(64, -(-n // (2 * self.workers))))
            futures = [self._executor.submit(
                _worker_fill, (path, shape, s, sources[s:s + chunk], names[s:s + chunk], corners[s:s + chunk],
                               None if offsets is None else offsets[s:s + chunk], inner, scale))
                for s in range(0, n, chunk)]
            try:
                for future in futures:
                    future.result()
            finally:
                for future in futures:
                    future.cancel()
                concurrent.futures.wait(futures)
        finally:
            os.unlink(path)
        return out

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
