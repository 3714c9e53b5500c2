"""Resuming a run where it stopped: the resume file, written after every epoch and every state.

``<save_dir>/anytime_state.pth.tar`` holds everything the rest of the run depends on, in
tensors and plain values only (it loads with ``weights_only=True``): the model, the optimiser,
the state's progress (epochs done, history, best epoch and its weights, the id lists), the
replay buffer, every random stream, the results so far and how far the logs had gone
(:meth:`RunLog.checkpoint_state`). It is self-contained on purpose: the per-epoch files of the
original layout (``{k}checkpoint``, ``{k}model_SA_best``) may be one epoch ahead of it when a
run is killed between two writes, so resuming never reads them.

A resumed run on CPU equals the uninterrupted one bit for bit, logs included: the logs are cut
back to what the resume file recorded, so nothing the killed process logged afterwards repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state

from lure.cli import Config

RESUME_FILE = "anytime_state.pth.tar"
#: Bumped whenever the resume file's content changes; an older file is refused in one line.
FORMAT = 2
PHASE_EPOCH = "epoch"  # state ``k`` is under way: ``epochs_done`` epochs of it are finished
PHASE_STATE = "state"  # state ``k`` is finished (its best model selected and tested)


def check_outputs(cfg: Config, save_dir: Path) -> None:
    """A folder holding a run is refused unless ``--resume`` or ``--overwrite`` says what to do."""
    held = [name for name in ("results.json", RESUME_FILE) if (save_dir / name).exists()]
    if held and not cfg.resume and not cfg.overwrite:
        raise UserError(
            f"--save_dir {save_dir} already holds a run ({', '.join(held)}); pass --resume to continue it, "
            f"--overwrite to replace it, or choose another folder")


def resume_path(cfg: Config, save_dir: Path) -> Path:
    return Path(cfg.checkpoint) if cfg.checkpoint else save_dir / RESUME_FILE


def load_resume(cfg: Config, save_dir: Path) -> dict | None:
    """The resume file's content, or None when the run starts from the beginning.

    ``--resume`` on a folder with no resume file yet (a run killed before its first epoch
    ended) restarts cleanly, with a note; an explicit ``--checkpoint`` that is missing, a file
    that is not our resume file, and a finished run are one-line errors.
    """
    if not cfg.resume:
        return None
    path = resume_path(cfg, save_dir)
    if not path.exists() and not cfg.checkpoint:
        print(f"note: --resume: no checkpoint in {save_dir} yet ({RESUME_FILE}); starting from the beginning",
              flush=True)
        return None
    state = load_checkpoint(path, what="--resume checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(
            f"--resume checkpoint {path} is not a resume file of this version (expected {RESUME_FILE} written by "
            f"LURE_main.py/ALMA.py; the original's {{k}}checkpoint.pth.tar files cannot be resumed)")
    if state.get("finished"):
        raise UserError(f"--resume: the run in {save_dir} is already finished; pass --overwrite to run it again")
    _check_same_flags(cfg, state["results"].get("config", {}), path)
    return state


#: Flags that may differ between the interrupted run and its resumption: where things go, how much is
#: printed, which card; none of them changes what is computed.
_FREE_FLAGS = frozenset({"resume", "checkpoint", "overwrite", "quiet", "device", "gpu", "workers", "print_freq",
                         "log_dir", "run", "project_name", "wb", "save_dir", "data", "imagenet_path", "print_config"})


_SINGLE_DASH = frozenset({"no_replay", "one_replay", "buffer_replay", "snip_no_replay", "few_shot", "wb"})


def _check_same_flags(cfg: Config, before: dict, path: Path) -> None:
    """A resumed run must compute what the interrupted one would have: the same flags (one line if not)."""
    now = cfg.original()
    for key in sorted(set(before) & set(now) - _FREE_FLAGS):
        if key == "seed" and now[key] is None:
            continue  # the seed comes from the checkpoint
        if before[key] != now[key]:
            flag = f"-{key}" if key in _SINGLE_DASH else f"--{key}"
            raise UserError(f"--resume: {flag} was {before[key]!r} in the run that wrote {path}, now {now[key]!r}; "
                            f"resume with the same flags")


def runlog_resume_state(cfg: Config, state: dict | None) -> dict | None:
    """What ``RunLog.create`` cuts the logs back to: the checkpoint's, or nothing on a restart."""
    if not cfg.resume:
        return None
    return state["runlog"] if state is not None else EMPTY_STATE


def clear_stale(save_dir: Path) -> None:
    """A fresh run must not leave an earlier run's resume file or results behind (``--overwrite``)."""
    for name in (RESUME_FILE, "results.json"):
        (save_dir / name).unlink(missing_ok=True)


def _copy(sd: dict) -> dict:
    return {k: v.detach().clone().cpu() for k, v in sd.items()}


def save(ctx, phase: str, k: int, progress, results: dict, finished: bool = False) -> Path:
    """Write the resume file atomically (call after the epoch's or the state's outputs and log rows)."""
    state = {
        "format": FORMAT, "phase": phase, "state": k, "finished": finished, "seed": ctx.seed,
        "model": _copy(ctx.model.state_dict()), "optimizer": ctx.optimizer.state_dict(),
        "plan": ctx.plan.state_dict(), "generators": ctx.gens.state_dict(), "rng": get_rng_state(),
        "results": results, "runlog": ctx.log.checkpoint_state(),
        "progress": progress.state_dict() if progress is not None and phase == PHASE_EPOCH else None,
        "tracking": ctx.tracking.state_dict() if getattr(ctx, "tracking", None) is not None else None,  # --track
    }
    return atomic_torch_save(state, ctx.save_dir / RESUME_FILE)


def describe(state: dict) -> str:
    if state["phase"] == PHASE_STATE:
        return f"after state {state['state']}"
    return f"in state {state['state']} after epoch {state['progress']['epochs_done']}"


def restore_model(ctx, state: dict) -> None:
    ctx.model.load_state_dict(state["model"])
    ctx.optimizer.load_state_dict(state["optimizer"])


def as_ids(values) -> list[int]:
    return values.tolist() if isinstance(values, torch.Tensor) else list(values)


@dataclass
class StateProgress:
    """Where state ``k`` stands: its id lists, what the interventions reported, the epochs done."""

    k: int
    train_list: list[int]
    val_list: list[int]
    info: dict
    base_lr: float
    epochs_done: int = 0
    history: list = field(default_factory=list)
    best_sa: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    elapsed: float = 0.0  # seconds spent in this state by earlier (interrupted) processes

    def state_dict(self) -> dict:
        return {"k": self.k, "train_list": torch.tensor(self.train_list, dtype=torch.long),
                "val_list": torch.tensor(self.val_list, dtype=torch.long), "info": self.info,
                "base_lr": self.base_lr, "epochs_done": self.epochs_done, "history": self.history,
                "best_sa": self.best_sa, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "elapsed": self.elapsed}

    @classmethod
    def from_state_dict(cls, sd: dict) -> StateProgress:
        return cls(**{**sd, "train_list": as_ids(sd["train_list"]),
                      "val_list": as_ids(sd["val_list"])})
