"""Layer shapes the benchmarks time: AlexNet (one tower, 227x227 input) and the default
Fashion-MNIST net. Sizes follow cuda-convnet's output-size rules."""

# conv: name, channels, img, filters, filterSize, padding, stride, groups
ALEXNET_CONV = [
    ("conv1", 3, 227, 96, 11, 0, 4, 1),
    ("conv2", 96, 27, 256, 5, 2, 1, 2),
    ("conv3", 256, 13, 384, 3, 1, 1, 1),
    ("conv4", 384, 13, 384, 3, 1, 1, 2),
    ("conv5", 384, 13, 256, 3, 1, 1, 2),
]
# pool: name, channels, img, sizeX, stride
ALEXNET_POOL = [("pool1", 96, 55, 3, 2), ("pool2", 256, 27, 3, 2), ("pool5", 256, 13, 3, 2)]
# cross-map response norm: name, channels, img, size
ALEXNET_NORM = [("rnorm1", 96, 55, 5), ("rnorm2", 256, 27, 5)]
# fc: name, inputs, outputs
ALEXNET_FC = [("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)]

FMNIST_CONV = [("conv1", 1, 28, 32, 5, 2, 1, 1), ("conv2", 32, 14, 64, 5, 2, 1, 1)]
FMNIST_POOL = [("pool1", 32, 28, 3, 2), ("pool2", 64, 14, 3, 2)]
FMNIST_NORM = [("rnorm1", 32, 14, 5)]
FMNIST_FC = [("fc1", 3136, 256), ("fc2", 256, 10)]

LAYER_SETS = {
    "alexnet": (ALEXNET_CONV, ALEXNET_POOL, ALEXNET_NORM, ALEXNET_FC),
    "fmnist": (FMNIST_CONV, FMNIST_POOL, FMNIST_NORM, FMNIST_FC),
}


def conv_out(img, filter_size, padding, stride):
    from ccn import _core  # the engine owns the formula
    return _core.ConvGeometry.output_size(img, filter_size, padding, stride)


def pool_out(img, size, stride, start=0):
    from ccn import _core
    return _core.PoolGeometry.output_size(img, size, start, stride)
