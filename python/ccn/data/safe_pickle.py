"""Pickles that hold data only: cuda-convnet's and cuda-convnet2's batch files (CIFAR's
among them), read without running code.

They store batches and batches.meta as pickles. A pickle names functions
that the reader calls (its "globals"); ``load`` refuses every global except the ones NumPy
uses to rebuild an array (``ndarray``, ``dtype``, ``_reconstruct``, ``scalar``), so a file
can hold dicts, lists, tuples, bytes, str, numbers and NumPy arrays and nothing that runs.
``dump`` writes with protocol 4 through a temporary file and a rename, so a reader (or a
resumed writer) never sees half a file.
"""
import os
import pickle

from ..regular_file import NotARegularFile, open_regular_file
from .base import CorruptDataError, MissingDataError

# The module/name pairs NumPy's array pickles call, in NumPy 1 and NumPy 2 spellings.
_ARRAY_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
    for name in ("_reconstruct", "scalar", "ndarray", "dtype")
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: batch files hold data only")


def load(path, what="batch file", missing_hint=""):
    """The object pickled in ``path`` (str keys of dicts decoded from Python 2 bytes).
    MissingDataError (with ``missing_hint``) when there is no file; CorruptDataError for a
    damaged or hostile pickle, or a path that is not a regular file (a FIFO, a device)."""
    try:
        f = open_regular_file(path)
    except FileNotFoundError:
        raise MissingDataError(f"{what} {path} not found{missing_hint}") from None
    except NotARegularFile as e:
        raise CorruptDataError(str(e)) from None
    try:
        with f:
            obj = _DataUnpickler(f, encoding="bytes").load()
    except OSError:
        raise
    except Exception as e:  # a damaged or hostile pickle fails in many ways; all mean "corrupt"
        raise CorruptDataError(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict):
        obj = {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def dump(obj, path):
    """Pickles ``obj`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
