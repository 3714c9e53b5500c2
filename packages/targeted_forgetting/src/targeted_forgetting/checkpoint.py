"""Checkpoint and resume for ``mixed_group_training.py`` (``--resume``, ``--checkpoint_every``).

A checkpoint is ``SAVE_PATH/FNAME/checkpoint.pt``, written atomically every
``--checkpoint_every`` iterations and when the run is stopped by Ctrl-C or SIGTERM, and removed
when the run finishes. It holds only tensors and plain values (it loads with
``weights_only=True``): the live model, the optimizer, the rewind snapshot and fixed masks, the
named generators (data order as of the epoch's start, augmentation, masks), the global RNG
states, the probe records so far, the ``--track`` trackers' state, the position (epoch, batch
within it, iteration) and the RunLog state, so a resumed run continues exactly where the
checkpoint left off: its outputs equal an uninterrupted run's (on CPU, bit for bit).

Signals are deferred to the end of the current iteration (:class:`forgetting_common.stopping.DeferredStop`) so the
checkpoint is always taken at a consistent point; a second signal stops at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from forgetting_common.atomic import atomic_torch_save
from forgetting_common.cli import config_dict
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, set_rng_state

from targeted_forgetting.cli import Config

CHECKPOINT = "checkpoint.pt"
FORMAT = "targeted_forgetting.mixed_group_training/1"
#: Flags that do not change what a run computes; a resume may change them.
OPERATIONAL = frozenset({"resume", "quiet", "num_threads", "device", "no_plot", "checkpoint_every",
                         "num_workers", "print_config", "no_wandb"})


def computing_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags that decide what the run computes (everything but :data:`OPERATIONAL`)."""
    return {k: v for k, v in config_dict(flags).items() if k not in OPERATIONAL}


def check_same_flags(saved: dict[str, Any], cfg: Config, path: Path) -> None:
    """A resume must use the flags the run started with; the first difference is one line."""
    now = computing_flags(cfg.as_dict())
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
        "flags": computing_flags(exp.config.as_dict()),
        "model": exp.model.state_dict(),
        "optimizer": exp.optimizer.state_dict(),
        "init_weights": exp.init_weights,
        "fixed_masks": exp.forget.fixed_masks,
        "rewind_to_init": exp.forget.rewind_to_init,
        "print_every": exp.print_every,
        "iterations": exp.iterations,
        "epoch": exp.epoch,
        "batches_in_epoch": exp.batches_in_epoch,
        "epoch_data_state": exp.epoch_data_state,
        "mask_gen": exp.mask_gen.get_state(),
        "aug_gen": exp.aug_gen.get_state(),
        "rng": get_rng_state(),
        "records": exp.records,
        "trackers": exp.trackers.state_dict(),
        "seconds": exp.seconds,
        "runlog": log.checkpoint_state() if log is not None else {},
    }


def save_checkpoint(exp: Any, log: Any, run_dir: Path) -> Path:
    return atomic_torch_save(experiment_state(exp, log), run_dir / CHECKPOINT)


def read_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """Load a checkpoint safely and check it belongs to this script and these flags."""
    state = load_checkpoint(path, what="--resume: checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"--resume: {path} is not a mixed_group_training.py checkpoint")
    check_same_flags(state["flags"], cfg, path.parent)
    return state


def restore_experiment(exp: Any, state: dict[str, Any]) -> None:
    """Put a freshly built :class:`~targeted_forgetting.train.Experiment` where the checkpoint was."""
    device = exp.device
    exp.model.load_state_dict(state["model"])
    exp.optimizer.load_state_dict(state["optimizer"])
    exp.init_weights = ({k: v.to(device) for k, v in state["init_weights"].items()}
                        if state["init_weights"] is not None else None)
    exp.forget.fixed_masks = ({k: v.to(device) for k, v in state["fixed_masks"].items()}
                           if state["fixed_masks"] is not None else None)
    exp.forget.rewind_to_init = bool(state["rewind_to_init"])
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
    exp.trackers.load_state_dict(state.get("trackers", {}))
    exp.seconds = float(state["seconds"])
    exp.resumed = True


def remove_checkpoint(run_dir: Path) -> None:
    (run_dir / CHECKPOINT).unlink(missing_ok=True)


def resume_point(cfg: Config) -> tuple[Path, dict[str, Any] | None, dict[str, Any] | None]:
    """``--resume``: the run folder, its checkpoint (None: start from the beginning) and its config."""
    run_dir = Path(cfg.save_path) / cfg.fname
    if (run_dir / CHECKPOINT).is_file():
        state = read_checkpoint(run_dir / CHECKPOINT, cfg)
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
