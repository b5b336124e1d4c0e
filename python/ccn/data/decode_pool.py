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
output files (at most MAX_BUFFERS kept) are reused once no array of an earlier batch
refers to them; they are removed when the pool closes or is collected. Workers start from a forkserver, never by forking a process that runs
the engine's threads. ``workers=0`` decodes in the calling thread (tests, debugging).
"""
import concurrent.futures
import io
import mmap
import multiprocessing
import os
import sys
import tempfile
import weakref

import numpy as np

from .base import CorruptDataError

_STATE = None  # (image_size, channels, mean) in a worker, set once by _init_worker
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map every page of a file at once
_WORKER_MAPS = {}  # (path, shape) -> the worker's array on that shared file
MAX_BUFFERS = 4  # shared files a pool keeps for reuse


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
    if out is None:
        out = _worker_matrix(path, shape)
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


def _worker_matrix(path, shape):
    """A worker's float32 view of the shared file ``path``; the mapping is kept for the
    batches that reuse the file (every chunk touches every page of its batch, since its
    columns cross all rows, so mapping afresh each time would fault on every page)."""
    key = (path, shape)
    if key not in _WORKER_MAPS:
        if len(_WORKER_MAPS) >= 2 * MAX_BUFFERS:
            _WORKER_MAPS.pop(next(iter(_WORKER_MAPS)))
        with open(path, "r+b") as f:
            mapping = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED | _POPULATE)
        _WORKER_MAPS[key] = np.frombuffer(mapping, dtype=np.float32).reshape(shape)
    return _WORKER_MAPS[key]


def _new_shared_file(nbytes):
    """(path, mapping) of a new shared-memory file of nbytes."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix="ccn-batch-", dir=folder)
    try:
        os.ftruncate(fd, nbytes)
        mapping = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | _POPULATE)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return path, mapping


def _in_use(entry):
    """Whether an array still refers to a (path, mapping) entry's mapping: the only other
    references are the entry itself and getrefcount's argument."""
    return sys.getrefcount(entry[1]) > 2


def _remove_files(buffers):
    for path, mapping in buffers:
        try:
            os.unlink(path)
        except OSError:
            pass
    buffers.clear()


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
        self._buffers = []  # [(path, mapping)] of shared files, reused once no array uses them
        self._cleanup = weakref.finalize(self, _remove_files, self._buffers)
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
        path, out = self._shared_matrix(shape)
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
        return out

    def _shared_matrix(self, shape):
        """(path, float32 array of shape) on a shared file no earlier batch's array uses.

        A returned batch keeps its file busy for as long as any array or view of it lives
        (they all hold the mapping); a file is reused only after that, so a consumer may
        keep batches as long as it likes. Creating and populating a file costs far more
        than decoding into one (tmpfs pages are zeroed and accounted one by one)."""
        nbytes = int(np.prod(shape)) * 4
        for entry in self._buffers:
            if len(entry[1]) == nbytes and not _in_use(entry):
                return entry[0], np.frombuffer(entry[1], dtype=np.float32).reshape(shape)
        if len(self._buffers) >= MAX_BUFFERS:
            idle = [entry for entry in self._buffers if not _in_use(entry)]
            if idle:
                self._buffers.remove(idle[0])
                _remove_files([idle[0]])
        path, mapping = _new_shared_file(nbytes)
        self._buffers.append((path, mapping))
        return path, np.frombuffer(mapping, dtype=np.float32).reshape(shape)

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._cleanup()  # the files go; arrays still in use keep their mappings
