"""ccn.data: data providers for the trainer, with cuda-convnet's interface and layouts.

    provider = get_provider("fashion-mnist", data_path=None, batch_range=None, test=False, seed=1)
    epoch, batchnum, (data, labels) = provider.get_next_batch()
    # data: float32 (channels*imgSizeY*imgSizeX, numCases), case index fastest, rows (C, H, W)
    # labels: float32 (1, numCases), class indices

Registered providers (PROVIDERS): fashion-mnist, cifar, cifar-cropped, dummy, image (make-data
JPEG batches), images (class folders); and dummy-cn-N (PROVIDER_PATTERNS): the dummy provider
with N flat rows, as cuda-convnet named it.
"""
from .base import (PROVIDERS, BackgroundLoader, CorruptDataError, DataProvider, MissingDataError,
                   ProviderOption, get_provider, parse_batch_range, provider_options, provider_params,
                   register_provider, register_provider_pattern, resolve_provider_name)
from . import cifar, dummy, fashion_mnist, image, images  # noqa: F401  (register the providers)

__all__ = ["PROVIDERS", "BackgroundLoader", "CorruptDataError", "DataProvider", "MissingDataError",
           "ProviderOption", "get_provider", "parse_batch_range", "provider_options", "provider_params",
           "register_provider", "register_provider_pattern", "resolve_provider_name"]
