"""The random and fixed choices of the image providers' augmentation, made in the parent.

AlexNet's recipe (Krizhevsky et al. 2012, section 4.1): training takes a random
inner = (innerY, innerX) crop of each image and flips it horizontally with probability 1/2,
then adds PCA colour noise; a test takes the centre crop, or ten views (the four corner
crops and the centre crop, then the same five flipped) whose predictions are averaged.

A choice is a (y, x, flip) triple per view of a case: ``corners`` arrays have shape
(numCases, views, 3). The decoding workers only follow them, so every random number of a
batch comes from the provider's generator for (seed, epoch, batchnum).

Colour noise: the eigenvalues lambda_i and eigenvectors p_i of the 3x3 covariance of the
training set's RGB pixel values are stored in pixel units (0..255). As in the paper, each
training image draws alpha_i ~ N(0, sigma) per eigenvector and every pixel gets
[p1 p2 p3] @ (alpha * lambda), with lambda measured on the paper's [0, 1] pixel scale; in
pixel units that offset is 255 * P @ (alpha * lambda / 255^2) = P @ (alpha * lambda) / 255.
"""
import numpy as np

NUM_VIEWS = 10


def training_corners(rng, n, image_size, inner):
    """(n, 1, 3): a uniform crop corner in the image and a fair-coin flip per case."""
    (height, width), (inner_y, inner_x) = image_size, inner
    corners = np.empty((n, 1, 3), dtype=np.int64)
    corners[:, 0, 0] = rng.integers(0, height - inner_y + 1, size=n)
    corners[:, 0, 1] = rng.integers(0, width - inner_x + 1, size=n)
    corners[:, 0, 2] = rng.random(n) < 0.5
    return corners


def test_corners(n, image_size, inner, multiview):
    """(n, views, 3): the centre crop, or the ten views in the order documented above."""
    (height, width), (inner_y, inner_x) = image_size, inner
    room_y, room_x = height - inner_y, width - inner_x
    centre = (room_y // 2, room_x // 2)
    if not multiview:
        views = [centre + (0,)]
    else:
        five = [(0, 0), (0, room_x), (room_y, 0), (room_y, room_x), centre]
        views = [c + (0,) for c in five] + [c + (1,) for c in five]
    return np.broadcast_to(np.array(views, dtype=np.int64), (n, len(views), 3)).copy()


def color_pca(rgb_sum, rgb_outer_sum, count):
    """(eigenvalues descending (3,), eigenvectors as columns (3, 3)) of the RGB covariance,
    from the sums of pixel values (3,) and of their outer products (3, 3) over count pixels."""
    if count < 2:
        raise ValueError("colour PCA needs at least two pixels")
    mean = np.asarray(rgb_sum, np.float64) / count
    covariance = np.asarray(rgb_outer_sum, np.float64) / count - np.outer(mean, mean)
    eigvals, eigvecs = np.linalg.eigh(covariance)
    order = np.argsort(eigvals)[::-1]
    return np.maximum(eigvals[order], 0.0), eigvecs[:, order]


def pca_offsets(rng, n, sigma, eigvals, eigvecs):
    """(n, 3) float32 RGB offsets in pixel units, one per image (see the module docstring)."""
    alpha = rng.normal(0.0, sigma, size=(n, 3))
    return ((alpha * np.asarray(eigvals, np.float64)) @ np.asarray(eigvecs, np.float64).T / 255.0).astype(np.float32)
