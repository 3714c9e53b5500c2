"""Checkpoints of a search run: the original's model pair and the resume checkpoint.

* ``shared_epochE_stepS.pth`` / ``controller_epochE_stepC.pth``: the original's files (weights
  only), written every ``--save_epoch`` epochs and read by ``--load_path`` in derive/test mode.
* ``checkpoint.pth`` (new): everything the next epoch depends on, written atomically at the end
  of every epoch: weights, both optimisers, F̃ and w*, which shared gradients exist (a missing
  gradient resets F̃, so ``None`` and zeros differ), the counters and the WPL switch, the RNG
  states of torch/numpy/python and of the image stream, the image stream's position, and how far
  ``metrics.jsonl``, TensorBoard and ``forgetting.jsonl`` go, plus the ``best_dag.json`` of that
  moment. Resuming from it (``--resume=True`` or ``--load_path``) redoes the interrupted epoch
  exactly as the uninterrupted run did it. The baselines, hidden states and validation positions
  of the original restart with every phase, so nothing else carries over an epoch boundary.
"""

from __future__ import annotations

import glob
import logging
import re
from pathlib import Path

import torch
from forgetting_common.atomic import atomic_torch_save, atomic_write_text
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, set_rng_state

from wpl_enas.cli import Config

logger = logging.getLogger("wpl_enas")

CKPT_RE = re.compile(r"^(shared|controller)_epoch(\d+)_step(\d+)\.pth$")
RESUME_FILE = "checkpoint.pth"
FORMAT = 1
RUN_MARKERS = ("params.json", "forgetting.jsonl", "metrics.jsonl", "config.json", RESUME_FILE)


def find_checkpoint(model_dir: Path) -> tuple[int, int, int] | None:
    """The newest epoch E holding both original files; returns (E, shared step S, controller step C)."""
    found: dict[int, dict[str, int]] = {}
    for path in Path(model_dir).glob("*.pth"):
        m = CKPT_RE.match(path.name)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(1)] = int(m.group(3))
    complete = [e for e, kinds in found.items() if {"shared", "controller"} <= kinds.keys()]
    if not complete:
        return None
    epoch = max(complete)
    return epoch, found[epoch]["shared"], found[epoch]["controller"]


# -- the original's pair ------------------------------------------------------------------------
def save_pair(trainer) -> None:
    model_dir = trainer.model_dir
    shared_path = model_dir / f"shared_epoch{trainer.epoch}_step{trainer.shared_step}.pth"
    ctrl_path = model_dir / f"controller_epoch{trainer.epoch}_step{trainer.controller_step}.pth"
    atomic_torch_save(trainer.shared.state_dict(), shared_path)
    atomic_torch_save(trainer.controller.state_dict(), ctrl_path)
    logger.info("saved %s and %s", shared_path.name, ctrl_path.name)
    epochs = sorted({int(CKPT_RE.match(Path(p).name).group(2)) for p in glob.glob(str(model_dir / "*.pth"))
                     if CKPT_RE.match(Path(p).name)})
    for old in epochs[:-trainer.config.max_save_num]:
        for p in model_dir.glob(f"*_epoch{old}_step*.pth"):
            p.unlink(missing_ok=True)


def _load_weights(module, state, what: str, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise UserError(f"{what} {path} does not fit this configuration: {str(err).splitlines()[0]}") from err


def load_pair(trainer, load_shared: bool = True) -> int:
    """Weights of the newest pair; the run continues at E + 1 (F̃ at zero, w* at the weights)."""
    found = find_checkpoint(trainer.model_dir)
    if found is None:
        raise UserError(f"no checkpoint pair shared_epochE_stepS.pth / controller_epochE_stepC.pth "
                        f"in {trainer.model_dir}")
    epoch, s_step, c_step = found
    if load_shared:
        path = trainer.model_dir / f"shared_epoch{epoch}_step{s_step}.pth"
        _load_weights(trainer.shared, load_checkpoint(path, trainer.device), "checkpoint", path)
    path = trainer.model_dir / f"controller_epoch{epoch}_step{c_step}.pth"
    _load_weights(trainer.controller, load_checkpoint(path, trainer.device), "checkpoint", path)
    trainer.wpl.update_optimal()
    trainer.epoch = epoch
    trainer.start_epoch = epoch + 1
    trainer.shared_step, trainer.controller_step = s_step, c_step
    trainer.wpl_on = epoch + 1 > trainer.config.start_using_fisher
    if epoch >= trainer.config.shared_decay_after:
        trainer.set_shared_lr(trainer.shared_lr_at(epoch))
    logger.info("[*] loaded epoch %d (shared step %d, controller step %d); resuming at epoch %d",
                epoch, s_step, c_step, epoch + 1)
    return epoch


# -- the resume checkpoint ----------------------------------------------------------------------
def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def save_resume(trainer) -> Path:
    """Write ``checkpoint.pth`` for a run whose epoch ``trainer.epoch`` has just ended."""
    model_dir = trainer.model_dir
    best = model_dir / "best_dag.json"
    state = {
        "format": FORMAT, "kind": trainer.kind, "epoch": trainer.epoch,
        "shared_step": trainer.shared_step, "controller_step": trainer.controller_step, "wpl_on": trainer.wpl_on,
        "shared": trainer.shared.state_dict(), "controller": trainer.controller.state_dict(),
        "shared_optim": trainer.shared_optim.state_dict(), "controller_optim": trainer.controller_optim.state_dict(),
        "wpl": trainer.wpl.state_dict(),
        "shared_grad_present": [n for n, p in trainer.shared.named_parameters() if p.grad is not None],
        "data": trainer.data.state_dict(), "rng": get_rng_state(),
        "forgetting_bytes": _size(model_dir / "forgetting.jsonl"),
        "best_dag": best.read_text(encoding="utf-8") if best.exists() else None,
        "runlog": trainer.runlog.checkpoint_state() if trainer.runlog is not None else None,
    }
    return atomic_torch_save(state, model_dir / RESUME_FILE)


def read_resume(model_dir: Path) -> dict | None:
    """The resume checkpoint of a run folder (loaded without running code), or None."""
    path = Path(model_dir) / RESUME_FILE
    if not path.exists():
        return None
    state = load_checkpoint(path, "cpu", what="resume checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT or "epoch" not in state:
        raise UserError(f"resume checkpoint {path} was not written by this main.py")
    return state


def rewind_outputs(model_dir: Path, state: dict | None) -> None:
    """Cut ``forgetting.jsonl`` and ``best_dag.json`` back to the checkpoint (None: to nothing).

    ``metrics.jsonl`` and TensorBoard are cut by ``RunLog.create(resume_state=...)``.
    """
    for stray in [*model_dir.glob(".*.tmp"), *model_dir.glob("networks/.*.tmp")]:
        stray.unlink(missing_ok=True)  # an atomic write cut short by SIGKILL
    forgetting = model_dir / "forgetting.jsonl"
    keep = int(state["forgetting_bytes"]) if state is not None else 0
    if _size(forgetting) > keep:
        with open(forgetting, "r+b") as handle:
            handle.truncate(keep)
    best = model_dir / "best_dag.json"
    text = state.get("best_dag") if state is not None else None
    if text is None:
        best.unlink(missing_ok=True)
    else:
        atomic_write_text(best, text)


def restore(trainer, state: dict, load_shared: bool = True) -> int:
    """Put the trainer where it was when ``state`` was written; it continues at epoch E + 1."""
    if state.get("kind") != trainer.kind:
        raise UserError(f"resume checkpoint in {trainer.model_dir} is of a {state.get('kind')} search, "
                        f"not {trainer.kind}")
    path = trainer.model_dir / RESUME_FILE
    if load_shared:
        _load_weights(trainer.shared, state["shared"], "resume checkpoint", path)
        _load_weights(trainer.shared_optim, state["shared_optim"], "resume checkpoint", path)
        trainer.wpl.load_state_dict(state["wpl"])
        present = set(state["shared_grad_present"])
        for name, p in trainer.shared.named_parameters():
            p.grad = torch.zeros_like(p) if name in present else None
    _load_weights(trainer.controller, state["controller"], "resume checkpoint", path)
    _load_weights(trainer.controller_optim, state["controller_optim"], "resume checkpoint", path)
    trainer.data.load_state_dict(state["data"])
    trainer.epoch = int(state["epoch"])
    trainer.start_epoch = trainer.epoch + 1
    trainer.shared_step, trainer.controller_step = int(state["shared_step"]), int(state["controller_step"])
    trainer.wpl_on = bool(state["wpl_on"])
    set_rng_state(state["rng"])  # last: building the trainer drew from the global streams
    logger.info("[*] resumed from %s after epoch %d (shared step %d, controller step %d); continuing at epoch %d",
                RESUME_FILE, trainer.epoch, trainer.shared_step, trainer.controller_step, trainer.start_epoch)
    return trainer.epoch


# -- how a run starts -----------------------------------------------------------------------
def has_run(model_dir: Path) -> bool:
    return model_dir.is_dir() and (any((model_dir / m).exists() for m in RUN_MARKERS) or any(model_dir.glob("*.pth")))


def plan_start(cfg: Config, model_dir: Path) -> tuple[bool, dict | None, bool]:
    """How the run starts: (load the original's pair, resume checkpoint state, restart a folder)."""
    if cfg.mode in ("derive", "test"):
        if cfg.load_path and not model_dir.is_dir():
            raise UserError(f"--load_path={cfg.load_path}: run folder {model_dir} does not exist")
        if (cfg.load_path or cfg.resume) and find_checkpoint(model_dir) is not None:
            return True, None, False
        raise UserError(f"--mode={cfg.mode} needs --load_path=<run folder> holding a checkpoint pair "
                        "shared_epochE_stepS.pth / controller_epochE_stepC.pth")
    if cfg.load_path:  # the original's way to continue a run
        if not model_dir.is_dir():
            raise UserError(f"--load_path={cfg.load_path}: run folder {model_dir} does not exist")
        state = read_resume(model_dir)
        if state is not None:
            return False, state, False
        if find_checkpoint(model_dir) is None:
            raise UserError(f"--load_path={cfg.load_path}: {model_dir} holds neither {RESUME_FILE} "
                            "nor a checkpoint pair shared_epochE_stepS.pth / controller_epochE_stepC.pth")
        logger.warning("%s holds no %s: continuing from the newest weight pair (optimiser, RNG and Fisher "
                       "state start afresh, logs are appended)", model_dir, RESUME_FILE)
        return True, None, False
    if not has_run(model_dir):
        if cfg.resume:
            logger.info("--resume=True and no earlier run in %s: starting a new run", model_dir)
        return False, None, False
    if not cfg.resume:
        raise UserError(f"run folder {model_dir} already holds a run; pass --resume=True to continue it, "
                        "or choose another --comment")
    state = read_resume(model_dir)
    if state is None:
        logger.warning("--resume=True but %s holds no %s (stopped before its first epoch ended): starting it "
                       "again from epoch 0", model_dir, RESUME_FILE)
        return False, None, True
    return False, state, False
