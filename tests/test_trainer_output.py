"""What convnet.py says: one line per epoch with the epoch's training totals, the test and
the time left; a final summary; plain lines in a redirected log; a finished run; top-k
labelled with k; Ctrl-C; a mistyped option; a bad batch range."""
import csv
import os
import re
import subprocess
import sys

import pytest

from ccn import checkpoint, trainer
from ccn.cli import convnet_main
from trainer_fixtures import SMALL_PARAMS, write_cifar, write_net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cifar(tmp_path):
    return write_cifar(str(tmp_path / "cifar"))


def args(tmp_path, cifar, layers, params, **extra):
    out = [f"--layer-def={layers}", f"--layer-params={params}", f"--data-path={cifar}", "--data-provider=cifar",
           f"--save-path={tmp_path / 'runs'}", "--train-range=1-5", "--test-range=6", "--mini=16", "--gpu=cpu",
           "--seed=3"]
    return out + [f"--{k.replace('_', '-')}={v}" for k, v in extra.items()]


def epoch_lines(out):
    return [line for line in out.splitlines() if line.startswith("epoch ")]


def test_one_line_per_epoch_with_epoch_totals_and_a_summary(tmp_path, cifar, capsys):
    layers, params = write_net(tmp_path)
    assert convnet_main(args(tmp_path, cifar, layers, params, epochs=3)) == 0
    out = capsys.readouterr().out
    lines = epoch_lines(out)
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], out
    run_dir = os.path.join(tmp_path, "runs", os.listdir(tmp_path / "runs")[0])
    # the train figures are the epoch's (all 5 batches, weighted by cases), not the last batch's
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["phase"] == "train" and r["epoch"] == "2"]
    assert len(rows) == 5
    cases = sum(int(r["cases"]) for r in rows)
    epoch_cost = sum(float(r["cost"]) * int(r["cases"]) for r in rows) / cases
    epoch_error = sum(float(r["error"]) * int(r["cases"]) for r in rows) / cases
    shown = re.search(r"train logprob: cost ([\d.]+), error ([\d.]+)", lines[1])
    assert abs(float(shown.group(1)) - epoch_cost) < 2e-6 and abs(float(shown.group(2)) - epoch_error) < 1e-4
    assert abs(float(rows[-1]["cost"]) - epoch_cost) > 1e-6  # the last batch alone differs
    assert re.search(r"\|  test logprob: cost [\d.]+, error [\d.]+  \|", lines[1])
    assert re.search(r"\d+(\.\d)?s, ETA \S+$", lines[0])
    assert "top-" not in out  # topk=1: no separate top-k error
    state, path, _ = checkpoint.load(run_dir)
    errors = [t[2]["logprob"][1] for t in state["test_outputs"]]
    summary = [line for line in out.splitlines() if line.startswith("convnet: done in")]
    assert len(summary) == 1, out
    assert f"final {errors[-1]:.4f} at 3.5" in summary[0] and f"best {min(errors):.4f}" in summary[0]
    assert summary[0].endswith(f"checkpoint {path}")
    # resuming the finished run says what to do
    assert convnet_main(["-f", run_dir]) == 0
    assert "nothing left to train" in capsys.readouterr().out
    assert convnet_main(["-f", run_dir, "--epochs=4"]) == 0
    assert [line.split()[1] for line in epoch_lines(capsys.readouterr().out)] == ["4/4"]


def test_top_k_error_is_labelled_with_k(tmp_path, cifar, capsys):
    layers, params = write_net(tmp_path, params=SMALL_PARAMS.replace("[logprob]\ncoeff=1", "[logprob]\ncoeff=1\ntopk=3"))
    assert convnet_main(args(tmp_path, cifar, layers, params, epochs=1)) == 0
    line = epoch_lines(capsys.readouterr().out)[0]
    top1, top3 = (float(x) for x in re.search(r"test logprob: cost [\d.]+, error ([\d.]+), top-3 error ([\d.]+)",
                                             line).groups())
    assert top3 <= top1


def test_totals_merge_weights_by_cases():
    a, b = trainer.CostTotals({"c": 5}), trainer.CostTotals()
    a.add({"c": [2.0, 1.0, 0.0]}, 4)
    b.add({"c": [10.0, 2.0, 1.0]}, 12)
    a.merge(b)
    assert a.cases == 16 and a.averages()["c"] == [12 / 16, 3 / 16, 1 / 16]
    assert "top-5 error 0.0625" in a.describe()
    assert trainer.duration(42.14) == "42.1s" and trainer.duration(821) == "13m 41s" and trainer.duration(7500) == "2h 05m"


def test_a_redirected_log_has_no_carriage_returns(tmp_path, cifar):
    layers, params = write_net(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, os.path.join(REPO, "convnet.py"), *args(tmp_path, cifar, layers, params,
                           epochs=2)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout and "\r" not in done.stderr
    assert len(epoch_lines(done.stdout)) == 2 and "convnet: done in" in done.stdout


def test_ctrl_c_before_any_checkpoint_says_nothing_was_saved(tmp_path, cifar, capsys, monkeypatch):
    layers, params = write_net(tmp_path)

    def interrupt(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "_train_batch", interrupt)
    assert convnet_main(args(tmp_path, cifar, layers, params, epochs=1)) == 130
    err = capsys.readouterr().err
    assert "nothing was saved" in err and "last checkpoint" not in err
    assert os.listdir(tmp_path / "runs") == []  # nothing written: the run directory is removed


def test_ctrl_c_after_a_checkpoint_names_it(tmp_path, cifar, capsys, monkeypatch):
    layers, params = write_net(tmp_path)
    real = trainer.Trainer._train_batch

    def interrupt_in_epoch_2(self, num_cases, epoch, batchnum):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, num_cases, epoch, batchnum)

    monkeypatch.setattr(trainer.Trainer, "_train_batch", interrupt_in_epoch_2)
    assert convnet_main(args(tmp_path, cifar, layers, params, epochs=2)) == 130
    err = capsys.readouterr().err.strip()
    assert re.search(r"resume with -f .*ConvNet__\S+ \(its newest checkpoint is .*1\.5\)$", err), err


def test_a_mistyped_option_gets_did_you_mean_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        convnet_main(["--layer-def=x", "--epohcs=3", "--gpux=cpu"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" not in err
    assert "--epohcs; did you mean --epochs?" in err and "--gpux; did you mean --gpu?" in err


def test_a_bad_train_range_names_the_option_and_leaves_no_run_directory(tmp_path, cifar, capsys):
    layers, params = write_net(tmp_path)
    os.makedirs(tmp_path / "runs")
    bad = [a for a in args(tmp_path, cifar, layers, params, epochs=1) if not a.startswith("--train-range")]
    assert convnet_main(bad + ["--train-range=1-9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--train-range" in err and "batch_range" not in err and "no batch 7" in err
    assert os.listdir(tmp_path / "runs") == []
