"""The resume checkpoint of ``train_KE_cls.py``: what it holds, how it is read, and how a resumed
(or restarted) run cuts its outputs back to it.

A checkpoint is written atomically after every validation epoch (every ``--test_interval``
epochs) and at the end of every generation. It holds only tensors and plain values (the
model, the optimizer, the RNG states of Python, NumPy and torch, the generation's trackers,
the CSV text, the RunLog's log offsets), so it loads with ``weights_only=True``: a file given
to ``--resume`` or ``--pretrained`` can never run code.

Resuming equals never having stopped: the outputs written after the checkpoint by the killed
process are cut away first (``metrics.jsonl`` and TensorBoard by the RunLog, ``train_log.txt``
to its recorded size, the CSV and ``summary.json`` rewritten, generation folders made after
the checkpoint removed), then the run continues from the checkpoint's state.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from forgetting_common.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state

if TYPE_CHECKING:
    from llf_ke.cli import Config

RESUME_FILE = "checkpoint_last.pth"
RESUME_KIND = "llf_ke-resume-v2"
#: ``--resume`` values that mean "this run's own last checkpoint" (a bare ``--resume`` is "auto").
AUTO = ("auto", "last", "True", "true", "1")


class Generation:
    """Everything one generation tracks (saved in the resume checkpoint)."""

    def __init__(self) -> None:
        self.next_epoch = 0
        self.curr_val: dict[str, float] | None = None
        self.best_val = {"top1": 0.0, "top5": 0.0}
        self.best_trn = {"top1": 0.0, "top5": 0.0}
        self.curr_tst: dict[str, float] | None = None
        self.best_tst = {"top1": 0.0, "top5": 0.0}
        self.run_dir = ""

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


def find_resume(resume: str, exp_dir: Path) -> tuple[dict | None, dict | None]:
    """(our resume state, an original-style checkpoint to start from) for ``--resume``.

    Bare ``--resume`` with no checkpoint yet gives (None, None): the run restarts from nothing.
    """
    if not resume:
        return None, None
    auto = resume in AUTO
    path = exp_dir / RESUME_FILE if auto else Path(resume)
    if not path.is_file() and auto:
        return None, None
    if not path.exists():
        raise UserError(f"--resume {resume}: no such checkpoint file")
    state = load_checkpoint(path, what="--resume checkpoint")
    if isinstance(state, dict) and state.get("kind") == RESUME_KIND:
        return state, None
    if isinstance(state, dict) and state.get("kind", "").startswith("llf_ke-resume"):
        raise UserError(f"--resume {path}: a checkpoint of an older version of this program; start the run again")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        return None, state
    raise UserError(f"--resume {path}: neither a run checkpoint of this program nor a model checkpoint "
                    "(a dict with 'state_dict')")


def _finished_summary(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def resume_decision(resume: str, exp_dir: Path) -> tuple[dict | None, dict | None, bool]:
    """(our resume state, an original-style checkpoint, restart) for ``--resume`` in ``exp_dir``;
    ``restart``: ``--resume`` found nothing saved yet, so the run starts again from nothing.
    A finished run, or a run there without ``--resume``, is refused (finished results are never overwritten)."""
    resume_state, start_ckpt = find_resume(resume, exp_dir)
    if resume_state is not None and resume_state.get("finished"):
        raise UserError(f"{exp_dir} holds a finished run; nothing to resume (choose another --name)")
    restart = bool(resume) and resume_state is None and start_ckpt is None
    if restart and _finished_summary(exp_dir / "summary.json"):
        raise UserError(f"{exp_dir} holds a finished run (without its checkpoint); nothing to resume "
                        "(choose another --name)")
    if resume_state is None and (exp_dir / "config.json").exists() and not restart:
        raise UserError(f"{exp_dir} already holds a run; pass --resume to continue it, or choose another "
                        "--name or --checkpoints_dir (finished results are never overwritten)")
    return resume_state, start_ckpt, restart


#: torchvision's ImageNet weights for ``--pretrained imagenet``, by --arch.
TORCHVISION_NAMES = {"Split_ResNet18": "resnet18", "Split_ResNet18Norm": "resnet18", "Split_ResNet34": "resnet34",
                     "Split_ResNet50": "resnet50", "Split_ResNet50Norm": "resnet50", "Split_ResNet101": "resnet101"}


def pretrained_state(pretrained: str, arch: str) -> dict[str, torch.Tensor]:
    """The ``--pretrained`` tensors, read before anything is written (a bad file stops the run first)."""
    if pretrained != "imagenet":
        return load_pretrained_state(pretrained)
    if arch not in TORCHVISION_NAMES:
        raise UserError(f"--pretrained imagenet: only the ResNets have ImageNet weights here, not {arch}")
    import torchvision

    tv_name = TORCHVISION_NAMES[arch]
    try:
        return getattr(torchvision.models, tv_name)(weights="DEFAULT").state_dict()
    except Exception as err:  # noqa: BLE001 - a download failure of any kind
        raise UserError(f"--pretrained imagenet: could not get torchvision's {tv_name} weights ({err})") from err


def load_matching(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Load the tensors whose name and shape match; return (loaded, tensors of the model)."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return len(usable), len(own)


def load_pretrained_state(path_text: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``--pretrained`` checkpoint (its ``state_dict``, or the file itself)."""
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"--pretrained {path}: no such checkpoint file")
    loaded = load_checkpoint(path, what="--pretrained checkpoint")
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--pretrained {path}: not a model checkpoint (expected a dict of tensors or a 'state_dict')")
    return state


def requires_grad_flags(model: torch.nn.Module) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def set_requires_grad(model: torch.nn.Module, flags: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, p.requires_grad))


def _log_bytes(log: logging.Logger) -> int:
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.flush()
            return Path(handler.baseFilename).stat().st_size
    return 0


def save_resume(exp_dir: Path, *, model, log: logging.Logger, runlog: RunLog, csv_path: Path, generation: int,
                done: bool, summary: dict[str, Any], gen: Generation | None = None, optimizer=None,
                val_lr=None, finished: bool = False, tracking: dict | None = None) -> None:
    """Write ``checkpoint_last.pth`` atomically (the logs are flushed and measured first);
    ``tracking``: the ``--track`` trackers' state (:mod:`llf_ke.tracking`)."""
    state = {"kind": RESUME_KIND, "generation": generation, "generation_done": done, "finished": finished,
             "model": model.state_dict(), "requires_grad": requires_grad_flags(model), "rng": get_rng_state(),
             "summary": summary, "gen_state": gen.state_dict() if gen is not None else None,
             "optimizer": optimizer.state_dict() if optimizer is not None else None,
             "val_lr": val_lr.state_dict() if val_lr is not None else None,
             "csv": csv_path.read_text(encoding="utf-8") if csv_path.exists() else None,
             "log_bytes": _log_bytes(log), "runlog": runlog.checkpoint_state(), "tracking": tracking}
    atomic_torch_save(state, exp_dir / RESUME_FILE)


def generation_root(exp_dir: Path, log_dir: str | None, exp_name: str) -> Path:
    """Where the ``gen_<g>/`` folders go (``--log-dir`` moves them, as in the original)."""
    return Path(log_dir) / exp_name if log_dir else exp_dir


def rewind_outputs(cfg: Config, state: dict | None) -> None:
    """Cut the run's own files back to ``state`` (None: to nothing, a clean restart).

    ``metrics.jsonl`` and TensorBoard are cut by ``RunLog.create(resume_state=...)``.
    """
    exp_dir = Path(cfg.exp_dir)
    log_path = exp_dir / cfg.log_file
    csv_path = exp_dir / cfg.csv_name
    if state is None:
        log_path.unlink(missing_ok=True)
        csv_path.unlink(missing_ok=True)
        (exp_dir / "summary.json").unlink(missing_ok=True)
        keep_up_to = -1
    else:
        if log_path.exists() and log_path.stat().st_size > state["log_bytes"]:
            with open(log_path, "r+b") as handle:
                handle.truncate(state["log_bytes"])
        if state["csv"] is None:
            csv_path.unlink(missing_ok=True)
        else:
            atomic_write_text(csv_path, state["csv"])
        atomic_write_json(exp_dir / "summary.json", state["summary"])
        keep_up_to = state["generation"]
    root = generation_root(exp_dir, cfg.log_dir, cfg.exp_name)
    for folder in {exp_dir, root}:  # temporary files of atomic writes cut short by the kill
        for tmp in folder.rglob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)
    if root.is_dir():
        for folder in root.glob("gen_*"):
            suffix = folder.name[4:]
            if folder.is_dir() and suffix.isdigit() and int(suffix) > keep_up_to:
                shutil.rmtree(folder)  # made after the checkpoint: the resumed run makes it again
