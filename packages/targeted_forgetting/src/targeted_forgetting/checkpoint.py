"""Checkpoint and resume for ``mixed_group_training.py`` (``--resume``, ``--checkpoint_every``).

A checkpoint is ``SAVE_PATH/FNAME/checkpoint.pt``, written atomically every
``--checkpoint_every`` iterations and when the run is stopped by Ctrl-C or SIGTERM, and removed
when the run finishes. It holds only tensors and plain values (it loads with
``weights_only=True``): the live model, the optimizer, the rewind snapshot and fixed masks, the
named generators (data order as of the epoch's start, augmentation, masks), the global RNG
states, the probe records so far, the position (epoch, batch within it, iteration) and the
RunLog state, so a resumed run continues exactly where the checkpoint left off: its outputs
equal an uninterrupted run's (on CPU, bit for bit).

Signals are deferred to the end of the current iteration (:class:`StopRequests`) so the
checkpoint is always taken at a consistent point; a second signal stops at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from forgetting_common.atomic import atomic_torch_save
from forgetting_common.cli import config_dict
from forgetting_common.errors import Terminated, UserError
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, set_rng_state

CHECKPOINT = "checkpoint.pt"
FORMAT = "targeted_forgetting.mixed_group_training/1"
#: Flags that do not change what a run computes; a resume may change them.
OPERATIONAL = frozenset({"resume", "quiet", "num_threads", "device", "no_plot", "checkpoint_every",
                         "num_workers", "print_config", "no_wandb"})


class StopRequests:
    """Ctrl-C / SIGTERM inside the training loop, remembered until the end of the iteration.

    The loop asks :attr:`requested` after each iteration, writes a checkpoint, and calls
    :meth:`stop`, which raises what the signal would have raised (``KeyboardInterrupt`` or
    :class:`forgetting_common.errors.Terminated`). A second signal raises at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002 (signal handler signature)
        if self.signum is not None:
            self._raise(signum)
        self.signum = signum
        print(f"{self.prog}: {signal.Signals(signum).name} received: stopping after this iteration "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def stop(self) -> None:
        assert self.signum is not None
        self._raise(self.signum)

    @staticmethod
    def _raise(signum: int) -> None:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def computing_flags(args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """The flags that decide what the run computes (everything but :data:`OPERATIONAL`)."""
    return {k: v for k, v in config_dict(args).items() if k not in OPERATIONAL}


def check_same_flags(saved: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    """A resume must use the flags the run started with; the first difference is one line."""
    now = computing_flags(args)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise UserError(
                f"--resume: {path} was started with --{key} {saved.get(key)!r}, not {now.get(key)!r}; "
                "resume with the flags it started with"
            )


def experiment_state(exp: Any, log: Any) -> dict[str, Any]:
    """Everything :func:`restore_experiment` needs, as tensors and plain values."""
    return {
        "format": FORMAT,
        "flags": computing_flags(exp.args),
        "model": exp.model.state_dict(),
        "optimizer": exp.optimizer.state_dict(),
        "init_weights": exp.init_weights,
        "fixed_masks": exp.cfg.fixed_masks,
        "rewind_to_init": exp.cfg.rewind_to_init,
        "print_every": exp.print_every,
        "iterations": exp.iterations,
        "epoch": exp.epoch,
        "batches_in_epoch": exp.batches_in_epoch,
        "epoch_data_state": exp.epoch_data_state,
        "mask_gen": exp.mask_gen.get_state(),
        "aug_gen": exp.aug_gen.get_state(),
        "rng": get_rng_state(),
        "records": exp.records,
        "seconds": exp.seconds,
        "runlog": log.checkpoint_state() if log is not None else {},
    }


def save_checkpoint(exp: Any, log: Any, run_dir: Path) -> Path:
    return atomic_torch_save(experiment_state(exp, log), run_dir / CHECKPOINT)


def read_checkpoint(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load a checkpoint safely and check it belongs to this script and these flags."""
    state = load_checkpoint(path, what="--resume: checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"--resume: {path} is not a mixed_group_training.py checkpoint")
    check_same_flags(state["flags"], args, path.parent)
    return state


def restore_experiment(exp: Any, state: dict[str, Any]) -> None:
    """Put a freshly built :class:`~targeted_forgetting.train.Experiment` where the checkpoint was."""
    device = exp.device
    exp.model.load_state_dict(state["model"])
    exp.optimizer.load_state_dict(state["optimizer"])
    exp.init_weights = ({k: v.to(device) for k, v in state["init_weights"].items()}
                        if state["init_weights"] is not None else None)
    exp.cfg.fixed_masks = ({k: v.to(device) for k, v in state["fixed_masks"].items()}
                           if state["fixed_masks"] is not None else None)
    exp.cfg.rewind_to_init = bool(state["rewind_to_init"])
    exp.print_every = int(state["print_every"])
    exp.iterations = int(state["iterations"])
    exp.epoch = int(state["epoch"])
    exp.epochs = exp.epoch + 1
    exp.batches_in_epoch = int(state["batches_in_epoch"])
    exp.epoch_data_state = state["epoch_data_state"]
    exp.mask_gen.set_state(state["mask_gen"])
    exp.aug_gen.set_state(state["aug_gen"])
    set_rng_state(state["rng"])
    exp.records = list(state["records"])
    exp.seconds = float(state["seconds"])
    exp.resumed = True


def remove_checkpoint(run_dir: Path) -> None:
    (run_dir / CHECKPOINT).unlink(missing_ok=True)


def resume_point(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """``--resume``: the run folder, its checkpoint (None: start from the beginning) and its config."""
    run_dir = Path(args.save_path) / args.fname
    if (run_dir / CHECKPOINT).is_file():
        state = read_checkpoint(run_dir / CHECKPOINT, args)
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            config = None
        return run_dir, state, config
    if (run_dir / "summary.json").exists():
        raise UserError(f"--resume: {run_dir} holds a finished run (summary.json, no checkpoint); "
                        "nothing to resume (a new run goes to a new folder without --resume)")
    print(f"mixed_group_training.py: note: no checkpoint in {run_dir}; starting from the beginning",
          file=sys.stderr)
    return run_dir, None, None
