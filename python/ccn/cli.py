"""Entry points of convnet.py (train / resume / test / check-grads / write-features) and
shownet.py (plots of a trained net)."""
import os
import sys

from . import checkpoint, options


def _stop_job(code):
    """Under MPI an error on one rank ends every rank (none waits forever in a collective)."""
    from . import distributed
    if distributed.launched_by_mpi():
        try:
            world = distributed.world()
        except RuntimeError:
            return code
        if world.size > 1:
            world.abort(code)
    return code


def _rank_prefix():
    from . import distributed
    rank = distributed.launcher_rank()
    return f" (rank {rank})" if rank else ""


def _interrupted(trainer):
    """Ctrl-C: where the run can be resumed from, if anywhere."""
    run_dir = getattr(trainer, "run_dir", None)
    saved = checkpoint.list_checkpoints(run_dir) if run_dir and os.path.isdir(run_dir) else []
    if saved:
        return f"convnet: interrupted; resume with -f {run_dir} (its newest checkpoint is {saved[-1]})"
    return "convnet: interrupted before the first checkpoint; nothing was saved"


def convnet_main(argv=None):
    trainer = None
    try:
        given, load_file = options.parse(argv)
        allow_pickle = given.pop("allow_pickle", False)
        state, run_dir = {}, None
        if given.get("finetune"):
            if load_file:
                raise ValueError("use either -f (resume) or --finetune (new net from a checkpoint's weights)")
            loaded, path, _ = checkpoint.load(given["finetune"], allow_pickle)
            print(f"convnet: fine-tuning from {path}")
            op = options.merge(given, loaded["op"])
            op["finetune"] = path
            state = {"params": loaded["params"]}
        elif load_file:
            state, path, run_dir = checkpoint.load(load_file, allow_pickle)
            print(f"convnet: loaded {path}")
            op = options.merge(given, state["op"])
        else:
            op = options.merge(given)
        for key in ("layer_def", "layer_params"):
            if not op[key]:
                raise ValueError(f"--{key.replace('_', '-')} is required")
            if op.get("layer_path") and key in given:
                op[key] = os.path.join(op["layer_path"], op[key])
        if op.get("save_file") and run_dir is None:
            os.makedirs(op["save_file"], exist_ok=True)
            run_dir = op["save_file"]
        from .trainer import Trainer
        trainer = Trainer(op, state, run_dir)
        if op["check_grads"]:
            return 0 if trainer.check_grads() else 1
        if op["write_features"]:
            if not op["feature_path"]:
                if run_dir is None:
                    raise ValueError("--write-features needs --feature-path (or -f RUN, which writes under RUN/features)")
                op["feature_path"] = os.path.join(run_dir, "features", op["write_features"])
            for path in trainer.write_features(op["write_features"], op["feature_path"]):
                print(f"wrote {path}")
            return 0
        if op["test_only"]:
            totals = trainer.test(one_batch=False)
            print(f"test: {totals.describe()}  ({totals.cases} cases)")
            return 0
        trainer.train()
        return 0
    except (ValueError, OSError, RuntimeError) as e:  # ConfigError, CheckpointError, TrainingError among them
        print(f"convnet: error{_rank_prefix()}: {e}", file=sys.stderr)
        return _stop_job(2)
    except KeyboardInterrupt:
        print(_interrupted(trainer), file=sys.stderr)
        return _stop_job(130)


def shownet_main(argv=None):
    """shownet.py: writes the plots ccn.show draws; 2 with a one-line error on a bad request."""
    from . import show
    try:
        show.shownet(show.build_parser().parse_args(sys.argv[1:] if argv is None else argv))
        return 0
    except (ValueError, OSError, RuntimeError) as e:  # ShowError, CheckpointError, ConfigError among them
        print(f"shownet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
