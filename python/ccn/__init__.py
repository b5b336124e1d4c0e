"""ccn: a convolutional network engine in the cuda-convnet tradition.

The compiled engine is ``ccn._core``; the trainer, layer-file parser and data
providers live in this package.
"""
import os as _os

# A development build (cmake -B <dir>) may point here instead of an installed wheel.
if _os.environ.get("CCN_BUILD_DIR"):
    __path__.insert(0, _os.path.abspath(_os.environ["CCN_BUILD_DIR"]))


def _load_blas():
    """Loads OpenBLAS from the scipy-openblas32 package, wherever it is installed, so that
    _core finds it even when the two packages sit in different site-packages."""
    import ctypes

    try:
        import scipy_openblas32
    except ImportError:
        return
    path = _os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    if _os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


_load_blas()

from . import _core  # noqa: E402
from ._core import Tensor  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Tensor", "_core"]
