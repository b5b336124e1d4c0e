"""The ImageNet path on a generated JPEG tree: make_data's batches read back, resumed after
an interruption; the image and images providers' crops, flips, 10 views and PCA colour
noise checked against crops cut in the test; the trainer end to end on the batches."""
import io
import os
import pickle

import numpy as np
import pytest

from ccn import make_data
from ccn.data import CorruptDataError, augment, get_provider, safe_pickle

Image = pytest.importorskip("PIL.Image")

CLASSES = ["ant", "bee", "cow"]
TINTS = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200)])
SIZE, INNER = 24, 16


def write_tree(root, rng, per_class=8):
    """Class folders of JPEGs of random sizes (short side >= SIZE), each tinted by its class."""
    for label, name in enumerate(CLASSES):
        os.makedirs(root / name)
        for k in range(per_class):
            height, width = rng.integers(SIZE + 4, 2 * SIZE, 2)
            pixels = np.clip(rng.normal(TINTS[label], 40, (height, width, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{k}.jpg", quality=95)
    return root


def make(src, tgt, *extra, after_batch=None):
    return make_data.main([f"--src={src}", f"--tgt={tgt}", f"--size={SIZE}", "--batch-size=8",
                           "--sub-batch-size=5", "--workers=1", "--val-fraction=0.25", *extra],
                          after_batch=after_batch)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    src = write_tree(root / "src", np.random.default_rng(15))
    assert make(src, root / "batches") == 0
    return src, root / "batches"


def stored_images(folder, batchnum):
    """(uint8 (n, 3, S, S) decoded as the provider decodes, labels) of one make_data batch."""
    images, labels = [], []
    parts = sorted(p for p in os.listdir(folder / f"data_batch_{batchnum}") if p.startswith("data_batch_"))
    for part in sorted(parts, key=lambda p: int(p.rsplit(".", 1)[1])):
        batch = safe_pickle.load(folder / f"data_batch_{batchnum}" / part)
        for jpeg, label in zip(batch["data"], batch["labels"]):
            with Image.open(io.BytesIO(jpeg)) as image:
                images.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
            labels.append(label[0])
    return np.stack(images), np.array(labels)


def test_make_data_output_reads_back(batches):
    src, tgt = batches
    meta = safe_pickle.load(tgt / "batches.meta")
    assert meta["label_names"] == CLASSES and meta["num_vis"] == 3 * SIZE * SIZE
    assert meta["train_batch_range"] == [1, 2, 3] and meta["test_batch_range"] == [4]
    train = [stored_images(tgt, b) for b in (1, 2, 3)]
    images = np.concatenate([t[0] for t in train]).astype(np.float64)
    labels = np.concatenate([t[1] for t in train] + [stored_images(tgt, 4)[1]])
    assert len(images) == 18 and len(labels) == 24 and images.shape[1:] == (3, SIZE, SIZE)
    assert np.bincount(labels).tolist() == [8, 8, 8]
    # every stored image keeps its class's tint: the label is the right one
    colours = np.concatenate([stored_images(tgt, b)[0] for b in (1, 2, 3, 4)]).mean(axis=(2, 3))
    assert (colours.argmax(axis=1) == labels).all()
    # the mean image and colour PCA are those of the stored training images
    np.testing.assert_allclose(meta["data_mean"].reshape(3, SIZE, SIZE), images.mean(axis=0), atol=1e-3)
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, 3)
    covariance = np.cov(pixels.T, bias=True)
    eigvals, eigvecs = meta["color_pca_eigvals"], meta["color_pca_eigvecs"]
    assert eigvals.shape == (3,) and eigvecs.shape == (3, 3) and (np.diff(eigvals) <= 0).all()
    np.testing.assert_allclose(eigvecs.T @ eigvecs, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(eigvecs @ np.diag(eigvals) @ eigvecs.T, covariance, rtol=1e-4, atol=1e-3)


def test_batch_files_load_without_running_code(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo owned",))
    path = tmp_path / "data_batch_1.0"
    with open(path, "wb") as f:
        pickle.dump({"data": [Hostile()], "labels": [[0]]}, f)
    with pytest.raises(CorruptDataError, match=r"refuses to load (posix|os)\.system"):
        safe_pickle.load(path)
    safe_pickle.dump({"a": np.arange(3.0), "b": [b"x"]}, tmp_path / "ok")
    loaded = safe_pickle.load(tmp_path / "ok")
    assert loaded["b"] == [b"x"] and loaded["a"].tolist() == [0.0, 1.0, 2.0]


def test_interrupted_make_data_resumes(tmp_path, batches, capsys):
    src, reference = batches

    def interrupt_after_two(number):
        if number == 2:
            raise KeyboardInterrupt
    tgt = tmp_path / "batches"
    assert make(src, tgt, after_batch=interrupt_after_two) == 130
    assert sorted(os.listdir(tgt)) == ["data_batch_1", "data_batch_2", "make_data.json"]
    os.makedirs(tgt / "data_batch_3.partial")  # a half-written batch folder left behind
    first = os.stat(tgt / "data_batch_1" / "data_batch_1.0").st_mtime_ns
    written = []
    assert make(src, tgt, after_batch=written.append) == 0
    assert written == [3, 4] and "2 of 4 batches already" in capsys.readouterr().out
    assert os.stat(tgt / "data_batch_1" / "data_batch_1.0").st_mtime_ns == first
    assert sorted(os.listdir(tgt)) == sorted(os.listdir(reference))
    for b in (1, 2, 3, 4):  # the resumed run wrote what an uninterrupted run writes
        for name in os.listdir(reference / f"data_batch_{b}"):
            assert (tgt / f"data_batch_{b}" / name).read_bytes() == (reference / f"data_batch_{b}" / name).read_bytes()
    ours, theirs = safe_pickle.load(tgt / "batches.meta"), safe_pickle.load(reference / "batches.meta")
    np.testing.assert_array_equal(ours["data_mean"], theirs["data_mean"])
    # other settings on the same folder: one clear line, nothing written
    assert make(src, tgt, "--quality=50") == 2
    assert "other settings" in capsys.readouterr().err


def centre(image, inner):
    top = (image.shape[-2] - inner) // 2
    return image[..., top:top + inner, top:top + inner]


def crop_choices(image, mean, inner):
    """{(y, x, flip): that crop of a (C, H, W) image minus the mean image's centre crop}."""
    choices = {}
    for y in range(image.shape[1] - inner + 1):
        for x in range(image.shape[2] - inner + 1):
            crop = image[:, y:y + inner, x:x + inner].astype(np.float32)
            choices[(y, x, False)], choices[(y, x, True)] = crop - centre(mean, inner), crop[:, :, ::-1] - centre(mean, inner)
    return choices


def test_training_crops_and_flips_within_bounds(batches):
    _, tgt = batches
    mean = safe_pickle.load(tgt / "batches.meta")["data_mean"].reshape(3, SIZE, SIZE)
    seen = set()
    with get_provider("image", str(tgt), None, inner_size=INNER, shuffle=False, decode_workers=1, seed=4) as p:
        assert p.get_data_dims(0) == (3, INNER, INNER)
        for _ in range(3):
            _, batchnum, (data, labels) = p.get_next_batch()
            images, stored_labels = stored_images(tgt, batchnum)
            assert data.shape == (3 * INNER * INNER, len(images)) and data.dtype == np.float32
            assert labels[0].tolist() == stored_labels.tolist()
            for case, image in zip(data.T.reshape(-1, 3, INNER, INNER), images):
                found = [key for key, crop in crop_choices(image, mean, INNER).items()
                         if np.allclose(case, crop, atol=1e-3)]
                assert len(found) >= 1, "a case is no crop of its image"
                seen.update(found)
    assert {key[2] for key in seen} == {False, True}  # both flips drawn over 18 cases
    assert len({key[:2] for key in seen}) > 3  # and several positions


def test_centre_crop_and_ten_views(batches):
    _, tgt = batches
    images, labels = stored_images(tgt, 4)
    meta = safe_pickle.load(tgt / "batches.meta")
    n, room = len(images), SIZE - INNER
    mean = centre(meta["data_mean"].reshape(3, SIZE, SIZE), INNER)
    with get_provider("image", str(tgt), None, test=True, inner_size=INNER, decode_workers=0) as p:
        data, _ = p.get_next_batch()[2]
    np.testing.assert_allclose(data.T.reshape(n, 3, INNER, INNER), centre(images, INNER) - mean, atol=1e-3)
    with get_provider("image", str(tgt), None, test=True, inner_size=INNER, multiview=True,
                      decode_workers=1) as p:
        assert p.num_views == 10
        data, got_labels = p.get_next_batch()[2]
    assert data.shape == (3 * INNER * INNER, 10 * n) and got_labels[0].tolist() == labels.tolist()
    corners = [(0, 0), (0, room), (room, 0), (room, room), (room // 2, room // 2)]
    for v, ((y, x), flip) in enumerate([(c, False) for c in corners] + [(c, True) for c in corners]):
        expected = images[:, :, y:y + INNER, x:x + INNER].astype(np.float32)
        expected = (expected[..., ::-1] if flip else expected) - mean
        np.testing.assert_allclose(data[:, v * n:(v + 1) * n].T.reshape(n, 3, INNER, INNER), expected,
                                   atol=1e-3, err_msg=f"view {v}")


def test_pca_offsets_have_the_documented_spread():
    rng = np.random.default_rng(7)
    eigvecs = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    eigvals = np.array([4000.0, 300.0, 40.0])
    offsets = augment.pca_offsets(np.random.default_rng(1), 20000, 0.1, eigvals, eigvecs)
    # along eigenvector i the offset is alpha_i * lambda_i / 255 with alpha_i ~ N(0, 0.1)
    alpha = (offsets.astype(np.float64) @ eigvecs) * 255 / eigvals
    np.testing.assert_allclose(alpha.std(axis=0), 0.1, rtol=0.03)
    np.testing.assert_allclose(alpha.mean(axis=0), 0, atol=0.003)
    np.testing.assert_allclose(np.corrcoef(alpha.T), np.eye(3), atol=0.03)


def test_color_noise_is_one_pca_offset_per_image(batches):
    _, tgt = batches
    meta = safe_pickle.load(tgt / "batches.meta")
    eigvals, eigvecs = meta["color_pca_eigvals"].astype(np.float64), meta["color_pca_eigvecs"].astype(np.float64)
    sigma, alphas = 0.5, []
    kwargs = dict(inner_size=INNER, decode_workers=0, seed=9)
    with get_provider("image", str(tgt), None, color_noise=sigma, **kwargs) as noisy, \
            get_provider("image", str(tgt), None, **kwargs) as plain:
        for _ in range(6):  # two epochs: 36 images
            noise = noisy.get_next_batch()[2][0] - plain.get_next_batch()[2][0]
            noise = noise.reshape(3, INNER * INNER, -1)
            per_image = noise.mean(axis=1)  # (3, n): one RGB offset per image, the same at every pixel
            np.testing.assert_allclose(noise, np.broadcast_to(per_image[:, None, :], noise.shape), atol=1e-3)
            alphas.append((eigvecs.T @ per_image) * 255 / eigvals[:, None])
    alphas = np.concatenate(alphas, axis=1)
    assert alphas.shape == (3, 36)
    assert 0.6 * sigma < alphas.std() < 1.4 * sigma and abs(alphas.mean()) < 0.3 * sigma


def test_images_provider_crops_views_and_scalar_mean(tmp_path):
    src = write_tree(tmp_path / "src", np.random.default_rng(3), per_class=4)
    kwargs = dict(size=SIZE, batch_size=6, inner_size=INNER, decode_workers=0)
    with get_provider("images", str(src), None, test=True, multiview=True, scalar_mean=100.0, **kwargs) as p:
        data, labels = p.get_next_batch()[2]
        paths = [path for path, _ in p._files[-6:]]
    images = np.stack([np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
                       for path in paths]).transpose(0, 3, 1, 2)
    n = len(images)
    assert data.shape == (3 * INNER * INNER, 10 * n) and labels.shape == (1, n)
    top_left = (images[:, :, :INNER, :INNER].astype(np.float32) - 100) / 255
    # JPEG decoding at a reduced DCT scale can differ from a full decode by a few levels
    np.testing.assert_allclose(data[:, :n].T.reshape(n, 3, INNER, INNER), top_left, atol=6 / 255)
    flipped = data[:, 9 * n:].T.reshape(n, 3, INNER, INNER)[..., ::-1]
    np.testing.assert_allclose(flipped, data[:, 4 * n:5 * n].T.reshape(n, 3, INNER, INNER))
    with get_provider("images", str(src), None, color_noise=0.1, seed=2, **kwargs) as p:
        assert p.color_pca[0].shape == (3,) and p.get_next_batch()[2][0].shape == (3 * INNER * INNER, 6)
    with pytest.raises(ValueError, match="inner_size 30 is larger"):
        get_provider("images", str(src), None, size=SIZE, batch_size=6, inner_size=30, decode_workers=0)
    with pytest.raises(ValueError, match="multiview applies to test providers only"):
        get_provider("images", str(src), None, multiview=True, **kwargs)


def test_corrupt_jpeg_names_the_batch_file_and_case(tmp_path, batches):
    _, reference = batches
    tgt = tmp_path / "batches"
    os.makedirs(tgt / "data_batch_1")
    os.link(reference / "batches.meta", tgt / "batches.meta")
    safe_pickle.dump({"data": [b"\xff\xd8 not a jpeg"], "labels": [[0]]}, tgt / "data_batch_1" / "data_batch_1.0")
    with get_provider("image", str(tgt), [1], decode_workers=1) as p:
        with pytest.raises(CorruptDataError, match=r"data_batch_1\.0 case 0: cannot decode"):
            p.get_next_batch()


# ---------------------------------------------------------------- end to end

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def test_trains_on_make_data_batches_and_tests_ten_views(tmp_path, batches, capsys):
    from ccn import checkpoint
    from ccn.cli import convnet_main
    _, tgt = batches
    args = [f"--layer-def={TESTS}/alexnet-tiny.cfg", f"--layer-params={TESTS}/alexnet-tiny-params.cfg",
            "--data-provider=image", f"--data-path={tgt}", f"--save-path={tmp_path / 'runs'}", "--gpu=cpu",
            f"--inner-size={INNER}", "--color-noise=0.1", "--mini=4", "--epochs=2", "--seed=5",
            "--decode-workers=1", "--multiview-test=1"]
    assert convnet_main(args) == 0
    out = capsys.readouterr().out
    assert "2.3 test:  logprob: cost" in out  # trained both epochs, tested on the 10 views
    run_dir = tmp_path / "runs" / os.listdir(tmp_path / "runs")[0]
    state = checkpoint.load(str(run_dir))[0]
    assert state["epoch"] == 2 and state["op"]["data_provider"] == "image"
    assert np.isfinite(state["params"]["fc8"]["weights"][0]).all()
    assert convnet_main(["-f", str(run_dir), "--test-only=1"]) == 0
    assert "(6 cases)" in capsys.readouterr().out


def test_alexnet_files_follow_the_paper():
    from ccn import config
    layers = config.load_layers(os.path.join(REPO, "layers", "alexnet.cfg"),
                                os.path.join(REPO, "layers", "alexnet-params.cfg"), {0: (3, 224, 224), 1: 1})
    by_name = {layer["name"]: layer for layer in layers}
    weighted = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    for name in weighted:
        layer = by_name[name]
        assert np.ravel(layer["initW"]).tolist() == [0.01] and layer["initB"] == (1 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0)
        for progress, eps in ((0.1, 0.01), (0.4, 0.001), (0.6, 0.0001), (0.9, 0.00001)):
            eps_w, eps_b, mom_w, mom_b, wc = config.learning_params(layer, progress)
            assert eps_w == [pytest.approx(eps)] and eps_b == pytest.approx(eps)
            assert mom_w == [0.9] and mom_b == 0.9 and wc == [0.0005]
    assert by_name["dropout6"]["keep"] == by_name["dropout7"]["keep"] == 0.5


def test_batches_kept_by_the_consumer_are_never_overwritten(batches):
    """The workers' shared output files are reused only once no array of a batch lives."""
    _, tgt = batches
    with get_provider("image", str(tgt), None, inner_size=INNER, decode_workers=1, seed=2) as p:
        kept = [p.get_next_batch()[2][0] for _ in range(3)]
        copies = [k.copy() for k in kept]
        view = kept[0][:, 1:3]
        del kept[0]
        for _ in range(6):
            p.get_next_batch()
        for batch, copy in zip(kept, copies[1:]):
            np.testing.assert_array_equal(batch, copy)
        np.testing.assert_array_equal(view, copies[0][:, 1:3])
        files = list(p._pool._buffers)
        assert files and len(files) <= 4
    assert not any(os.path.exists(path) for path, _ in files)  # removed on close
