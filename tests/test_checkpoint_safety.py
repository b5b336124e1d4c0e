"""Checkpoints that cannot run code or rot silently: foreign pickles refused, every byte flip
caught by the checksum, fallback to the previous good checkpoint, FIFOs refused, damaged
fields named, kill -9 leftovers (orphan temporary files, metrics rows after the checkpoint)
cleaned up on resume."""
import copy
import os
import pickle
import signal

import numpy as np
import pytest

from ccn import checkpoint, export
from ccn.cli import convnet_main, shownet_main
from trainer_fixtures import write_cifar, write_net


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run directory of a 2-epoch run of the small net (checkpoints 1.5 and 2.5)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    cifar = write_cifar(str(tmp / "cifar"))
    layers, params = write_net(tmp)
    args = [f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}", "--data-provider=cifar",
            f"--save-path={tmp / 'runs'}", "--train-range=1-5", "--test-range=6", "--mini=16", "--gpu=cpu",
            "--seed=3", "--epochs=2"]
    assert convnet_main(args) == 0
    run_dir = str(tmp / "runs" / os.listdir(tmp / "runs")[0])
    return run_dir


@pytest.fixture
def state(trained):
    return checkpoint.load(trained)[0]


class _Timeout:
    """Fails the test instead of hanging it (a FIFO opened for reading waits for a writer)."""

    def __enter__(self):
        signal.signal(signal.SIGALRM, lambda *_: pytest.fail("hung"))
        signal.alarm(20)

    def __exit__(self, *exc):
        signal.alarm(0)


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def all_tools(path, tmp_path, extra=()):
    """Exit codes of convnet.py, shownet.py and ccn.export given path as -f."""
    return [convnet_main(["-f", str(path), "--test-only=1", *extra]),
            shownet_main(["-f", str(path), "--show-cost=logprob", f"--out={tmp_path}", *extra]),
            export.main(["-f", str(path), f"--out={tmp_path / 'w.npz'}", *extra])]


def test_the_file_is_safetensors_with_json_state(trained, state):
    from safetensors.numpy import load_file
    path = checkpoint.list_checkpoints(trained)[-1]
    tensors = load_file(path)
    np.testing.assert_array_equal(tensors["fc10/weights/0"], state["params"]["fc10"]["weights"][0])
    assert state["epoch"] == 2 and state["batchnum"] == 5 and state["layers"][2]["name"] == "conv1"


def test_two_newest_checkpoints_are_kept(trained):
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(trained)] == ["1.5", "2.5"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_is_refused_by_every_tool_and_runs_no_code(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    payload = _RunsCode()
    payload.marker = marker
    path = tmp_path / "1.1"
    path.write_bytes(pickle.dumps({"magic": "ccn-checkpoint", "version": 1, "x": payload}, protocol=4))
    assert all_tools(path, tmp_path) == [2, 2, 2]
    err = capsys.readouterr().err
    assert err.count("old pickle checkpoint") == 3 and "--allow-pickle" in err and "Traceback" not in err
    assert not marker.exists()


def test_pickle_loads_behind_the_option_and_converts(trained, state, tmp_path, capsys):
    old = dict(copy.deepcopy(state), magic="ccn-checkpoint", version=1)
    path = tmp_path / "2.5"
    path.write_bytes(pickle.dumps(old, protocol=4))
    loaded, _, _ = checkpoint.load(str(path), allow_pickle=True)
    assert "warning" in capsys.readouterr().err
    np.testing.assert_array_equal(loaded["params"]["conv1"]["weights"][0], state["params"]["conv1"]["weights"][0])
    assert export.main(["-f", str(path), "--allow-pickle", f"--out={tmp_path / 'w.npz'}"]) == 0
    assert checkpoint.main(["--convert", str(path)]) == 0
    assert (tmp_path / "2.5.pickle").exists()
    converted, _, _ = checkpoint.load(str(path))  # no option needed any more
    np.testing.assert_array_equal(converted["params"]["fc10"]["biases"], state["params"]["fc10"]["biases"])
    assert converted["test_outputs"] == state["test_outputs"]


def test_every_byte_flip_is_caught(trained, state, tmp_path):
    data = open(checkpoint.list_checkpoints(trained)[-1], "rb").read()
    rng = np.random.default_rng(12)
    positions = list(rng.integers(0, len(data), 40)) + list(range(0, 64, 3))  # the header too
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / "1.1"
        path.write_bytes(bytes(damaged))
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(str(path))
    for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(str(path))


def test_a_damaged_newest_checkpoint_falls_back_in_one_line(trained, state, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    older, newer = checkpoint.list_checkpoints(trained)
    (run / "1.5").write_bytes(open(older, "rb").read())
    data = bytearray(open(newer, "rb").read())
    data[-5] ^= 0x10
    (run / "2.5").write_bytes(bytes(data))
    loaded, path, _ = checkpoint.load(str(run))
    assert os.path.basename(path) == "1.5" and loaded["epoch"] == 1
    one_line_error(capsys, "2.5", "sha256", "loaded the older checkpoint")
    (run / "1.5").write_bytes(b"\0" * 100)
    with pytest.raises(checkpoint.CheckpointError, match="2.5.*1 older checkpoint"):
        checkpoint.load(str(run))


def test_a_fifo_named_like_a_checkpoint_is_refused(trained, tmp_path, capsys):
    fifo = tmp_path / "3.5"
    os.mkfifo(fifo)
    with _Timeout():
        assert all_tools(fifo, tmp_path) == [2, 2, 2]
        assert checkpoint.main(["--convert", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err.count("a FIFO, not a regular file") == 4 and "Traceback" not in err
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "9.9")  # newer than the real one, but not a file: skipped
    (run / "2.5").write_bytes(open(checkpoint.list_checkpoints(trained)[-1], "rb").read())
    with _Timeout():
        assert os.path.basename(checkpoint.load(str(run))[1]) == "2.5"


def _drop(state, *keys):
    target = state
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]


def _layer(state, name):
    return next(layer for layer in state["layers"] if layer["name"] == name)


DAMAGE = [
    ("params missing", lambda s: _drop(s, "params"), "'params' is missing"),
    ("one layer's params missing", lambda s: _drop(s, "params", "fc10"), "'params.fc10' is missing"),
    ("biases missing", lambda s: _drop(s, "params", "conv1", "biases"), "'params.conv1.biases' is missing"),
    ("inputs renamed", lambda s: _layer(s, "fc10").update(inputz=_layer(s, "fc10").pop("inputs")),
     "layers['fc10'].inputs"),
    ("op missing", lambda s: _drop(s, "op"), "'op' is missing"),
    ("rng_counter -1", lambda s: s.update(rng_counter=-1), "'rng_counter' is -1"),
    ("layers a string", lambda s: s.update(layers="abc"), "'layers' is a str"),
    ("epoch a string", lambda s: s.update(epoch="1"), "'epoch'"),
    ("one weight matrix too few", lambda s: s["params"]["fc10"]["weights"].pop(), "'params.fc10.weights'"),
    ("filterSize missing", lambda s: _layer(s, "conv1").pop("filterSize"), "layers['conv1'].filterSize' is missing"),
    ("filterSize a string", lambda s: _layer(s, "conv1").update(filterSize="abc"), "layers['conv1'].filterSize' is 'abc'"),
    ("filterSize 2^70", lambda s: _layer(s, "conv1").update(filterSize=2 ** 70), "layers['conv1'].filterSize'"),
    ("mini a string", lambda s: s["op"].update(mini="abc"), "'op.mini' is 'abc'"),
    ("gpu an int", lambda s: s["op"].update(gpu=5), "'op.gpu' is 5"),
    ("batchnum outside the range", lambda s: s.update(batchnum=99), "'batchnum' is 99"),
    ("train_outputs junk", lambda s: s.update(train_outputs=[1, 2]), "'train_outputs[0]'"),
    ("NaN weights", lambda s: s["params"]["conv1"]["biases"].fill(np.nan), "NaN"),
]


@pytest.mark.parametrize("what, damage, message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_fields_are_named_and_never_resume(state, tmp_path, capsys, what, damage, message):
    damaged = copy.deepcopy(state)
    damage(damaged)
    run = tmp_path / "run"
    checkpoint.save(str(run), 7, 1, damaged)  # a valid checksum over damaged contents
    assert convnet_main(["-f", str(run), "--epochs=9"]) == 2
    one_line_error(capsys, message, "7.1")
    assert sorted(os.listdir(run)) == ["7.1"]  # nothing trained, nothing written


def test_kill_leftovers_are_cleaned_on_resume(trained, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    newest = checkpoint.list_checkpoints(trained)[-1]
    (run / "2.5").write_bytes(open(newest, "rb").read())
    good = open(os.path.join(trained, "metrics.csv")).read().splitlines(keepends=True)
    # a run killed after 2.5: two more batches logged, one half-written row, a checkpoint temp file
    extra = ["train,3,1,logprob,1.0,0.5,0.5,40,0.1\r\n", "train,3,2,logprob,1.0,0.5,0.5,40,0.1\r\n", "train,3,3,log"]
    (run / "metrics.csv").write_text("".join(good + extra), newline="")
    (run / "3.3.tmp").write_bytes(b"half a checkpoint")
    assert convnet_main(["-f", str(run), "--epochs=3", "--test-freq=0"]) == 0
    assert "removed" in capsys.readouterr().out
    assert not (run / "3.3.tmp").exists()
    rows = open(run / "metrics.csv").read().splitlines()
    assert rows[:len(good)] == [line.rstrip("\r\n") for line in good]
    positions = [tuple(r.split(",")[:3]) for r in rows[1:]]
    assert len(positions) == len(set(positions)), "a batch is logged twice"
    assert [p for p in positions if p[1] == "3"] == [("train", "3", str(b)) for b in range(1, 6)] + [("test", "3", "5")]
    assert checkpoint.load(str(run))[0]["metrics_rows"] == len(rows) - 1
