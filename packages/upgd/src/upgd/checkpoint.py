"""Checkpoints of the long loops, so that a killed run resumes as if it had never stopped.

A checkpoint (``<run folder>/checkpoint.pt``, written atomically every ``--checkpoint_every``
samples, on SIGTERM, Ctrl-C and SLURM's SIGUSR1) holds everything the next step depends on:
the network, the optimizer's traces and step count, the stream's position, permutations and
generator, the noise and global RNG states, the per-step values recorded so far, and how far
``metrics.jsonl`` / TensorBoard had been written (:meth:`RunLog.checkpoint_state`). It holds
tensors and plain values only and loads with ``weights_only=True``.

Signals are deferred to the end of the step in progress, so a checkpoint never holds a
half-done step. The checkpoint is removed once the result JSON is written.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.errors import Terminated, UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, set_rng_state

CHECKPOINT = "checkpoint.pt"
#: Default interval in samples: 1–3 minutes of the CIFAR seed command on one CPU thread.
DEFAULT_EVERY = 10_000
FORMAT = 1
#: Configuration keys that may differ between the interrupted and the resuming invocation.
SESSION_KEYS = frozenset({"quiet", "overwrite", "checkpoint_every", "device", "data_dir", "save_path",
                          "save_model_dir", "overlap", "stats_worker"})
_DEFERRED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def open_run(cfg, run_dir: Path, result: Path, config: dict, kind: str,
             tensorboard_tag: Callable[[str], str | None] | None = None) -> tuple[RunLog, dict | None]:
    """Open the run folder: fresh, resumed from its checkpoint, or refused (one line).

    A finished result is refused without ``--overwrite 1``; a folder of an interrupted run is
    refused unless ``--resume 1`` (continue) or ``--overwrite 1`` (start again) says which.
    Returns the log and the checkpoint to resume from (None: start at sample 0).
    ``tensorboard_tag``: the metric key -> TensorBoard tag mapping of :class:`RunLog`.
    """
    if result.exists() and not cfg.overwrite:
        what = "nothing to resume" if cfg.resume else "it is kept"
        raise UserError(f"{result} already holds a finished result ({what}); pass --overwrite 1 to replace it, "
                        "or choose another --save_path or --seed")
    ckpt_file = run_dir / CHECKPOINT
    options = dict(tensorboard=cfg.tensorboard, quiet=cfg.quiet, tensorboard_tag=tensorboard_tag)
    if cfg.resume:
        if not ckpt_file.exists():
            if (run_dir / "config.json").exists():  # a run killed before its first checkpoint
                note(f"{cfg.prog}: no checkpoint in {run_dir}: starting from sample 0")
            return RunLog.create(run_dir, config, resume=True, resume_state=EMPTY_STATE, **options), None
        ckpt = load_checkpoint(ckpt_file, what="checkpoint")
        _check_compatible(ckpt, ckpt_file, cfg, config, kind)
        note(f"{cfg.prog}: resuming from sample {ckpt['next_step']} of {cfg.n_samples} ({ckpt_file})")
        return RunLog.create(run_dir, config, resume=True, resume_state=ckpt["runlog"], **options), ckpt
    if (run_dir / "config.json").exists() and not cfg.overwrite:
        state = "its checkpoint" if ckpt_file.exists() else "no checkpoint yet"
        raise UserError(f"{run_dir} holds an interrupted run ({state}); pass --resume 1 to continue it "
                        "or --overwrite 1 to start it again")
    log = RunLog.create(run_dir, config, overwrite=True, **options)
    # --overwrite 1 replaces the whole run now, so that an interruption of the new one resumes it.
    ckpt_file.unlink(missing_ok=True)
    result.unlink(missing_ok=True)
    return log, None


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in SESSION_KEYS}


def _check_compatible(ckpt: dict, path: Path, cfg, config: dict, kind: str) -> None:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "next_step" not in ckpt:
        raise UserError(f"{path} is not a checkpoint of this program; pass --overwrite 1 to start again")
    if ckpt["kind"] != kind:
        raise UserError(f"{path} was written by the {ckpt['kind']} loop, not the {kind} loop")
    saved, now = ckpt["config"], _comparable(config)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise UserError(f"{path} was written with {key} = {saved.get(key)!r}, not {now.get(key)!r}; "
                            "resume with the same settings or pass --overwrite 1 to start again")
    if ckpt["device"] != cfg.device.type:
        raise UserError(f"{path} was written on {ckpt['device']}; resume it with --device {ckpt['device']}")


class Checkpointer:
    """Saves and restores one loop's state; used as a context manager around the loop.

    ``series``: per-step tensors of length n_samples (the prefix up to the checkpoint is stored);
    ``extra``: other tensors or plain values the loop keeps (held-out results, correlation lists);
    ``generators``: named torch generators beyond the optimizer's and the stream's.
    """

    def __init__(self, cfg, exp, log: RunLog, run_dir: Path, ckpt: dict | None, kind: str, config: dict,
                 generators: dict[str, torch.Generator] | None = None) -> None:
        self.cfg, self.exp, self.log, self.kind = cfg, exp, log, kind
        self.path = run_dir / CHECKPOINT
        self.every = cfg.checkpoint_every
        self.config = _comparable(config)
        self.generators = generators or {}
        self.saved = ckpt
        self.start = int(ckpt["next_step"]) if ckpt else 0
        self.elapsed_before = float(ckpt["elapsed"]) if ckpt else 0.0
        self.pending: int | None = None
        self._previous: dict[int, object] = {}
        if ckpt:
            self._restore(ckpt)

    def _restore(self, ckpt: dict) -> None:
        exp = self.exp
        if ckpt["data"] != exp.task.source_description:
            raise UserError(f"{self.path} was written on {ckpt['data']}, not {exp.task.source_description}; "
                            "resume with the same data or pass --overwrite 1 to start again")
        exp.net.load_state_dict(ckpt["net"])
        exp.optimizer.load_state_dict(ckpt["optimizer"])
        exp.task.load_state_dict(ckpt["task"])
        for name, gen in self.generators.items():
            gen.set_state(ckpt["generators"][name])
        set_rng_state(ckpt["rng"])

    def restore_series(self, **series: torch.Tensor) -> None:
        """Copy the stored prefix of each per-step tensor back into it."""
        if self.saved:
            for name, tensor in series.items():
                stored = self.saved["series"][name]
                tensor[: len(stored)] = stored.to(tensor.device)

    def extra(self, name: str, default):
        return self.saved["extra"][name] if self.saved else default

    def save(self, next_step: int, series: dict[str, torch.Tensor], extra: dict, elapsed: float) -> None:
        exp = self.exp
        state = {
            "format": FORMAT, "kind": self.kind, "next_step": next_step, "config": self.config,
            "device": self.cfg.device.type, "data": exp.task.source_description,
            "net": {k: v.detach().cpu().clone() for k, v in exp.net.state_dict().items()},
            "optimizer": exp.optimizer.state_dict(), "task": exp.task.state_dict(),
            "generators": {name: gen.get_state() for name, gen in self.generators.items()},
            "rng": get_rng_state(),
            "series": {name: t[:next_step].detach().cpu().clone() for name, t in series.items()},
            "extra": extra, "elapsed": elapsed,
        }
        state["runlog"] = self.log.checkpoint_state()  # last: the logs are flushed up to here
        atomic_torch_save(state, self.path)

    def after_step(self, next_step: int, series: dict[str, torch.Tensor], extra_fn, elapsed: float,
                   before_save=None) -> None:
        """Checkpoint when due or when a signal arrived during the step; then act on the signal.

        ``before_save`` runs first when a checkpoint is written (the statistics thread's drain)."""
        due = self.every > 0 and next_step % self.every == 0 and next_step < self.cfg.n_samples
        if not (due or self.pending is not None):
            return
        if before_save is not None:
            before_save()
        self.save(next_step, series, extra_fn(), elapsed)
        if self.pending is not None:
            note(f"{self.cfg.prog}: checkpoint at sample {next_step} of {self.cfg.n_samples} in {self.path}; "
                 "continue with the same command and --resume 1")
            self._deliver()

    def finish(self) -> None:
        """The result is written: the checkpoint has served."""
        self.path.unlink(missing_ok=True)

    # -- signals: act at the end of the step in progress -------------------------------------
    def _defer(self, signum, frame) -> None:  # noqa: ARG002
        if self.pending is None:
            self.pending = signum

    def __enter__(self) -> Checkpointer:
        if threading.current_thread() is threading.main_thread():
            for sig in _DEFERRED:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._defer)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _deliver(self) -> None:
        signum, previous = self.pending, self._previous.get(self.pending)
        self.__exit__()
        if signum == getattr(signal, "SIGUSR1", None) and callable(previous):
            previous(signum, None)  # the original's timeout file, then exit 0
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated
