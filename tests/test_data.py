"""Data providers: tiny files in the original formats (IDX, gzipped or not; CIFAR python
pickles, Python 2 and 3 style) written into tmp_path, checked for layout, values, batch
walking, resume, determinism, background loading and error messages."""
import gzip
import io
import os
import pickle
import struct
import threading

import numpy as np
import pytest

from ccn.data import (PROVIDERS, BackgroundLoader, CorruptDataError, DataProvider, MissingDataError,
                      get_provider, parse_batch_range)

REAL_FASHION = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------- file writers

def idx_bytes(array):
    """IDX encoding of a uint8 array: magic 0x000008NN, big-endian sizes, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_file(path, payload, gz):
    if gz:
        path = str(path) + ".gz"
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)
    return str(path)


def write_fashion(folder, rng, n_train=12, n_test=5, rows=5, cols=3, gz=True):
    """Writes the four Fashion-MNIST files; returns (train images, train labels, test images, test labels)."""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_file(os.path.join(folder, name), idx_bytes(array), gz)
    return tuple(arrays.values())


class Py2StrPickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as in
    the original CIFAR-10 python batches, which were pickled by Python 2."""
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle_bytes(obj):
    """Protocol-2 pickle of obj as Python 2 with NumPy 1 wrote it (numpy.core module path)."""
    buffer = io.BytesIO()
    Py2StrPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_pickle(path, obj, style):
    with open(path, "wb") as f:
        if style == "py2":
            def to_bytes(v):
                return v.encode() if isinstance(v, str) else v
            obj = {to_bytes(k): ([to_bytes(x) for x in v] if isinstance(v, list) else v) for k, v in obj.items()}
            f.write(py2_pickle_bytes(obj))
        else:
            pickle.dump(obj, f)


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(folder, rng, n=7, style="py2", data_mean=None):
    """data_batch_1..5 + test_batch (n images each) + batches.meta; returns {batchnum: (data, labels)}."""
    batches = {}
    for batchnum in range(1, 7):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n)]
        name = "test_batch" if batchnum == 6 else f"data_batch_{batchnum}"
        write_pickle(os.path.join(folder, name), {"batch_label": f"batch {batchnum}", "labels": labels,
                                                  "data": data, "filenames": [f"img{i}.png" for i in range(n)]},
                     style)
        batches[batchnum] = (data, np.array(labels))
    meta = {"num_cases_per_batch": n, "label_names": CIFAR_NAMES, "num_vis": 3072}
    if data_mean is not None:
        meta["data_mean"] = data_mean
    write_pickle(os.path.join(folder, "batches.meta"), meta, style)
    return batches


def cifar_train_mean(batches):
    return np.concatenate([batches[b][0] for b in range(1, 6)]).astype(np.float64).mean(axis=0)


def chw(data, dims):
    """(C*H*W, n) provider matrix -> (n, C, H, W)."""
    return data.T.reshape((-1,) + tuple(dims))


def check_layout(data, labels, rows, n):
    assert data.dtype == np.float32 and data.shape == (rows, n) and data.flags.c_contiguous
    assert labels.dtype == np.float32 and labels.shape == (1, n) and labels.flags.c_contiguous


@pytest.fixture
def fashion_dir(tmp_path, rng):
    arrays = write_fashion(tmp_path, rng)
    return tmp_path, arrays


# ---------------------------------------------------------------- fashion-mnist

@pytest.mark.parametrize("gz", [True, False])
def test_fashion_layout_values_and_mean(tmp_path, rng, gz):
    train_x, train_y, test_x, test_y = write_fashion(tmp_path, rng, gz=gz)
    mean = train_x.astype(np.float64).mean(axis=0) / 255.0
    with get_provider("fashion-mnist", str(tmp_path), None, test=True) as p:
        assert p.batch_range == [7] and p.num_views == 1
        assert p.get_data_dims(0) == (1, 5, 3) and p.get_data_dims(1) == 1
        assert p.get_num_classes() == 10 and p.label_names[9] == "Ankle boot"
        epoch, batchnum, (data, labels) = p.get_next_batch()
    assert (epoch, batchnum) == (1, 7)
    check_layout(data, labels, 15, 5)
    # image 3, pixel (y=4, x=1) sits in row y*cols + x, column 3
    assert data[4 * 3 + 1, 3] == pytest.approx(test_x[3, 4, 1] / 255.0 - mean[4, 1], abs=1e-6)
    np.testing.assert_allclose(data, (test_x / 255.0 - mean).reshape(5, -1).T, atol=1e-6)
    np.testing.assert_array_equal(labels[0], test_y)


def test_fashion_training_batches_split_in_six(fashion_dir):
    folder, (train_x, train_y, _, _) = fashion_dir
    mean = train_x.astype(np.float64).mean(axis=0) / 255.0
    with get_provider("fashion-mnist", str(folder), None, shuffle=False) as p:
        assert p.batch_range == [1, 2, 3, 4, 5, 6]
        for b in range(1, 7):
            epoch, batchnum, (data, labels) = p.get_next_batch()
            assert (epoch, batchnum) == (1, b)
            part = slice(2 * (b - 1), 2 * b)
            np.testing.assert_allclose(data, (train_x[part] / 255.0 - mean).reshape(2, -1).T, atol=1e-6)
            np.testing.assert_array_equal(labels[0], train_y[part])


def test_fashion_training_shuffle_keeps_pairs_and_is_seeded(tmp_path, rng):
    train_x, train_y, _, _ = write_fashion(tmp_path, rng, n_train=60)
    mean = train_x.astype(np.float64).mean(axis=0) / 255.0
    expected = (train_x[:10] / 255.0 - mean).reshape(10, -1)

    def first_batches(seed, count):
        with get_provider("fashion-mnist", str(tmp_path), [1], seed=seed) as p:
            return [p.get_next_batch()[2] for _ in range(count)]

    run = first_batches(seed=5, count=2)
    for data, labels in run:  # a permutation of batch 1, each image with its own label
        order = [int(np.argmin(np.abs(expected - column).sum(axis=1))) for column in data.T]
        assert sorted(order) == list(range(10))
        np.testing.assert_allclose(data.T, expected[order], atol=1e-6)
        np.testing.assert_array_equal(labels[0], train_y[:10][order])
    assert not np.array_equal(run[0][0], run[1][0])  # epochs 1 and 2 draw different orders
    again = first_batches(seed=5, count=2)
    for (d1, l1), (d2, l2) in zip(run, again):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    other_seed = first_batches(seed=6, count=1)
    assert not np.array_equal(run[0][0], other_seed[0][0])


def test_fashion_walk_epochs_and_set_position(fashion_dir):
    folder, _ = fashion_dir
    with get_provider("fashion-mnist", str(folder), "2-3", seed=1) as p:
        assert (p.curr_epoch, p.curr_batchnum) == (1, 2)
        walked = []
        for _ in range(5):
            epoch, batchnum, batch = p.get_next_batch()
            walked.append((epoch, batchnum, batch))
        assert [(e, b) for e, b, _ in walked] == [(1, 2), (1, 3), (2, 2), (2, 3), (3, 2)]
        assert (p.curr_epoch, p.curr_batchnum) == (3, 3)
    # resume at (2, 3): a new provider continues exactly where the first one was
    with get_provider("fashion-mnist", str(folder), [2, 3], seed=1) as resumed:
        resumed.set_position(2, 3)
        epoch, batchnum, (data, labels) = resumed.get_next_batch()
        assert (epoch, batchnum) == (2, 3)
        np.testing.assert_array_equal(data, walked[3][2][0])
        np.testing.assert_array_equal(labels, walked[3][2][1])
        assert (resumed.curr_epoch, resumed.curr_batchnum) == (3, 2)
        with pytest.raises(ValueError, match="batchnum"):
            resumed.set_position(1, 4)
        with pytest.raises(ValueError, match="epoch"):
            resumed.set_position(0, 2)


def test_fashion_missing_files_say_what_to_do(tmp_path, rng):
    with pytest.raises(MissingDataError) as err:
        get_provider("fashion-mnist", str(tmp_path / "nowhere"), None)
    assert isinstance(err.value, OSError)
    assert "nowhere" in str(err.value) and "dataset-fashion-mnist" in str(err.value)
    write_fashion(tmp_path, rng)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    get_provider("fashion-mnist", str(tmp_path), None).close()  # training needs no test files
    with pytest.raises(MissingDataError) as err:
        get_provider("fashion-mnist", str(tmp_path), None, test=True)
    message = str(err.value)
    assert os.path.join(str(tmp_path), "t10k-labels-idx1-ubyte") in message
    assert "dataset-fashion-mnist" in message and "--data-path" in message


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("damage", ["magic", "truncated", "extra", "short-header"])
def test_fashion_corrupt_idx_names_the_file(tmp_path, rng, gz, damage):
    images = rng.integers(0, 256, (12, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 12, dtype=np.uint8)
    payload = idx_bytes(images)
    payload = {"magic": b"\x00\x00\x08\x02" + payload[4:], "truncated": payload[:-7],
               "extra": payload + b"\x00", "short-header": payload[:9]}[damage]
    bad = write_file(tmp_path / "train-images-idx3-ubyte", payload, gz)
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels), gz)
    with pytest.raises(CorruptDataError, match=r"train-images-idx3-ubyte") as err:
        get_provider("fashion-mnist", str(tmp_path), None)
    assert bad in str(err.value)


def test_fashion_broken_gzip_and_mismatched_files(tmp_path, rng):
    write_fashion(tmp_path, rng)
    labels_path = str(tmp_path / "train-labels-idx1-ubyte.gz")
    with open(labels_path, "rb") as f:
        whole = f.read()
    with open(labels_path, "wb") as f:
        f.write(whole[:len(whole) // 2])
    with pytest.raises(CorruptDataError, match="train-labels-idx1-ubyte.gz"):
        get_provider("fashion-mnist", str(tmp_path), None)
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8) + 3), gz=True)
    with pytest.raises(CorruptDataError, match="12 images but .* 11 labels"):
        get_provider("fashion-mnist", str(tmp_path), None)
    write_file(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.full(12, 10, np.uint8)), gz=True)
    with pytest.raises(CorruptDataError, match="label 10 out of range"):
        get_provider("fashion-mnist", str(tmp_path), None)


@pytest.mark.skipif(not os.path.isdir(REAL_FASHION), reason="dataset-fashion-mnist is not installed")
def test_fashion_real_training_batch():
    with get_provider("fashion-mnist", None, [1], seed=0) as p:
        assert p.get_data_dims(0) == (1, 28, 28) and p.get_num_classes() == 10
        epoch, batchnum, (data, labels) = p.get_next_batch()
    assert (epoch, batchnum) == (1, 1)
    check_layout(data, labels, 784, 10000)
    assert sorted(np.unique(labels).astype(int)) == list(range(10))
    assert abs(float(data.mean())) < 0.05 and data.min() >= -1.0 and data.max() <= 1.0


# ---------------------------------------------------------------- cifar

@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar_layout_mean_and_test_batch(tmp_path, rng, style):
    batches = write_cifar(tmp_path, rng, style=style)
    mean = cifar_train_mean(batches)
    with get_provider("cifar", str(tmp_path), None, test=True) as p:
        assert p.batch_range == [6] and p.get_data_dims(0) == (3, 32, 32)
        assert p.label_names == CIFAR_NAMES and p.get_num_classes() == 10
        epoch, batchnum, (data, labels) = p.get_next_batch()
    assert (epoch, batchnum) == (1, 6)
    check_layout(data, labels, 3072, 7)
    raw, raw_labels = batches[6]
    # image 4, green channel (c=1), pixel (y=30, x=2): row c*1024 + y*32 + x
    row = 1 * 1024 + 30 * 32 + 2
    assert data[row, 4] == pytest.approx(raw[4, row] - mean[row], abs=1e-3)
    image = chw(data, (3, 32, 32))[4]
    assert image[1, 30, 2] == data[row, 4]
    np.testing.assert_allclose(data, (raw - mean).T, atol=1e-3)
    np.testing.assert_array_equal(labels[0], raw_labels)


def test_cifar_uses_data_mean_and_scale(tmp_path, rng):
    data_mean = rng.uniform(50, 200, (3072, 1))  # cuda-convnet's batches.meta shape
    batches = write_cifar(tmp_path, rng, data_mean=data_mean)
    with get_provider("cifar", str(tmp_path), [3], shuffle=False, scale=1 / 64) as p:
        assert p.batch_range == [3]
        _, _, (data, labels) = p.get_next_batch()
    np.testing.assert_allclose(data, (batches[3][0] - data_mean[:, 0]).T / 64, atol=1e-4)
    np.testing.assert_array_equal(labels[0], batches[3][1])


def test_cifar_training_walk_shuffles_seeded(tmp_path, rng):
    batches = write_cifar(tmp_path, rng, n=9)
    mean = cifar_train_mean(batches)
    with get_provider("cifar", str(tmp_path), None, seed=2) as p:
        assert p.batch_range == [1, 2, 3, 4, 5]
        seen = [p.get_next_batch() for _ in range(6)]
    assert [(e, b) for e, b, _ in seen] == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1)]
    for _, b, (data, labels) in seen:
        expected = batches[b][0] - mean
        order = [int(np.argmin(np.abs(expected - column).sum(axis=1))) for column in data.T]
        assert sorted(order) == list(range(9))
        np.testing.assert_array_equal(labels[0], batches[b][1][order])
    with get_provider("cifar", str(tmp_path), None, seed=2) as again:
        again.set_position(2, 1)
        np.testing.assert_array_equal(again.get_next_batch()[2][0], seen[5][2][0])


def crops_of(image, size):
    """{(y, x, flipped): crop} for every crop position of a (C, 32, 32) image."""
    room = 32 - size
    result = {}
    for y in range(room + 1):
        for x in range(room + 1):
            crop = image[:, y:y + size, x:x + size]
            result[(y, x, False)] = crop
            result[(y, x, True)] = crop[:, :, ::-1]
    return result


def test_cifar_cropped_training_random_crops_and_flips(tmp_path, rng):
    batches = write_cifar(tmp_path, rng, n=16)
    mean = cifar_train_mean(batches)
    with get_provider("cifar-cropped", str(tmp_path), [2], seed=4, shuffle=False, inner_size=28) as p:
        assert p.get_data_dims(0) == (3, 28, 28) and p.num_views == 1
        _, _, (data, labels) = p.get_next_batch()
        _, _, (data_epoch2, _) = p.get_next_batch()
    check_layout(data, labels, 3 * 28 * 28, 16)
    images = (batches[2][0] - mean).reshape(16, 3, 32, 32)
    chosen = []
    for j, crop in enumerate(chw(data, (3, 28, 28))):
        matches = [key for key, candidate in crops_of(images[j], 28).items()
                   if np.allclose(candidate, crop, atol=1e-3)]
        assert len(matches) == 1, f"case {j} is not a crop of its image"
        chosen.append(matches[0])
    assert {flipped for _, _, flipped in chosen} == {False, True}
    assert len({(y, x) for y, x, _ in chosen}) > 1
    assert not np.array_equal(data, data_epoch2)
    np.testing.assert_array_equal(labels[0], batches[2][1])


def test_cifar_cropped_centre_crop_for_test(tmp_path, rng):
    batches = write_cifar(tmp_path, rng)
    mean = cifar_train_mean(batches)
    with get_provider("cifar-cropped", str(tmp_path), None, test=True, crop_border=3) as p:
        assert p.get_data_dims(0) == (3, 26, 26)
        _, _, (data, labels) = p.get_next_batch()
    images = (batches[6][0] - mean).reshape(7, 3, 32, 32)
    np.testing.assert_allclose(chw(data, (3, 26, 26)), images[:, :, 3:29, 3:29], atol=1e-3)
    np.testing.assert_array_equal(labels[0], batches[6][1])


def test_cifar_cropped_multiview_ten_views(tmp_path, rng):
    batches = write_cifar(tmp_path, rng)
    mean = cifar_train_mean(batches)
    with get_provider("cifar-cropped", str(tmp_path), None, test=True, multiview=True, inner_size=24) as p:
        assert p.num_views == 10 and p.get_data_dims(0) == (3, 24, 24)
        _, _, (data, labels) = p.get_next_batch()
    n = 7
    assert data.shape == (3 * 24 * 24, 10 * n) and data.dtype == np.float32 and data.flags.c_contiguous
    assert labels.shape == (1, n)
    np.testing.assert_array_equal(labels[0], batches[6][1])
    images = (batches[6][0] - mean).reshape(n, 3, 32, 32)
    corners = [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]
    for v in range(10):
        view = chw(data[:, v * n:(v + 1) * n], (3, 24, 24))
        y, x = corners[v % 5]
        expected = images[:, :, y:y + 24, x:x + 24]
        if v >= 5:
            expected = expected[..., ::-1]
        np.testing.assert_allclose(view, expected, atol=1e-3)
    # each flipped view is the reflection (x reversed) of its unflipped view
    first, flipped = chw(data[:, 2 * n:3 * n], (3, 24, 24)), chw(data[:, 7 * n:8 * n], (3, 24, 24))
    np.testing.assert_array_equal(flipped, first[..., ::-1])


def test_cifar_cropped_color_noise_per_image_and_channel(tmp_path, rng):
    write_cifar(tmp_path, rng, n=12)
    kwargs = dict(seed=9, shuffle=True, inner_size=24)
    with get_provider("cifar-cropped", str(tmp_path), [1], **kwargs) as plain:
        _, _, (clean, clean_labels) = plain.get_next_batch()
    with get_provider("cifar-cropped", str(tmp_path), [1], color_noise=0.3, **kwargs) as noisy_provider:
        _, _, (noisy, noisy_labels) = noisy_provider.get_next_batch()
    np.testing.assert_array_equal(clean_labels, noisy_labels)  # same shuffle, same crops
    offset = chw(noisy - clean, (3, 24, 24))
    per_plane = offset.reshape(12, 3, -1)
    np.testing.assert_allclose(per_plane, per_plane[:, :, :1].repeat(per_plane.shape[2], axis=2), atol=1e-3)
    # random pixels have std ~74 around the mean image, so offsets are ~0.3*74
    assert 5 < np.abs(per_plane[:, :, 0]).mean() < 60
    assert len(np.unique(np.round(per_plane[:, :, 0], 3))) == 36


def test_cifar_cropped_argument_errors(tmp_path, rng):
    write_cifar(tmp_path, rng)
    with pytest.raises(ValueError, match="multiview"):
        get_provider("cifar-cropped", str(tmp_path), None, multiview=True)
    with get_provider("cifar-cropped", str(tmp_path), None, inner_size=20, crop_border=4) as dp:
        assert dp.get_data_dims() == (3, 20, 20)  # inner_size overrides crop_border
    with pytest.raises(ValueError, match="inner_size"):
        get_provider("cifar-cropped", str(tmp_path), None, inner_size=33)
    with pytest.raises(ValueError, match="color_noise"):
        get_provider("cifar-cropped", str(tmp_path), None, color_noise=-1.0)
    with pytest.raises(TypeError, match="multiview"):
        get_provider("cifar", str(tmp_path), None, multiview=True)
    with pytest.raises(ValueError, match="data path"):
        get_provider("cifar", None, None)
    with pytest.raises(ValueError, match="no batch 7"):
        get_provider("cifar", str(tmp_path), [1, 7])


def test_cifar_missing_and_corrupt_files(tmp_path, rng):
    write_cifar(tmp_path, rng)
    os.remove(tmp_path / "data_batch_4")
    with pytest.raises(MissingDataError, match="data_batch_4"):
        get_provider("cifar", str(tmp_path), [3, 4])
    with pytest.raises(MissingDataError, match="data_batch_4"):  # the mean needs every training batch
        get_provider("cifar", str(tmp_path), None, test=True)
    write_cifar(tmp_path, rng)
    with open(tmp_path / "data_batch_2", "rb") as f:
        whole = f.read()
    with open(tmp_path / "data_batch_2", "wb") as f:
        f.write(whole[:len(whole) // 3])
    with pytest.raises(CorruptDataError, match="data_batch_2"):
        get_provider("cifar", str(tmp_path), None)
    write_pickle(tmp_path / "data_batch_2", {"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}, "py2")
    with pytest.raises(CorruptDataError, match=r"data_batch_2: 'data' must be a uint8 array"):
        get_provider("cifar", str(tmp_path), None)
    os.remove(tmp_path / "batches.meta")
    with pytest.raises(MissingDataError, match="batches.meta"):
        get_provider("cifar", str(tmp_path), [1])


def test_corrupt_file_found_by_background_load_raises_in_get_next_batch(tmp_path, rng):
    write_cifar(tmp_path, rng, data_mean=np.zeros(3072))
    with get_provider("cifar", str(tmp_path), [1, 2]) as p:
        p.get_next_batch()
        with open(tmp_path / "data_batch_1", "wb") as f:
            f.write(b"not a pickle")
        p.get_next_batch()  # batch 2 was fine
        with pytest.raises(CorruptDataError, match="data_batch_1"):
            p.get_next_batch()
        assert (p.curr_epoch, p.curr_batchnum) == (2, 1)  # a failed load does not advance


# ---------------------------------------------------------------- dummy

def test_dummy_shapes_and_determinism():
    params = dict(dims=(2, 5, 3), num_classes=4, batch_size=37, num_batches=3)
    with get_provider("dummy", None, None, seed=11, **params) as p:
        assert p.batch_range == [1, 2, 3] and p.get_data_dims(0) == (2, 5, 3) and p.get_num_classes() == 4
        walk = [p.get_next_batch() for _ in range(4)]
    assert [(e, b) for e, b, _ in walk] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    data, labels = walk[0][2]
    check_layout(data, labels, 30, 37)
    assert set(np.unique(labels)) <= {0.0, 1.0, 2.0, 3.0} and data.std() > 0.5
    np.testing.assert_array_equal(walk[3][2][0], data)  # batch 1 is the same every epoch
    assert not np.array_equal(walk[1][2][0], data)
    with get_provider("dummy", None, None, test=True, seed=11, **params) as again:
        assert again.batch_range == [4]
    with get_provider("dummy", None, [1], seed=11, **params) as same, \
            get_provider("dummy", None, [1], seed=12, **params) as other:
        np.testing.assert_array_equal(same.get_next_batch()[2][0], data)
        assert not np.array_equal(other.get_next_batch()[2][0], data)
    with pytest.raises(ValueError, match="dims"):
        get_provider("dummy", None, None, dims=(3, 0, 4))


# ---------------------------------------------------------------- registry, ranges, loader

def test_registry_and_argument_errors():
    assert {"fashion-mnist", "cifar", "cifar-cropped", "dummy", "images"} <= set(PROVIDERS)
    with pytest.raises(ValueError, match="unknown data provider 'mnist'"):
        get_provider("mnist", None, None)
    with pytest.raises(TypeError, match="has no parameter 'crop'"):
        get_provider("dummy", None, None, crop=3)
    with pytest.raises(ValueError, match="seed"):
        get_provider("dummy", None, None, seed=-1)
    with pytest.raises(ValueError, match="empty"):
        get_provider("dummy", None, [])
    with pytest.raises(ValueError, match="no batch 9"):
        get_provider("dummy", None, [1, 9], num_batches=3)
    with pytest.raises(ValueError, match="idx"):
        get_provider("dummy", None, None).get_data_dims(2)


def test_parse_batch_range():
    assert parse_batch_range("1-5") == [1, 2, 3, 4, 5]
    assert parse_batch_range("1-3,6") == [1, 2, 3, 6]
    assert parse_batch_range("7") == [7]
    assert parse_batch_range(range(2, 4)) == [2, 3]
    with pytest.raises(ValueError, match="backwards"):
        parse_batch_range("5-1")
    with pytest.raises(ValueError, match="batch_range"):
        parse_batch_range("a-b")
    with pytest.raises(TypeError, match="ints"):
        parse_batch_range([1.5])


class RecordingProvider(DataProvider):
    """Records which thread loads each batch; batch 3 fails. (Not registered: the global
    registry stays as the package defines it.)"""

    def __init__(self, data_path, batch_range, test=False, seed=0):
        self.data_dims = (1, 1, 1)
        self.label_names = ["a", "b"]
        self.loads = []
        self.loaded = {b: threading.Event() for b in range(1, 5)}
        super().__init__(data_path, batch_range, test, seed)

    def valid_batches(self):
        return range(1, 5)

    def default_batch_range(self, test):
        return [1, 2, 3, 4]

    def setup(self):
        pass

    def load_batch(self, epoch, batchnum):
        self.loads.append((epoch, batchnum, threading.current_thread()))
        self.loaded[batchnum].set()
        if batchnum == 3:
            raise KeyError("batch 3 is broken")
        return [np.full((1, 2), batchnum, np.float32), np.zeros((1, 2), np.float32)]


def test_background_loading_runs_ahead_in_a_thread_and_reraises():
    threads_before = threading.active_count()
    p = RecordingProvider(None, None)
    assert p.loaded[1].wait(5)  # the first batch starts loading at construction
    assert p.get_next_batch()[1] == 1
    assert p.loaded[2].wait(5)  # ... and the next one as soon as a batch is handed out
    assert all(thread is not threading.main_thread() for _, _, thread in p.loads)
    assert p.get_next_batch()[1] == 2
    with pytest.raises(KeyError, match="batch 3 is broken"):
        p.get_next_batch()
    assert p.curr_batchnum == 3
    p.set_position(1, 4)
    epoch, batchnum, (data, _) = p.get_next_batch()
    assert (epoch, batchnum) == (1, 4) and data[0, 0] == 4
    p.close()
    p.close()
    assert threading.active_count() == threads_before
    with pytest.raises(RuntimeError, match="closed"):
        p.get_next_batch()


def test_background_loader_standalone():
    loader = BackgroundLoader(lambda a, b: a * b)
    loader.prefetch((3, 4))
    assert loader.get((3, 4)) == 12
    assert loader.get((5, 6)) == 30  # not prefetched: loads on demand
    loader.prefetch((1, 1))
    assert loader.get((2, 2)) == 4  # a stale prefetch is dropped
    loader.close()


# ---------------------------------------------------------------- images

def test_image_folder_provider(tmp_path, rng):
    Image = pytest.importorskip("PIL.Image")
    colours = {"cat": (200, 10, 30), "dog": (5, 250, 120)}
    for name, colour in colours.items():
        (tmp_path / name).mkdir()
        for k in range(5):
            Image.new("RGB", (9 + k, 7), colour).save(tmp_path / name / f"{k}.png")
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "dog" / "noise.jpg")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    with get_provider("images", str(tmp_path), None, size=(6, 4), batch_size=4, seed=1) as p:
        assert p.label_names == ["cat", "dog"] and p.batch_range == [1, 2] and p.get_data_dims(0) == (3, 6, 4)
        batches = [p.get_next_batch()[2] for _ in range(2)]
    with get_provider("images", str(tmp_path), None, test=True, size=(6, 4), batch_size=4) as t:
        assert t.batch_range == [3]
        test_data, test_labels = t.get_next_batch()[2]
    data = np.concatenate([b[0] for b in batches] + [test_data], axis=1)
    labels = np.concatenate([b[1] for b in batches] + [test_labels], axis=1)
    check_layout(data, labels, 72, 11)
    assert sorted(labels[0].tolist()) == [0] * 5 + [1] * 6
    images = chw(data, (3, 6, 4))
    solid = 0
    for image, label in zip(images, labels[0]):
        colour = np.array(colours["cat" if label == 0 else "dog"]) / 255.0 - 0.5
        if np.allclose(image, colour[:, None, None], atol=1e-6):
            solid += 1
    assert solid == 10  # every PNG, resized, keeps its colour in (C, H, W) order
    with open(tmp_path / "cat" / "0.png", "wb") as f:
        f.write(b"\x89PNG broken")
    with pytest.raises(ValueError, match="single batch"):
        get_provider("images", str(tmp_path), None, size=4, batch_size=11)
    with get_provider("images", str(tmp_path), [1], size=4, batch_size=11) as broken:
        with pytest.raises(CorruptDataError, match="0.png"):
            broken.get_next_batch()


def test_providers_declare_their_options():
    """The option parser, its defaults and the parameters each provider gets come from the
    providers' own declarations: nothing outside a provider names its options."""
    from ccn import options
    from ccn.data import provider_options, provider_params
    declared = provider_options()
    assert declared["inner_size"][1] == ["cifar-cropped", "dummy", "image", "images"]
    given, _ = options.parse(["--inner-size=20", "--color-noise=0.5"])
    op = options.merge(given)
    assert op["crop_border"] == 4 and op["inner_size"] == 20
    assert provider_params("cifar-cropped", op, test=False) == dict(crop_border=4, inner_size=20, color_noise=0.5,
                                                                   scalar_mean=-1.0)
    assert provider_params("cifar-cropped", op, test=True) == dict(crop_border=4, inner_size=20, scalar_mean=-1.0)
    with pytest.raises(ValueError, match="--inner-size: the fashion-mnist provider does not take it"):
        provider_params("fashion-mnist", op, test=False)  # refused, never ignored
    assert provider_params("fashion-mnist", options.merge({}), test=False) == {}
    usage = options.build_parser().format_help()
    assert "--crop-border" in usage and "cifar-cropped, dummy: size of the square crops" in " ".join(usage.split())
    # providers sharing an option explain it each in their own words
    assert "image, images: std of AlexNet's PCA colour-noise" in " ".join(usage.split())
    assert provider_params("image", op, test=True) == dict(inner_size=20, scalar_mean=-1.0, decode_workers=-1)
