"""Command-line options of convnet.py, with cuda-convnet's names.

Options given on the command line override those stored in a checkpoint (``-f``); the
layer definition is fixed once trained, the layer-params file is re-read on every start.
"""
import argparse
import difflib
import re
import sys

from . import data

# Options that cannot change when a run is resumed.
FIXED_ON_RESUME = ("layer_def", "data_provider")


def _range(text):
    """'1-6' -> [1..6]; '7' -> [7]; '1-3,5' -> [1, 2, 3, 5]."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad batch range '{text}' (expected e.g. 1-5 or 6 or 1-3,5)")
    if not out:
        raise argparse.ArgumentTypeError(f"empty batch range '{text}'")
    return out


def _bool(text):
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 0 or 1, got '{text}'")


def _devices(text):
    devices = [d.strip() for d in str(text).split(",") if d.strip()]
    for d in devices:
        if d != "cpu" and not d.isdigit():
            raise argparse.ArgumentTypeError(f"bad device '{d}' in --gpu (expected a CUDA ordinal or 'cpu')")
    if not devices:
        raise argparse.ArgumentTypeError("--gpu is empty")
    return devices


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a mistyped option gets "did you mean", not the usage."""

    def error(self, message):
        match = re.match(r"unrecognized arguments: (.*)", message)
        if match:
            known = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
            lines = []
            for arg in match.group(1).split():
                name = arg.split("=", 1)[0]
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6) if name.startswith("-") else []
                lines.append(f"unknown option {name}" + (f"; did you mean {close[0]}?" if close else "")
                             if name.startswith("-") else f"unexpected argument {arg!r}")
            message = "; ".join(lines)
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


class Refused(argparse.Action):
    """An option of cuda-convnet this program does not take: one line saying what to use."""

    def __call__(self, parser, namespace, values, option_string=None):
        raise ValueError(f"{option_string} is not supported: {self.help}")


class NoEffect(argparse.Action):
    """An option of cuda-convnet that tuned only how its GPU code ran: accepted, no effect."""

    def __call__(self, parser, namespace, values, option_string=None):
        pass


def add_originals(parser, refused, no_effect):
    """Adds cuda-convnet's options this program refuses ({option: what to use instead}) or
    accepts without effect ({option: why})."""
    for option, instead in refused.items():
        parser.add_argument(option, nargs="?", action=Refused, help=instead)
    for option, why in no_effect.items():
        parser.add_argument(option, nargs="?", action=NoEffect, help=f"accepted, no effect: {why}")


# cuda-convnet (v1), the 2012 release and cuda-convnet2 options of convnet.py this program
# does not take, each with what to do instead.
CONVNET_REFUSED = {
    "--conv-to-local": "change type=conv to type=local in a copy of the layer file and start from the "
                       "checkpoint with --finetune (weights of changed layers are re-initialised)",
    "--unshare-weights": "remove weightSource= from a copy of the layer file and start from the checkpoint "
                         "with --finetune",
    "--test-out": "test results are written to the run directory's metrics.csv; use --write-features=<softmax "
                  "layer> --feature-path=DIR for per-case predictions",
    "--pca-noise": "use --color-noise=<scale> (per-channel colour noise, cifar-cropped)",
    "--max-test-err": "every test writes a checkpoint; keep the one you want",
    "--num-gpus": "list the devices with --gpu, e.g. --gpu=0,1 or --gpu=cpu,cpu",
    "--wupdate-freq": "weights are updated after every minibatch; use a larger --mini",
    "--zip-save": "checkpoints are written uncompressed",
}
CONVNET_NO_EFFECT = {
    "--conserve-mem": "memory here is planned once per batch size",
    "--force-save": "a checkpoint is always written when training stops",
    "--max-filesize": "checkpoints are one file each, of any size",
}


DEFAULTS = {
    "layer_def": None,
    "layer_params": None,
    "data_path": None,
    "save_path": "runs",
    "data_provider": "fashion-mnist",
    "train_range": None,
    "test_range": None,
    "test_freq": 0,
    "epochs": 20,
    "mini": 128,
    "gpu": None,
    "test_only": False,
    "test_one": True,
    "check_grads": False,
    "multiview_test": False,
    "logreg_name": None,
    "write_features": None,
    "feature_path": None,
    "finetune": None,
    "seed": 0,
    "max_batches": 0,
    "layer_path": "",
    "save_file": None,
}
# Each provider declares the options it takes (ccn.data.ProviderOption).
DEFAULTS.update({name: option.default for name, (option, _) in data.provider_options().items()})


def build_parser():
    p = Parser(
        prog="convnet.py",
        description="Train a convolutional net described by cuda-convnet layer files.",
        argument_default=argparse.SUPPRESS,  # only options the user gave override a checkpoint's
    )
    a = p.add_argument
    a("-f", "--load-file", dest="load_file", help="checkpoint to resume (a run directory loads its newest checkpoint)")
    a("--save-file", dest="save_file", help="the run directory for the checkpoints (instead of a new one under "
                                           "--save-path)")
    a("--layer-path", dest="layer_path", help="folder prefixed to relative --layer-def / --layer-params paths")

    a("--layer-def", dest="layer_def", help="layer definition file (architecture)")
    a("--layer-params", dest="layer_params", help="layer parameter file (learning rates, ...)")
    a("--data-path", dest="data_path", help="data directory (provider default when omitted)")
    a("--save-path", dest="save_path", help="directory for checkpoints (default: runs)")
    a("--data-provider", dest="data_provider", help=" | ".join(sorted(data.PROVIDERS)))
    a("--train-range", dest="train_range", type=_range, help="training batch numbers, e.g. 1-6")
    a("--test-range", dest="test_range", type=_range, help="test batch numbers, e.g. 7")
    a("--test-freq", dest="test_freq", type=int, help="test (and save) every this many training batches; 0: once per epoch")
    a("--epochs", dest="epochs", type=int, help="number of epochs (default 20)")
    a("--mini", dest="mini", type=int, help="minibatch size (default 128)")
    a("--gpu", dest="gpu", type=_devices, help="logical devices: CUDA ordinals or cpu, e.g. 0,1 or cpu,cpu")
    a("--test-only", dest="test_only", type=_bool, help="test the loaded net and exit")
    a("--test-one", dest="test_one", type=_bool, help="during training, test on one batch (1) or the whole test range (0)")
    a("--check-grads", dest="check_grads", type=_bool, help="check the net's gradients numerically and exit")
    a("--multiview-test", dest="multiview_test", type=_bool, help="average predictions over the provider's views when testing")
    a("--logreg-name", dest="logreg_name", help="the cost.logreg layer for multiview testing")
    a("--write-features", dest="write_features", help="write this layer's outputs on the test set and exit")
    a("--feature-path", dest="feature_path", help="directory for --write-features")
    a("--finetune", dest="finetune", help="start from this checkpoint's weights (layers whose shapes changed are re-initialised)")
    a("--seed", dest="seed", type=int, help="random seed (weights, dropout, data order)")
    a("--allow-pickle", dest="allow_pickle", type=_bool, nargs="?", const=True,
      help="load an old pickle checkpoint (it can run code); not stored in the run's options")
    a("--max-batches", dest="max_batches", type=int, help="stop after this many training batches (0: no limit)")
    group = p.add_argument_group("data provider options")
    for name, (option, providers) in data.provider_options().items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_bool if option.type is bool else option.type,
                           help=f"{_provider_help(name, providers)} (default {option.default})")
    add_originals(p, CONVNET_REFUSED, CONVNET_NO_EFFECT)
    return p


def _provider_help(name, providers):
    """'a, b: help; c: other help': providers sharing an option may explain it differently."""
    by_help = {}
    for provider in providers:
        text = next(o.help for o in data.PROVIDERS[provider].options if o.name == name)
        by_help.setdefault(text, []).append(provider)
    return "; ".join(f"{', '.join(names)}: {text}" for text, names in by_help.items())


def parse(argv=None):
    """Returns (options given on the command line as a dict, load_file or None)."""
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    given = vars(ns)
    load_file = given.pop("load_file", None)
    return given, load_file


def merge(given, stored=None):
    """The effective options: defaults, then a checkpoint's options, then the command line.

    Raises ValueError if the command line changes an option fixed by the checkpoint."""
    op = dict(DEFAULTS)
    if stored:
        op.update({k: v for k, v in stored.items() if k in DEFAULTS})
        for key in FIXED_ON_RESUME:
            if key in given and given[key] != stored.get(key) and not given.get("finetune"):
                raise ValueError(f"--{key.replace('_', '-')} cannot change when resuming "
                                 f"(checkpoint has {stored.get(key)!r}); use --finetune to start a new net")
    op.update(given)
    return op
