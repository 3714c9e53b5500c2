"""Checkpoint and resume (``--resume``, ``--checkpoint_every``) for ``forget_train.py`` and
``mixed_language_forget_samebatch.py`` (:func:`save_mixed_checkpoint`, a much smaller state).

A checkpoint is ``<out_dir>/<fname>/checkpoint.pt``, written atomically every
``--checkpoint_every`` iterations, at the end of training (before the final evaluations) and
when Ctrl-C or SIGTERM stops the run; it is removed once every output is written. It holds
only tensors and plain values (it loads with ``weights_only=True``): sender, receiver, both
Adam states, whether the receiver is frozen, the fixed masks, the game and ease-of-teaching
NumPy generators, the global RNG states, the per-iteration traces so far, the topographic
similarities, the evaluations, trackers and weight snapshots, and the RunLog state. A resumed
run therefore equals an uninterrupted one (on CPU, bit for bit, logs included).

Signals are deferred to the end of the current iteration (:class:`forgetting_common.stopping.DeferredStop`), so the
checkpoint is always taken between two iterations; a second signal stops at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.cli import config_dict
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, set_rng_state

from ease_of_teaching.cli import Flags

CHECKPOINT = "checkpoint.pt"
FORMAT = "ease_of_teaching.forget_train/1"
FORMAT_MIXED = "ease_of_teaching.mixed_language_forget_samebatch/1"
#: Flags that do not change what a run computes; a resume may change them.
OPERATIONAL = frozenset({"resume", "quiet", "num_threads", "device", "gpu", "checkpoint_every", "overwrite",
                         "print_config", "no_wandb", "jupyter", "out_dir"})


# --------------------------------------------------------------------------- flags
def computing_flags(cfg: Flags) -> dict[str, Any]:
    """The flags that decide what the run computes (everything but :data:`OPERATIONAL`)."""
    return {k: v for k, v in config_dict(cfg.as_dict()).items() if k not in OPERATIONAL}


def check_same_flags(saved: dict[str, Any], args: Flags, folder: Path) -> None:
    now = computing_flags(args)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise UserError(
                f"--resume: {folder} was started with --{key} {saved.get(key)!r}, not {now.get(key)!r}; "
                "resume with the flags it started with"
            )


def resume_point(args: Flags, folder: Path, prog: str,
                 fmt: str = FORMAT) -> tuple[dict | None, dict | None]:
    """``--resume``: the checkpoint (None: start from the beginning) and the run's first config."""
    path = folder / CHECKPOINT
    if path.is_file():
        state = load_checkpoint(path, what="--resume: checkpoint")
        if not isinstance(state, dict) or state.get("format") != fmt:
            raise UserError(f"--resume: {path} is not a {prog} checkpoint")
        check_same_flags(state["flags"], args, folder)
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = None
        return state, config
    if (folder / "summary.json").exists():
        raise UserError(f"--resume: {folder} holds a finished run (summary.json, no checkpoint); nothing to "
                        "resume (use another --fname, or --overwrite to replace it)")
    print(f"{prog}: note: no checkpoint in {folder}; starting from the beginning", file=sys.stderr)
    return None, None


# --------------------------------------------------------------------------- state
def _tensor(value: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else torch.as_tensor(value)


def _pack_lists(lists: dict[str, list]) -> dict[str, list]:
    """Tracker/weight lists (NumPy arrays and NumPy or Python scalars) as tensors and plain numbers."""
    out = {}
    for key, items in lists.items():
        out[key] = [_tensor(x) if isinstance(x, np.ndarray) else x.item() if isinstance(x, np.generic) else x
                    for x in items]
    return out


def _unpack_lists(lists: dict[str, list]) -> dict[str, list]:
    return {key: [x.numpy() if isinstance(x, torch.Tensor) else x for x in items] for key, items in lists.items()}


def trainer_state(tr: Any, next_iter: int, traces: dict[str, torch.Tensor], masks: dict[str, Any]) -> dict:
    """Everything :func:`restore_trainer` needs, as tensors and plain values."""
    team = tr.team
    return {
        "format": FORMAT,
        "flags": computing_flags(tr.config),
        "next_iter": next_iter,
        "sbot": team.sbot.state_dict(), "rbot": team.rbot.state_dict(),
        "s_opt": team.s_opt.state_dict(), "r_opt": team.r_opt.state_dict(),
        "receiver_frozen": not any(p.requires_grad for p in team.rbot.parameters()),
        "masks": masks,
        "sampler_rng": tr.sampler.rng.bit_generator.state,
        "eot_rng": tr.eot_rng.bit_generator.state,
        "rng": get_rng_state(),
        "traces": {k: v[:next_iter].cpu().clone() for k, v in traces.items()},
        "dTopo": _tensor(tr.dTopo), "dEntropy": _tensor(tr.dEntropy), "dTopoNew": _tensor(tr.dTopoNew),
        "eval_acc": [_tensor(a) for a in tr.eval_acc],
        "eval_meta": tr.eval_meta,
        "trackers": _pack_lists(tr.trackers),
        "weights": _pack_lists(tr.weights),
        "runlog": tr.log.checkpoint_state(),
    }


def save_checkpoint(tr: Any, next_iter: int, traces: dict[str, torch.Tensor], masks: dict[str, Any]) -> Path:
    return atomic_torch_save(trainer_state(tr, next_iter, traces, masks), tr.log.dir / CHECKPOINT)


def restore_trainer(tr: Any, state: dict, traces: dict[str, torch.Tensor]) -> tuple[int, dict[str, Any]]:
    """Put a fresh trainer where the checkpoint was; return the next iteration and the masks."""
    team = tr.team
    team.sbot.load_state_dict(state["sbot"])
    team.rbot.load_state_dict(state["rbot"])
    team.s_opt.load_state_dict(state["s_opt"])
    team.r_opt.load_state_dict(state["r_opt"])
    if state["receiver_frozen"]:
        team.freeze_receiver()
    tr.sampler.rng.bit_generator.state = state["sampler_rng"]
    tr.eot_rng.bit_generator.state = state["eot_rng"]
    set_rng_state(state["rng"])
    next_iter = int(state["next_iter"])
    for key, value in state["traces"].items():
        traces[key][:next_iter] = value.to(traces[key].device)
    tr.dTopo, tr.dEntropy, tr.dTopoNew = (state[k].numpy().copy() for k in ("dTopo", "dEntropy", "dTopoNew"))
    tr.eval_acc = [a.numpy() for a in state["eval_acc"]]
    tr.eval_meta = list(state["eval_meta"])
    tr.trackers = _unpack_lists(state["trackers"])
    tr.weights = _unpack_lists(state["weights"])
    masks = {k: ({n: m.to(tr.device) for n, m in v.items()} if v is not None else None)
             for k, v in state["masks"].items()}
    return next_iter, masks


def save_mixed_checkpoint(args: Flags, log: Any, next_iter: int, live: Any, opt: Any,
                          records: list[dict]) -> Path:
    """The mixed-language run after ``next_iter`` iterations. The permutation, object order,
    initial weights and fixed masks are re-drawn from ``--seed`` on resume, as at the start."""
    state = {
        "format": FORMAT_MIXED, "flags": computing_flags(args), "next_iter": next_iter,
        "live": live.state_dict(), "opt": opt.state_dict(), "rng": get_rng_state(),
        "records": records, "runlog": log.checkpoint_state(),
    }
    return atomic_torch_save(state, log.dir / CHECKPOINT)


def restore_mixed(state: dict, live: Any, opt: Any) -> tuple[int, list[dict]]:
    live.load_state_dict(state["live"])
    opt.load_state_dict(state["opt"])
    set_rng_state(state["rng"])
    return int(state["next_iter"]), list(state["records"])


def remove_checkpoint(folder: Path) -> None:
    (folder / CHECKPOINT).unlink(missing_ok=True)
