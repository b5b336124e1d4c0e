"""ccn: a convolutional network engine in the cuda-convnet tradition.

The compiled engine is ``ccn._core``; the trainer, layer-file parser and data
providers live in this package.
"""
import os as _os

# A development build (cmake -B <dir>) may point here instead of an installed wheel.
if _os.environ.get("CCN_BUILD_DIR"):
    __path__.insert(0, _os.path.abspath(_os.environ["CCN_BUILD_DIR"]))

from . import _core  # noqa: E402
from ._core import Tensor  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Tensor", "_core"]
