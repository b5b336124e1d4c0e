"""Reproducers of crashes, hangs, tracebacks and wrong answers on hostile input: each must be
one clear error (or the right answer), never a signal, a hang or a traceback."""
import math
import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ccn import _core, config
from ccn.cli import convnet_main
from oprunner import to_device
from trainer_fixtures import SMALL_NET, SMALL_PARAMS, write_cifar, write_net

def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def cifar(tmp_path):
    return write_cifar(str(tmp_path / "cifar"))


def convnet(tmp_path, cifar, layers, params, *extra):
    return convnet_main([f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}",
                         "--data-provider=cifar", f"--save-path={tmp_path / 'runs'}", "--train-range=1-5",
                         "--test-range=6", "--mini=16", "--gpu=cpu", "--epochs=1", *extra])


# -- geometry arithmetic in 64 bits ------------------------------------------------------------------
HUGE_GEOMETRIES = [
    dict(filter_size=65536, padding=65535),  # 65536^2 wraps int32 to 0: a (0, F) filter array passed
    dict(filter_size=1, img_size_y=65536, img_size_x=65536),  # 65536 x 65536 modules
    dict(filter_size=65536, padding=65535, modules_y=1, modules_x=1),
    # 2^22 * 2^21 * 2^21 = 2^64 wraps int64 to 0: (0, n) images passed, the kernel read past them
    dict(channels=2**22, img_size_y=2**21, img_size_x=2**21, filter_size=1, modules_y=1, modules_x=1),
]


@pytest.mark.parametrize("local", [False, True])
@pytest.mark.parametrize("geometry", HUGE_GEOMETRIES)
def test_huge_geometry_is_a_value_error(geometry, local):
    args = dict(channels=1, img_size_y=4, num_filters=16, local=local)
    args.update(geometry)
    g = _core.ConvGeometry(**args)
    images = np.ones((16, 2), np.float32)
    filters = np.ones((0, 16), np.float32)
    targets = np.ones((16, 2), np.float32)
    for op, a, b, out in ((_core.filter_acts, images, filters, targets), (_core.img_acts, targets, filters, images),
                          (_core.weight_acts, images, targets, filters)):
        with pytest.raises(ValueError, match="too large"):
            op(a, b, out, g)


# The products of three int sizes that wrap int64 (2^22 * 2^21 * 2^21 = 2^64 -> 0) let (0, n)
# tensors through the shape checks, and the CPU kernels then ran over 2^43 rows of them (a
# segfault); larger-than-int window coordinates gave silently wrong gradients.
WRAPS_TO_ZERO = dict(channels=2**22, img_size_y=2**21, img_size_x=2**21)


def _empty():
    return np.ones((0, 2), np.float32)


def test_pool_rows_that_wrap_are_a_value_error():
    g = _core.PoolGeometry(**WRAPS_TO_ZERO, size_x=1, outputs_y=2**21, outputs_x=2**21)
    e = _empty
    for call in (lambda: _core.local_pool(e(), e(), g, "max"), lambda: _core.local_max_undo(e(), e(), e(), e(), g),
                 lambda: _core.local_avg_undo(e(), e(), g)):
        with pytest.raises(ValueError, match=r"pool: channels \* imgSizeY \* imgSizeX = .* is too large"):
            call()


def test_norm_rows_that_wrap_are_a_value_error():
    g = _core.NormGeometry(**WRAPS_TO_ZERO, size=1, add_scale=0.1, pow_scale=0.75)
    e = _empty
    for call in (lambda: _core.response_norm(e(), e(), e(), g),
                 lambda: _core.response_norm_undo(e(), e(), e(), e(), e(), g),
                 lambda: _core.response_norm_cross_map(e(), e(), e(), g),
                 lambda: _core.response_norm_cross_map_undo(e(), e(), e(), e(), e(), g),
                 lambda: _core.contrast_norm(e(), e(), e(), e(), g),
                 lambda: _core.contrast_norm_undo(e(), e(), e(), e(), e(), e(), g)):
        with pytest.raises(ValueError, match=r"norm: channels \* imgSizeY \* imgSizeX = .* is too large"):
            call()
    # one axis of 2^31 - 1 pixels fits, but its window bounds (p + size/2 + 1) would not
    tall = _core.NormGeometry(channels=1, img_size_y=2**31 - 1, img_size_x=1, size=3, add_scale=0.1, pow_scale=0.75)
    with pytest.raises(ValueError, match=r"norm: max\(channels, imgSizeY, imgSizeX\) \+ size = 2147483650 is too large"):
        _core.response_norm(_empty(), _empty(), _empty(), tall)


def test_image_rows_that_wrap_are_a_value_error():
    g = _core.ImageGeometry(**WRAPS_TO_ZERO)
    e = _empty
    taps = np.ones(3, np.float32)
    for call in (lambda: _core.reflect_horizontal(e(), e(), g), lambda: _core.crop(e(), e(), g, 0, 0, 1, 1),
                 lambda: _core.gaussian_blur(e(), taps, e(), g, True),
                 lambda: _core.bed_of_nails(e(), e(), g, 0, 1, 1, 1),
                 lambda: _core.bed_of_nails_undo(e(), e(), g, 0, 1, 1, 1)):
        with pytest.raises(ValueError, match=r"image: channels \* imgSizeY \* imgSizeX = .* is too large"):
            call()
    # the resize's own output size: 16 * 2^30 * 2^30 = 2^64
    small = _core.ImageGeometry(channels=16, img_size_y=1, img_size_x=1)
    with pytest.raises(ValueError, match=r"resize: channels \* tgtSizeY \* tgtSizeX = .* is too large"):
        _core.resize_bilinear(np.ones((16, 2), np.float32), e(), small, 2**30, 2**30)


# Window bounds such as p - start - size + stride - 1 (in the CPU's floor division) passed 2^31
# with stride 2^31 - 1: window 0 then held no pixel, and the gradients came back zero.
@pytest.mark.parametrize("stride, too_large", [(2**31 - 7, False), (2**31 - 1, True)])
def test_pool_window_coordinates_fit_int(stride, too_large):
    g = _core.PoolGeometry(channels=1, img_size_y=4, img_size_x=4, size_x=2, stride=stride, outputs_y=1, outputs_x=1)
    assert (4 + 2 + stride > 2**31 - 1) == too_large
    rng = np.random.default_rng(3)
    grad = rng.standard_normal((1, 5)).astype(np.float32)
    targets = np.zeros((16, 5), np.float32)
    if too_large:
        with pytest.raises(ValueError, match=r"pool: imgSizeY \+ \|start\| \+ sizeX \+ stride = 2147483653 is too large"):
            _core.local_avg_undo(grad, targets, g)
        return
    _core.local_avg_undo(grad, targets, g)
    expected = np.zeros((4, 4, 5))
    expected[:2, :2] = grad.astype(np.float64) / 4  # the one window covers rows and columns 0..1
    np.testing.assert_allclose(targets.reshape(4, 4, 5), expected, rtol=1e-6)


@pytest.mark.parametrize("stride, too_large", [(2**31 - 7, False), (2**31 - 1, True)])
def test_cross_map_pool_window_coordinates_fit_int(stride, too_large):
    g = _core.CrossMapPoolGeometry(channels=4, pixels=1, size=2, stride=stride, outputs=1)
    rng = np.random.default_rng(4)
    images = rng.standard_normal((4, 3)).astype(np.float32)
    pooled = images[:2].max(axis=0, keepdims=True)
    grad = rng.standard_normal((1, 3)).astype(np.float32)
    targets = np.zeros((4, 3), np.float32)
    if too_large:
        with pytest.raises(ValueError, match=r"cross-map pool: channels \+ \|start\| \+ size \+ stride = .* too large"):
            _core.cross_map_max_pool_undo(images, pooled, grad, targets, g)
        return
    _core.cross_map_max_pool_undo(images, pooled, grad, targets, g)
    expected = np.zeros((4, 3))
    winner = images[:2].argmax(axis=0)
    expected[winner, np.arange(3)] = grad[0]
    np.testing.assert_array_equal(targets, expected)


def test_output_counts_past_int_are_a_value_error():
    with pytest.raises(ValueError, match="pool: the output count 4294967292 .* is too large"):
        _core.PoolGeometry.output_size(2**31 - 1, 1, -(2**31 - 3), 1)  # was wrapped to -4
    with pytest.raises(ValueError, match="pool: the output count .* is too large"):
        _core.PoolGeometry(channels=1, img_size_y=2**31 - 1, img_size_x=4, size_x=1, start=-(2**31 - 3))
    with pytest.raises(ValueError, match="conv: the module count 6442450941 .* is too large"):
        _core.ConvGeometry.output_size(2**31 - 1, 1, 2**31 - 1, 1)  # was wrapped to 2147483645


# Layer dicts whose geometry wrapped to the right row count: 2^30 * 652805 * 26317 = 2^64 + 2^30
# wraps int64 to 2^30, 65537 * 65537 wraps int32 to 131073, (65537 - 1) * 65536 wraps int32 to 0.
# Each was accepted as a net with a geometry its kernels would have run past.
_W = 2**30
WRAPPED_LAYERS = {
    "rnorm": (_W, dict(type="rnorm", channels=_W, imgSizeY=652805, imgSizeX=26317, size=1, scale=0.1, pow=0.75,
                       outputs=_W), "norm: channels * imgSizeY * imgSizeX = about"),
    "cmrnorm": (_W, dict(type="cmrnorm", channels=_W, imgSizeY=652805, imgSizeX=26317, size=1, scale=0.1,
                         pow=0.75, outputs=_W), "norm: channels * imgSizeY * imgSizeX = about"),
    "cnorm": (_W, dict(type="cnorm", channels=_W, imgSizeY=652805, imgSizeX=26317, size=1, scale=0.1, pow=0.75,
                       outputs=_W), "norm: channels * imgSizeY * imgSizeX = about"),
    "pool": (_W, dict(type="pool", pool="max", channels=_W, imgSizeY=652805, imgSizeX=26317, sizeX=1, stride=1,
                      outputsY=652805, outputsX=26317, outputs=_W), "pool: channels * imgSizeY * imgSizeX = about"),
    "href": (_W, dict(type="href", channels=_W, imgSizeY=652805, imgSizeX=26317, outputs=_W),
             "image: channels * imgSizeY * imgSizeX = about"),
    "blur": (_W, dict(type="blur", channels=_W, imgSizeY=652805, imgSizeX=26317, filterSize=3,
                      filter=[0.25, 0.5, 0.25], outputs=_W), "image: channels * imgSizeY * imgSizeX = about"),
    "cmpool": (131073, dict(type="cmpool", channels=1, imgSizeY=65537, imgSizeX=65537, size=1, stride=1,
                            outputChannels=1, outputs=131073), "cross-map pool: imgSizeY * imgSizeX = 4295098369"),
    "nailbed": (16, dict(type="nailbed", channels=1, imgSizeY=4, imgSizeX=4, start=0, stride=65536, outputsY=65537,
                         outputsX=1, outputs=65537), "(outputsY 65537 - 1) * stride 65536 lies outside the image"),
}


@pytest.mark.parametrize("kind", sorted(WRAPPED_LAYERS))
def test_layer_geometry_that_wraps_is_refused(kind):
    inputs, layer, message = WRAPPED_LAYERS[kind]
    layers = [dict(name="data", type="data", dataIdx=0, outputs=inputs, gpu=0),
              dict(layer, name="x", inputs=["data"], gpu=0)]
    with pytest.raises(ValueError) as err:
        _core.Net(layers, ["cpu"], 0)
    assert str(err.value).startswith("layer 'x': ") and message in str(err.value), err.value


def test_layer_output_shape_that_wraps_is_refused():
    layers = [dict(name="data", type="data", dataIdx=0, outputs=_W, outChannels=_W, outSizeY=652805, outSizeX=26317,
                   gpu=0)]
    with pytest.raises(ValueError, match=r"layer 'data': layer: outChannels \* outSizeY \* outSizeX = about .* too large"):
        _core.Net(layers, ["cpu"], 0)


def test_a_pool_stride_past_int_in_a_layer_file_is_one_line(tmp_path, cifar, capsys):
    """The layer file's checks accept one output with any stride; the engine's window
    arithmetic does not, and says so instead of computing wrong gradients."""
    net = SMALL_NET.replace("sizeX=3\nstride=2", "sizeX=3\nstride=2147483647\noutputsX=1")
    layers, params = write_net(tmp_path, net=net)
    assert convnet(tmp_path, cifar, layers, params) == 2
    one_line_error(capsys, "pool1", "imgSizeY + |start| + sizeX + stride", "too large")


# -- the thread pool ---------------------------------------------------------------------------------
def test_resizing_the_pool_while_another_thread_is_in_gemm():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((200, 100)).astype(np.float32)
    expected = a.astype(np.float64) @ b
    before, stop, results = _core.num_threads(), threading.Event(), []

    def work():
        while not stop.is_set():
            c = np.zeros((300, 100), np.float32)
            _core.gemm(a, b, c)
            results.append(np.abs(c - expected).max())

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        for i in range(100):
            _core.set_num_threads(1 + i % 4)
    finally:
        stop.set()
        worker.join(30)
        _core.set_num_threads(before)
    assert not worker.is_alive(), "gemm hung while the pool was resized"
    assert results and max(results) < 1e-3


THREAD_LIMIT_SCRIPT = """
import resource, numpy as np
from ccn import _core
vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (300 << 20),) * 2)  # room for a few dozen thread stacks
for call in (lambda: _core.set_num_threads(1000), lambda: _core.Net(LAYERS, ["cpu"] * 1000, 1)):
    try:
        call()
        print("no error")
    except RuntimeError as e:
        print("RuntimeError:", e)
a = np.ones((64, 64), np.float32); c = np.zeros((64, 64), np.float32)
_core.gemm(a, a, c)
print("gemm", c[0, 0], _core.num_threads())
"""


def test_thread_creation_failure_raises():
    layers = [dict(name="data", type="data", dataIdx=0, outputs=10, gpu=0),
              dict(name="fc", type="fc", inputs=["data"], outputs=4, gpu=0, initW=0.01, initB=0.0)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", f"LAYERS = {layers!r}\n" + THREAD_LIMIT_SCRIPT], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("RuntimeError: set_num_threads(1000): could not start thread"), out.stdout
    assert lines[1].startswith("RuntimeError: cannot start the thread of logical device"), out.stdout
    assert lines[2] == "gemm 64.0 1"  # the pool still works, on the caller


# -- layer files ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_layer_def_must_be_a_regular_file(tmp_path, cifar, capsys, special):
    _, params = write_net(tmp_path)
    if special == "fifo":
        special = str(tmp_path / "layers.cfg")
        os.mkfifo(special)
    assert convnet(tmp_path, cifar, special, params) == 2
    one_line_error(capsys, special, "not a regular file")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("hostile", ["pickle with code", "fifo", "/dev/zero"])
def test_a_hostile_cifar_batch_runs_no_code_and_is_one_line(tmp_path, cifar, capsys, hostile):
    """CIFAR batches are pickles: one that names a function is refused before anything runs,
    and a FIFO or a device in a batch's place is refused without blocking."""
    layers, params = write_net(tmp_path)
    batch = os.path.join(cifar, "data_batch_3")
    os.remove(batch)
    marker = tmp_path / "owned"
    if hostile == "fifo":
        os.mkfifo(batch)
    elif hostile == "/dev/zero":
        os.symlink("/dev/zero", batch)
    else:
        with open(batch, "wb") as f:
            pickle.dump({"data": _RunsCode(marker), "labels": [0]}, f)
    assert convnet(tmp_path, cifar, layers, params) == 2
    assert not marker.exists()
    one_line_error(capsys, batch, "refuses to load" if hostile == "pickle with code" else "not a regular file")


@pytest.mark.parametrize("edit, needles", [
    (("padding=2", "padding=1000"), ["[conv1] padding", "smaller than filterSize"]),
    (("filters=8", "filters=9223372036854775808"), ["[conv1] filters", "must be <= 2147483647"]),
])
def test_out_of_range_layer_values_name_the_key(tmp_path, cifar, capsys, edit, needles):
    layers, params = write_net(tmp_path, net=SMALL_NET.replace(*edit))
    assert convnet(tmp_path, cifar, layers, params) == 2
    one_line_error(capsys, *needles)


def test_a_layer_too_large_for_memory_is_refused_before_allocation(tmp_path, cifar, capsys):
    layers, params = write_net(tmp_path, net=SMALL_NET.replace("outputs=10", "outputs=2000000000"))
    assert convnet(tmp_path, cifar, layers, params) == 2
    err = one_line_error(capsys, "layer 'fc10' needs about", "bytes for its weights", "available")
    needed = int(err.split("needs about ")[1].split(" bytes")[0].replace(",", ""))
    assert needed >= 4 * 3 * 512 * 2_000_000_000


def test_activations_too_large_for_memory_are_refused_before_allocation():
    """The engine checks a batch size's activations against the device's memory before
    allocating them, naming the layer (here 5e7 outputs x 1024 cases x 2 buffers x 4 bytes)."""
    layers = [dict(name="data", type="data", dataIdx=0, outputs=1, gpu=0),
              dict(name="fc", type="fc", inputs=["data"], outputs=50_000_000, gpu=0, initW=0.01)]
    net = _core.Net(layers, ["cpu"], 0)
    with pytest.raises(ValueError, match=r"layer 'fc' needs about [\d,]+ bytes for minibatches of 1024 but cpu has"):
        net.fprop([np.ones((1, 1024), np.float32)], False)


def test_a_64_bit_int_in_a_layer_dict_names_layer_and_key():
    layers = [dict(name="data", type="data", dataIdx=0, outputs=10, gpu=0),
              dict(name="fc", type="fc", inputs=["data"], outputs=2 ** 63, gpu=0, initW=0.01, initB=0.0)]
    with pytest.raises(ValueError, match="layer 'fc': key 'outputs': must be an int, got an int beyond 64 bits"):
        _core.Net(layers, ["cpu"], 1)


def test_an_indented_key_is_one_clean_line(tmp_path, cifar, capsys):
    layers, params = write_net(tmp_path, params=SMALL_PARAMS.replace("\nmomW=0.9", "\n  momW=0.9", 1))
    assert convnet(tmp_path, cifar, layers, params) == 2
    one_line_error(capsys, "[conv1] momW", "line 5 is indented")


def test_a_byte_order_mark_is_accepted(tmp_path):
    plain, params = write_net(tmp_path)
    marked = tmp_path / "bom.cfg"
    marked.write_bytes(b"\xef\xbb\xbf" + SMALL_NET.encode())
    dims = {0: (3, 32, 32), 1: 1}
    assert config.load_layers(str(marked), params, dims) == config.load_layers(plain, params, dims)


# -- schedules -------------------------------------------------------------------------------------
def _dexp_by_steps(base, target, steps, p):
    """The step-by-step definition: the first step k whose end (k + 1) / steps reaches p."""
    for k in range(steps):
        if p <= (k + 1) / steps:
            break
    return base / target if k == steps - 1 else base * target ** (-k / (steps - 1))


def test_dexp_is_closed_form_and_matches_the_steps(rng):
    for _ in range(300):
        steps = int(rng.integers(2, 40))
        p = float(rng.choice([rng.uniform(0, 1), int(rng.integers(0, steps + 1)) / steps]))
        schedule = {"type": "dexp", "base": 0.1, "tgtFactor": 10.0, "numSteps": steps}
        assert config.schedule_value(schedule, p) == pytest.approx(_dexp_by_steps(0.1, 10.0, steps, p), rel=1e-12)
    huge = config.parse_schedule("dexp[0.1;10;2147483648]")
    start = time.perf_counter()
    values = [config.schedule_value(huge, p) for p in np.linspace(0, 1, 1000)]
    assert time.perf_counter() - start < 1.0
    assert values[0] == pytest.approx(0.1) and values[-1] == pytest.approx(0.01)
    assert values[500] == pytest.approx(0.1 * 10 ** -(500 / 999), rel=1e-6)  # 2^31 steps: nearly exp


# -- NaN predictions -------------------------------------------------------------------------------------
def test_logreg_cost_counts_nan_probabilities_as_errors(device, rng):
    classes, cases = 10, 300
    probs = rng.dirichlet(np.ones(classes), cases).T.astype(np.float32)
    labels = rng.integers(0, classes, cases)
    probs[:, rng.choice(cases, 40, replace=False)] = np.nan  # whole cases
    probs[rng.integers(0, classes, 30), rng.integers(0, cases, 30)] = np.nan  # single entries
    probs[rng.integers(0, classes, 5), rng.integers(0, cases, 5)] = np.inf
    p64 = probs.astype(np.float64)
    label_p = p64[labels, np.arange(cases)]
    finite = np.isfinite(p64).all(axis=0)
    rivals = ((p64 >= label_p) & (np.arange(classes)[:, None] != labels)).sum(axis=0)
    expected_err = np.sum(~finite | (rivals >= 1))
    expected_top5 = np.sum(~finite | (rivals >= 5))
    args = [to_device(a, device) for a in (np.ascontiguousarray(labels, np.float32), probs)]
    cost, err, err_top5 = _core.logreg_cost(*args, 5)
    assert math.isnan(cost)
    assert (err, err_top5) == (expected_err, expected_top5)
    assert expected_err > 70  # the NaN cases are there and counted
