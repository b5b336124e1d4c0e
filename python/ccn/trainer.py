"""The training loop of convnet.py: epochs of data batches split into minibatches,
periodic tests and checkpoints, multiview testing, feature writing and the numerical
gradient check of a whole net."""
import csv
import math
import os
import sys
import time

import numpy as np

from . import _core, checkpoint, config, constraints, data, distributed, weights
from .weights import WEIGHT_TYPES


KEEP_CHECKPOINTS = 2
TEST_CHANNEL = 1  # the Net's data channel for test batches (0 carries the training batches)


class TrainingError(RuntimeError):
    """Training cannot go on (NaN or Inf); the message names the layer and the checkpoint kept."""


def choose_devices(requested, layers):
    """The logical device list: --gpu, else one GPU when present, else the CPU (said once)."""
    if requested is None:
        if _core.has_cuda_backend and _core.cuda_device_count() > 0:
            requested = ["0"]
        else:
            print("convnet: no CUDA device found, running on the CPU")
            requested = ["cpu"]
    for d in requested:
        if d != "cpu" and not (_core.has_cuda_backend and int(d) < _core.cuda_device_count()):
            raise ValueError(f"--gpu: CUDA device {d} is not available "
                             f"({_core.cuda_device_count()} visible); use --gpu=cpu")
    def highest(layer):
        return max(layer.get("replicas") or [layer.get("gpu", 0)])

    needed = 1 + max(highest(layer) for layer in layers)
    if needed > len(requested):
        worst = max(layers, key=highest)
        raise ValueError(f"layer '{worst['name']}' runs on logical device {highest(worst)} but --gpu lists only "
                         f"{len(requested)} device(s): {','.join(requested)}")
    return requested


def replica_multiple(layers):
    """Minibatches split evenly over every layer's data-parallel replicas."""
    multiple = 1
    for layer in layers:
        multiple = math.lcm(multiple, len(layer.get("replicas") or [0]))
    return multiple


def _slices(num_cases, mini, multiple=1):
    """Minibatches [s, e) of a batch; each a multiple of `multiple` cases (a last remainder
    smaller than that is left out)."""
    slices = [(s, min(s + mini, num_cases)) for s in range(0, num_cases, mini)]
    return [(s, s + (e - s) // multiple * multiple) for s, e in slices if e - s >= multiple]


def _columns(array, start, end):
    return np.ascontiguousarray(array[:, start:end], dtype=np.float32)


def duration(seconds):
    """'42.1s', '13m 41s', '2h 05m'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


class CostTotals:
    """Sums of [cost, error, errorTopK] per cost layer over some cases; topk: {layer: k} of the
    cost.logreg layers, whose top-k error is shown (labelled with k) when k > 1."""

    def __init__(self, topk=None):
        self.sums, self.cases, self.topk = {}, 0, dict(topk or {})

    def add(self, costs, num_cases):
        for name, values in costs.items():
            acc = self.sums.setdefault(name, [0.0] * len(values))
            for i, v in enumerate(values):
                acc[i] += v
        self.cases += num_cases

    def merge(self, other):
        """Adds another CostTotals' sums (e.g. a data batch's into the epoch's)."""
        for name, values in other.sums.items():
            acc = self.sums.setdefault(name, [0.0] * len(values))
            for i, v in enumerate(values):
                acc[i] += v
        self.cases += other.cases

    def averages(self):
        return {name: [v / max(self.cases, 1) for v in values] for name, values in self.sums.items()}

    def describe(self):
        parts = []
        for name, (cost, err, errk) in self.averages().items():
            k = self.topk.get(name, 1)
            parts.append(f"{name}: cost {cost:.6f}, error {err:.4f}" + (f", top-{k} error {errk:.4f}" if k > 1 else ""))
        return "; ".join(parts)


class Trainer:
    def __init__(self, op, state=None, run_dir=None):
        self.op = op
        self.state = state or {}
        self.run_dir = run_dir
        self.train_dp = self._provider(op["train_range"], test=False) if not op["test_only"] else None
        self.test_dp = self._provider(op["test_range"], test=True, multiview=op["multiview_test"])
        dp = self.test_dp
        data_dims = {0: dp.get_data_dims(0), 1: dp.get_data_dims(1)}
        if self.state.get("layers") and not op.get("finetune"):
            self.layers = self.state["layers"]
            config.load_layer_params(op["layer_params"], self.layers)
        else:
            self.layers = config.load_layers(op["layer_def"], op["layer_params"], data_dims, dp.class_tree)
        self.by_name = {layer["name"]: layer for layer in self.layers}
        self.constrained = constraints.constrained_layers(self.layers)
        # cuda-convnet2's updatePeriod: these layers update once per k minibatches
        self.periodic = {layer["name"]: layer["updatePeriod"] for layer in self.layers if layer.get("updatePeriod")}
        self._minibatches, self._accumulated = 0, {}
        self.world = distributed.world()
        if self.world.size > 1 and self.periodic:
            raise ValueError(f"updatePeriod > 1 (layer '{next(iter(self.periodic))}') is not supported under MPI")
        if self.world.size > 1:
            distributed.check_agreement(self.world, "the layer definition", self.layers)
            distributed.check_agreement(self.world, "the options", {k: v for k, v in op.items() if k != "gpu"})
        self.replica_multiple = replica_multiple(self.layers)
        self.multiple = self.world.size * self.replica_multiple  # each rank's shard splits over the replicas
        if op["mini"] % self.multiple:
            raise ValueError(f"--mini={op['mini']} must be a multiple of {self.multiple} (the MPI ranks times the "
                             "layers' data-parallel replicas), so that every minibatch splits evenly")
        self.devices = distributed.rank_devices(choose_devices(op["gpu"], self.layers), self.world)
        self.net = _core.Net(self.layers, self.devices, op["seed"])
        self.net.set_shard(self.world.rank, self.world.size)
        self.parallel = distributed.DataParallel(self.net, self.devices, self.world)
        self.lead = self.world.rank == 0  # prints, logs and writes checkpoints
        if self.multiple > 1:
            self._say(f"convnet: minibatches are cut to multiples of {self.multiple} cases (MPI ranks x replicas); "
                      f"up to {self.multiple - 1} cases at the end of a batch are left out")
        self.train_outputs = list(self.state.get("train_outputs", []))
        self.test_outputs = list(self.state.get("test_outputs", []))
        self.epoch, self.batchnum = self.state.get("epoch", 1), self.state.get("batchnum", 0)
        self.batches_done = self.state.get("batches_done", 0)
        self.metrics_rows = self.state.get("metrics_rows")
        self.topk = {layer["name"]: layer.get("topk", 1) for layer in self.layers if layer["type"] == "cost.logreg"}
        self.last_checkpoint = None
        self.new_run_dir = None  # the run directory this process created, if any
        self._init_params()
        self._set_learning_params()
        if "rng_counter" in self.state and not op.get("finetune"):
            self.net.rng_counter = self.state["rng_counter"]

    # -- setup -------------------------------------------------------------------------
    def _provider(self, batch_range, test, multiview=False):
        try:
            return self._make_provider(batch_range, test, multiview)
        except ValueError as e:  # the providers speak of "batch_range": the user gave an option
            raise ValueError(str(e).replace("batch_range", "--test-range" if test else "--train-range", 1)) from None

    def _make_provider(self, batch_range, test, multiview=False):
        op = self.op
        params = dict(seed=op["seed"], **data.provider_params(op["data_provider"], op, test))
        if multiview:
            provider, _ = data.resolve_provider_name(op["data_provider"])
            if not getattr(data.PROVIDERS[provider], "multiview_capable", False):
                raise ValueError(f"--multiview-test: the {op['data_provider']} provider has a single view")
            params.update(multiview=True)
        return data.get_provider(op["data_provider"], op["data_path"], batch_range, test=test, **params)

    def _init_params(self):
        """The engine drew every layer's initial weights from the seed; replaced here by a
        checkpoint's, a fine-tuned net's or the layer file's initWFunc / initBFunc."""
        stored = self.state.get("params", {})
        finetune = self.op.get("finetune")
        for layer in self.layers:
            if layer["type"] not in WEIGHT_TYPES:
                continue
            name = layer["name"]
            if finetune:
                reused = weights.load_finetuned(self.net, name, stored.get(name))
                if not reused:
                    weights.apply_init_funcs(self.net, layer)
                print(f"  {name}: {'weights loaded' if reused else 're-initialised'}")
            elif name in stored:
                self.net.set_params(name, stored[name])
            else:
                weights.apply_init_funcs(self.net, layer)
        if finetune:  # a fine-tuned net starts a new run: no history
            self.epoch, self.batchnum, self.batches_done = 1, 0, 0
            self.train_outputs, self.test_outputs = [], []

    def _next_position(self, batch_range):
        """(epoch, batchnum) of the batch after the last one trained (the first when none)."""
        if self.batchnum == 0:
            return self.epoch, batch_range[0]
        i = batch_range.index(self.batchnum)
        return (self.epoch + 1, batch_range[0]) if i == len(batch_range) - 1 else (self.epoch, batch_range[i + 1])

    def _set_learning_params(self):
        """Evaluates the schedules at the run's progress (batches done / batches planned);
        noisy schedules (the 2012 release's) draw from the seed and the batch count."""
        batches = len(self.train_dp.batch_range) if self.train_dp else 1
        progress = min(1.0, self.batches_done / max(1, self.op["epochs"] * batches))
        noise = np.random.default_rng([self.op["seed"], self.batches_done, 0x5EED])
        config.set_learning_params(self.net, self.layers, progress, noise)

    # -- training ------------------------------------------------------------------------
    def nothing_left(self):
        """The message for a run that has trained all its --epochs, else None."""
        if self.train_dp is None or self._next_position(self.train_dp.batch_range)[0] <= self.op["epochs"]:
            return None
        return (f"convnet: nothing left to train: the run has done {self.epoch} epoch(s) and --epochs is "
                f"{self.op['epochs']}; pass --epochs=N with N > {self.epoch} to train more")

    def train(self):
        from tqdm import tqdm
        op = self.op
        finished = self.nothing_left()
        if finished:
            self._say(finished)
            self.train_dp.close()
            self.test_dp.close()
            return self.run_dir
        if self.lead:
            if self.run_dir is None:
                self.run_dir = checkpoint.new_run_dir(op["save_path"])
                self.new_run_dir = self.run_dir
            else:  # resuming: undo what a killed run left behind after its last checkpoint
                for path in checkpoint.remove_orphans(self.run_dir):
                    print(f"convnet: removed {path}, left by an interrupted run")
                self._truncate_metrics()
        ranks = f" x {self.world.size} MPI ranks" if self.world.size > 1 else ""
        self._say(f"convnet: training on {','.join(self.devices)}{ranks}; checkpoints in {self.run_dir}")
        if self.lead:
            self._print_net()
        dp = self.train_dp
        dp.set_position(*self._next_position(dp.batch_range))
        batches_per_epoch = len(dp.batch_range)
        planned = op["epochs"] * batches_per_epoch - self.batches_done
        if op["max_batches"]:
            planned = min(planned, op["max_batches"] - self.batches_done)
        since_test = 0
        period = CostTotals(self.topk)  # training since the last test (the epoch when testing once per epoch)
        started = period_started = time.time()
        trained_here = 0
        bar, bar_epoch = None, None
        # Each data batch is copied to the devices once (stage_batch), the next one while
        # this one trains; minibatches are sliced on the devices.
        upcoming = dp.get_next_batch()
        if upcoming[0] <= op["epochs"]:
            self.net.stage_batch(list(upcoming[2]))
        try:
            while True:
                epoch, batchnum, _ = upcoming
                if epoch > op["epochs"]:
                    break
                num_cases = self.net.begin_batch()
                upcoming = dp.get_next_batch()
                if upcoming[0] <= op["epochs"]:
                    self.net.stage_batch(list(upcoming[2]))
                if bar_epoch != epoch:
                    if bar is not None:
                        bar.close()
                    done_in_epoch = dp.batch_range.index(batchnum)
                    # a progress bar on a terminal only: a redirected log gets plain lines
                    bar = tqdm(total=batches_per_epoch, initial=done_in_epoch, desc=f"epoch {epoch}",
                               unit="batch", file=sys.stdout, leave=False, dynamic_ncols=True,
                               disable=not (self.lead and sys.stdout.isatty()))
                    bar_epoch = epoch
                start = time.time()
                self._set_learning_params()
                totals = self._train_batch(num_cases, epoch, batchnum)
                self.epoch, self.batchnum = epoch, batchnum
                self.batches_done += 1
                trained_here += 1
                since_test += 1
                period.merge(totals)
                self.train_outputs.append((epoch, batchnum, totals.averages(), totals.cases))
                self._log_metrics("train", epoch, batchnum, totals, time.time() - start)
                bar.update(1)
                bar.set_postfix_str(totals.describe()[:60])
                last_of_epoch = dp.batch_range.index(batchnum) == batches_per_epoch - 1
                if (op["test_freq"] and since_test >= op["test_freq"]) or (not op["test_freq"] and last_of_epoch):
                    bar.clear()
                    self._report(period, self._test_and_save(), last_of_epoch, period_started,
                                 (time.time() - started) / trained_here * (planned - trained_here))
                    since_test, period, period_started = 0, CostTotals(self.topk), time.time()
                if op["max_batches"] and self.batches_done >= op["max_batches"]:
                    break
            if bar is not None:
                bar.close()
            if since_test:
                self._report(period, self._test_and_save(), False, period_started, 0.0)
        finally:
            if bar is not None:
                bar.close()
            dp.close()
            self.test_dp.close()
            if self.new_run_dir and os.path.isdir(self.new_run_dir) and not os.listdir(self.new_run_dir):
                os.rmdir(self.new_run_dir)  # stopped before writing anything: no empty run directory
                self.run_dir = None
        self._summary(time.time() - started)
        return self.run_dir

    def _report(self, train, test, end_of_epoch, since, eta):
        """One line per test: training over the batches since the previous test (the whole
        epoch when testing once per epoch), the test, the seconds they took, the time left."""
        where = f"epoch {self.epoch}/{self.op['epochs']}" + ("" if end_of_epoch else f" (batch {self.batchnum})")
        self._say(f"{where}  train {train.describe()}  |  test {test.describe()}  |  "
                  f"{duration(time.time() - since)}, ETA {duration(eta)}")

    def _summary(self, seconds):
        """The run's final and best test error, its newest checkpoint and the time taken."""
        errors = [(values[1], epoch, batchnum) for epoch, batchnum, averages, _ in self.test_outputs
                  for values in list(averages.values())[:1]]
        if not errors:
            return
        final, best = errors[-1], min(errors)
        layer = next(iter(self.test_outputs[-1][2]))
        self._say(f"convnet: done in {duration(seconds)}: test error ({layer}) final {final[0]:.4f} at "
                  f"{final[1]}.{final[2]}, best {best[0]:.4f} at {best[1]}.{best[2]}; "
                  f"checkpoint {self.last_checkpoint or 'not written'}")

    def _train_batch(self, num_cases, epoch, batchnum):
        """Trains on the current (staged) batch, one minibatch slice at a time; under MPI each
        rank takes its shard of every minibatch and the gradients are summed over the ranks."""
        totals = CostTotals(self.topk)
        for s, e in _slices(num_cases, self.op["mini"], self.multiple):
            if self.world.size == 1 and self.periodic:
                costs = self._train_slice_periodic(s, e)
            else:
                self.parallel.train_slice(s, e)
                costs = self._summed_costs()
            constraints.apply(self.net, self.constrained)
            self._check_finite(costs, f"epoch {epoch}, batch {batchnum}, cases {s}-{e - 1}")
            totals.add(costs, e - s)
        return totals

    def _summed_costs(self):
        """The net's costs summed over the MPI ranks (each rank has its shard's)."""
        costs = self.net.costs()
        if self.world.size == 1:
            return costs
        summed = self.world.allreduce(np.array([v for values in costs.values() for v in values], np.float64))
        out, i = {}, 0
        for name, values in costs.items():
            out[name] = [float(v) for v in summed[i:i + len(values)]]
            i += len(values)
        return out

    def _say(self, text):
        """A line on the lead rank's stdout (around a progress bar)."""
        if self.lead:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def _train_slice_periodic(self, s, e):
        """A training step where the layers with updatePeriod k > 1 update only every k-th
        minibatch, with the mean of the k minibatches' gradients (cuda-convnet2's rule: the
        update divides by k times the minibatch size). The count restarts on resume."""
        self.net.fprop_slice(s, e, True)
        self.net.bprop()
        self._minibatches += 1
        held = {}
        for name, period in self.periodic.items():
            grads = self.net.get_grads(name)
            acc = self._accumulated.setdefault(name, {"weights": [np.zeros_like(w) for w in grads["weights"]],
                                                      "biases": np.zeros_like(grads["biases"])})
            for total, g in zip(acc["weights"], grads["weights"]):
                total += g
            acc["biases"] += grads["biases"]
            if self._minibatches % period:
                held[name] = self.net.get_params(name)  # put back after the update: no step this time
            else:
                self.net.set_grads(name, {"weights": [w / period for w in acc["weights"]],
                                          "biases": acc["biases"] / period})
                del self._accumulated[name]
        self.net.update(e - s)
        for name, params in held.items():
            self.net.set_params(name, params)
        return self.net.costs()

    def _check_finite(self, costs, where):
        """After every step: the devices flag any NaN or Inf (activations, gradients, updated
        weights) and name where it appeared first, before it spreads."""
        bad = [name for name, values in costs.items() if not all(math.isfinite(v) for v in values)]
        culprit = self.net.check_finite() or (f"the cost of layer '{bad[0]}'" if bad else None)
        if self.world.size > 1:  # every rank stops together
            flagged = self.world.allgather(culprit)
            culprit = next((f"{c} (rank {rank})" for rank, c in enumerate(flagged) if c), None)
        if culprit:
            last = checkpoint.list_checkpoints(self.run_dir) if self.run_dir and os.path.isdir(self.run_dir) else []
            kept = f"the last checkpoint {last[-1]} is unchanged" if last else "no checkpoint was written"
            raise TrainingError(f"NaN or Inf in {culprit} at {where}; training stopped, {kept}. "
                                "Lower the learning rate (layer-params file) and resume from it.")

    # -- testing ----------------------------------------------------------------------------
    def test(self, one_batch=False):
        """Tests on the test range (one batch when one_batch); returns CostTotals."""
        dp = self.test_dp
        totals = CostTotals(self.topk)
        for _ in range(1 if one_batch else len(dp.batch_range)):
            _, _, (images, labels) = dp.get_next_batch()
            if self.op["multiview_test"] and getattr(dp, "num_views", 1) > 1:
                totals.add(*self._multiview_costs(images, labels, dp.num_views))
                continue
            for s, e in _slices(self._begin_test_batch(images, labels), self.op["mini"], self.multiple):
                self.net.fprop_slice(*distributed.shard(s, e, self.world), False)
                totals.add(self._summed_costs(), e - s)
        return totals

    def _begin_test_batch(self, images, labels):
        """Stages a test batch on the test channel (the training channel keeps its staged
        batch) and makes it current; returns its number of cases."""
        self.net.stage_batch([images, labels], TEST_CHANNEL)
        return self.net.begin_batch(TEST_CHANNEL)

    def _multiview_costs(self, images, labels, num_views):
        """Averages the logreg layer's probabilities over the views, then scores them."""
        name = self.op["logreg_name"] or next(
            (layer["name"] for layer in self.layers if layer["type"] == "cost.logreg"), None)
        if name not in self.by_name or self.by_name[name]["type"] != "cost.logreg":
            raise ValueError(f"--logreg-name: '{name}' is not a cost.logreg layer of this net")
        probs_layer = self.by_name[name]["inputs"][1]
        n = labels.shape[1]
        probs = None
        self._begin_test_batch(images, np.tile(labels, (1, num_views)))  # views are column blocks
        for v in range(num_views):
            outs = []
            for s, e in _slices(n, self.op["mini"], self.replica_multiple):
                self.net.fprop_slice(v * n + s, v * n + e, False)
                outs.append(self.net.get_acts(probs_layer).reshape(-1, e - s))
            p = np.concatenate(outs, axis=1)
            probs = p if probs is None else probs + p
        probs = np.ascontiguousarray(probs / num_views, np.float32)
        cost, err, errk = _core.logreg_cost(np.ascontiguousarray(labels.reshape(-1), np.float32), probs,
                                            self.by_name[name].get("topk", 1))
        return {name: [cost, err, errk]}, n

    def _test_and_save(self):
        """Tests, logs and writes a checkpoint; returns the test's CostTotals."""
        totals = self.test(one_batch=self.op["test_one"])
        self.test_outputs.append((self.epoch, self.batchnum, totals.averages(), totals.cases))
        self._log_metrics("test", self.epoch, self.batchnum, totals, 0.0)
        self.save()
        return totals

    def save(self):
        if not self.lead:
            return None
        culprit = self.net.check_finite()
        if culprit:
            raise TrainingError(f"NaN or Inf in {culprit}: not saving a checkpoint")
        state = {
            "op": dict(self.op, finetune=None),  # a resumed fine-tuned run is an ordinary resume
            "layers": self.layers,
            "params": {name: self.net.get_params(name) for name in self.net.weight_layer_names()},
            "rng_counter": self.net.rng_counter,
            "epoch": self.epoch,
            "batchnum": self.batchnum,
            "batches_done": self.batches_done,
            "train_outputs": self.train_outputs,
            "test_outputs": self.test_outputs,
            "metrics_rows": self.metrics_rows,  # rows of metrics.csv this checkpoint accounts for
        }
        path = checkpoint.save(self.run_dir, self.epoch, self.batchnum, state)
        self.last_checkpoint = path
        # keep the newest two: the older one is what loading falls back to if the newest rots
        for old in checkpoint.list_checkpoints(self.run_dir)[:-KEEP_CHECKPOINTS]:
            if os.path.abspath(old) != os.path.abspath(path):
                os.remove(old)
        return path

    def _truncate_metrics(self):
        """Cuts metrics.csv back to the rows the loaded checkpoint accounts for: the batches
        trained after it (by a run that was then killed) are trained again and logged again."""
        path = os.path.join(self.run_dir, "metrics.csv")
        keep = self.metrics_rows
        if not os.path.isfile(path):
            self.metrics_rows = 0
            return
        with open(path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        if not lines or not lines[0].endswith("\n"):  # killed while writing the header
            os.remove(path)
            self.metrics_rows = 0
            return
        if keep is None:  # a checkpoint from before metrics_rows was stored: keep what is there
            self.metrics_rows = max(0, len(lines) - 1)
            return
        complete = [line for line in lines[1:keep + 1] if line.endswith("\n")]
        if len(lines) - 1 != len(complete) or not lines[-1].endswith("\n"):
            checkpoint.write_atomic(path, "".join(lines[:1] + complete).encode("utf-8"))
        self.metrics_rows = len(complete)

    def _log_metrics(self, phase, epoch, batchnum, totals, seconds):
        if self.run_dir is None:
            return
        path = os.path.join(self.run_dir, "metrics.csv")
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["phase", "epoch", "batch", "layer", "cost", "error", "error_topk", "cases", "seconds"])
                self.metrics_rows = 0
            for name, (cost, err, errk) in totals.averages().items():
                w.writerow([phase, epoch, batchnum, name, f"{cost:.6f}", f"{err:.6f}", f"{errk:.6f}", totals.cases, f"{seconds:.3f}"])
                self.metrics_rows = (self.metrics_rows or 0) + 1

    def _print_net(self):
        for layer in self.layers:
            shape = (f"{layer['outChannels']}x{layer['outSizeY']}x{layer['outSizeX']}"
                     if "outChannels" in layer else str(layer["outputs"]))
            print(f"  {layer['name']:<16} {layer['type']:<14} -> {shape:<12} on {self.devices[layer.get('gpu', 0)]}")

    # -- features and gradient check -----------------------------------------------------------
    def write_features(self, layer_name, path):
        if layer_name not in self.by_name:
            raise ValueError(f"--write-features: no layer named '{layer_name}'")
        layer_name = config.output_layer(self.by_name, layer_name)["name"]
        os.makedirs(path, exist_ok=True)
        dp = self.test_dp
        written = []
        for _ in range(len(dp.batch_range)):
            epoch, batchnum, (images, labels) = dp.get_next_batch()
            feats = []
            for s, e in _slices(self._begin_test_batch(images, labels), self.op["mini"], self.replica_multiple):
                self.net.fprop_slice(s, e, False)
                acts = self.net.get_acts(layer_name)
                feats.append(np.moveaxis(acts, -1, 0).reshape(e - s, *acts.shape[:-1]))
            out = os.path.join(path, f"data_batch_{batchnum}.npz")
            np.savez(out, data=np.concatenate(feats), labels=labels.reshape(-1).astype(np.int64),
                     layer=layer_name)
            written.append(out)
        return written

    def check_grads(self, cases=16, entries=6, rel_tol=0.05):
        """Compares each weight's analytic gradient with central differences; PASS/FAIL lines."""
        dp = self.train_dp or self.test_dp
        _, _, (images, labels) = dp.get_next_batch()
        batch = [_columns(images, 0, cases), _columns(labels, 0, cases)]
        coeffs = {l["name"]: l.get("coeff", 1.0) for l in self.layers if l["type"].startswith("cost.")}
        counter = self.net.rng_counter

        def objective():
            self.net.rng_counter = counter
            self.net.fprop(batch, True)
            return -sum(coeffs[name] * float(values[0]) for name, values in self.net.costs().items())

        objective()
        self.net.bprop()
        rng = np.random.default_rng(self.op["seed"])
        all_pass = True
        for name in self.net.weight_layer_names():
            grads, params = self.net.get_grads(name), self.net.get_params(name)
            items = [(f"weights[{i}]", "weights", i) for i in range(len(grads["weights"]))] + [("biases", "biases", None)]
            for label, key, idx in items:
                analytic = grads[key] if idx is None else grads[key][idx]
                values = params[key] if idx is None else params[key][idx]
                picks = rng.choice(values.size, size=min(entries, values.size), replace=False)
                spread = float(np.abs(values).mean())

                def relative_error(step_scale):
                    numeric, exact = [], []
                    for flat in picks:
                        old = values.flat[flat]
                        h = step_scale * max(abs(old), spread, 1e-1 if key == "biases" else 1e-4)
                        vals = []
                        for delta in (h, -h):
                            values.flat[flat] = old + delta
                            self.net.set_params(name, {key: values if idx is None else _with(params[key], idx, values)})
                            vals.append(objective())
                        values.flat[flat] = old
                        self.net.set_params(name, {key: values if idx is None else _with(params[key], idx, values)})
                        numeric.append((vals[0] - vals[1]) / (2 * h))
                        exact.append(analytic.flat[flat])
                    numeric, exact = np.array(numeric), np.array(exact)
                    return np.linalg.norm(numeric - exact) / max(np.linalg.norm(numeric), np.linalg.norm(exact), 1e-8)

                # A step that moves some unit across a ReLU or max kink spoils the difference
                # quotient: a failing entry set is measured again with a 10x smaller step.
                err = relative_error(1e-2)
                if err >= rel_tol:
                    err = min(err, relative_error(1e-3))
                ok = err < rel_tol
                all_pass &= ok
                print(f"{'PASS' if ok else 'FAIL'}  {name}.{label}: relative error {err:.2e}")
        self.net.rng_counter = counter
        return all_pass


def _with(lst, idx, value):
    out = list(lst)
    out[idx] = value
    return out
