"""The experiment of ``mixed_group_training.py``: train, and probe forgetting on a copy.

Every ``print_every`` optimizer steps the live network is copied, the copy is made to forget
(:func:`targeted_forgetting.forgetting.forget_copy`), and both are scored on the current
training batch split into two groups (clean vs randomly relabelled, or easy vs the 10 %
lowest-margin examples). The "before" scores come from this step's training forward pass
(pre-step weights, train mode), the "after" scores from the copy of the post-step weights,
as in the original. The live network is never changed by a probe.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.cli import config_dict, maybe_print_config
from forgetting_common.data.tensors import augment_batch, index_batches
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.masks import snapshot
from forgetting_common.runlog import EMPTY_STATE, RunLog, wandb_available
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import make_generator, seed_everything
from forgetting_common.stopping import DeferredStop
from forgetting_common.trackers import COMPACT_FILE, build_trackers
from torch import nn

from targeted_forgetting.checkpoint import (
    CHECKPOINT,
    remove_checkpoint,
    restore_experiment,
    resume_point,
    save_checkpoint,
)
from targeted_forgetting.cli import Config, parse_config
from targeted_forgetting.data import load_train_data
from targeted_forgetting.forgetting import (
    ForgetConfig,
    check_keep_leaves_entries,
    forget_copy,
    initial_masks,
)
from targeted_forgetting.metrics import group_stats, margin_groups, probe_record, stdout_line
from targeted_forgetting.models import build_model, check_arch
from targeted_forgetting.plots import plot_runs, summarize
from targeted_forgetting.tensorboard_tags import TRACK_PREFIX, tensorboard_tag

MAX_EPOCHS = 9999  # the original's epoch loop bound
WANDB_PROJECT = "fortuitous_forgetting"
WANDB_GROUP = "mixed_group_training"


# --------------------------------------------------------------------------- helpers
def validate(cfg: Config) -> None:
    """Checks that need no data: architecture/dataset fit, W&B run-name variables."""
    check_arch(cfg.arch, cfg.train_data)
    flags = cfg.as_dict()
    for var in cfg.group_vars or []:
        if var not in flags:
            raise UserError(f"--group_vars {var}: no such flag (use flag names such as seed, keep_perc)")


def group_name(cfg: Config) -> str | None:
    """The original's W&B run name ``var1<val1>_var2<val2>…`` from ``--group_vars``."""
    if not cfg.group_vars:
        return None
    flags = cfg.as_dict()
    return "_".join(f"{var}{flags[var]}" for var in cfg.group_vars)


def wandb_configured() -> bool:
    """W&B has credentials or runs offline (it is never asked to prompt for a login)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_settings(cfg: Config) -> dict[str, Any] | None:
    """``wandb.init`` keyword arguments, or None (with a one-line note) when W&B cannot be used."""
    if cfg.no_wandb:
        return None
    if not wandb_available():
        print("mixed_group_training.py: note: wandb is not installed; logging to stdout and the run "
              "folder only (pass --no_wandb to silence this)", file=sys.stderr)
        return None
    if not wandb_configured():
        print("mixed_group_training.py: note: wandb is installed but not logged in (no WANDB_API_KEY, "
              "~/.netrc entry or WANDB_MODE=offline); logging to stdout and the run folder only",
              file=sys.stderr)
        return None
    return {"project": WANDB_PROJECT, "group": WANDB_GROUP, "name": group_name(cfg)}


def fresh_run_dir(root: str | Path, fname: str) -> Path:
    """``root/fname``, or ``root/fname_1``, ``_2``… if a run already lives there (never overwritten)."""
    base = Path(root) / fname
    candidate, k = base, 0
    while (candidate / "config.json").exists():
        if (candidate / CHECKPOINT).exists():
            print(f"mixed_group_training.py: note: {candidate} holds an interrupted run; add --resume to "
                  "continue it instead of starting a new one", file=sys.stderr)
        k += 1
        candidate = base.with_name(f"{base.name}_{k}")
    if candidate.exists() and not candidate.is_dir():
        raise UserError(f"output path {candidate} exists and is not a folder; choose another --fname")
    return candidate


def load_resume(model: nn.Module, path: str) -> None:
    """Load ``{'state_dict': ...}`` (or a bare state dict) into ``model``, with clear errors.

    Through :func:`forgetting_common.safeload.load_checkpoint` (``weights_only``): a file that
    holds anything but tensors and plain values is refused, never unpickled (it could run code).
    """
    checkpoint = load_checkpoint(path, what="--resume_path")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"--resume_path {path}: expected a dict with a 'state_dict' entry")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"--resume_path {path} does not fit --arch: {first}") from err


def make_optimizer(model: nn.Module, train_data: str, arch: str) -> torch.optim.Optimizer:
    """The original's hard-coded optimisers (``--lr`` and ``--opt`` are ignored, as there)."""
    if train_data == "mnist":
        return torch.optim.SGD(model.parameters(), lr=0.1)
    if arch == "conv4":
        return torch.optim.Adam(model.parameters(), lr=3e-4)
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def resnet_lr(epoch: int) -> float | None:
    """The ResNet step schedule: 0.01 from epoch 50, 0.001 from epoch 100."""
    return {50: 0.01, 100: 0.001}.get(epoch)


# --------------------------------------------------------------------------- the run
class Experiment:
    """Everything one run holds; :meth:`run` trains and probes, returning the records."""

    def __init__(self, cfg: Config) -> None:
        validate(cfg)
        self.config = cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        # Models first, from the global RNG seeded with --seed (as the original did).
        self.model = build_model(cfg.arch, cfg.train_data)
        self.clone = build_model(cfg.arch, cfg.train_data)
        if cfg.resume_path is not None:
            load_resume(self.model, cfg.resume_path)
        self.model.to(self.device)
        self.clone.to(self.device)
        check_keep_leaves_entries(self.model, cfg.arch, cfg.keep_perc, cfg.same_mask)
        self.data = load_train_data(
            train_data=cfg.train_data, data_source=cfg.data_source, data_dir=cfg.data_dir,
            train_limit=cfg.train_limit, train_perc=cfg.train_perc, random_perc=cfg.random_perc,
            seed=cfg.seed, download=not cfg.no_download,
        ).to(self.device)
        if len(self.data) < cfg.batch_size:
            raise UserError(
                f"the training split has {len(self.data)} examples (train_perc {cfg.train_perc}), fewer than "
                f"one batch of --batch_size {cfg.batch_size}; partial batches are skipped, so nothing would train"
            )
        # --track: built on the starting weights (init_distance measures from them); reads only.
        self.trackers = build_trackers(cfg.track, n_examples=len(self.data), model=self.model, device=self.device,
                                       ids=self.data.ids)
        self.init_weights = snapshot(self.model) if cfg.rewind_to_init else None
        self.mask_gen = make_generator(cfg.seed, "mask")
        self.data_gen = make_generator(cfg.seed, "data")
        self.aug_gen = make_generator(cfg.seed, "augment")
        self.forget = ForgetConfig(
            arch=cfg.arch, keep_perc=cfg.keep_perc, weight_mask=cfg.weight_mask,
            reset_to_zero=cfg.reset_to_zero, rewind_to_init=cfg.rewind_to_init,
            same_mask=cfg.same_mask, reinit_scope=cfg.reinit_scope,
        )
        if cfg.same_mask:
            self.forget.fixed_masks = {k: v.to(self.device) for k, v in
                                    initial_masks(self.model, self.forget, self.mask_gen).items()}
        self.optimizer = make_optimizer(self.model, cfg.train_data, cfg.arch)
        self.records: list[dict[str, Any]] = []
        self.iterations = 0
        self.epochs = 0
        # Where the run stands, for checkpoints: the epoch, the batches done in it, the data
        # generator's state at its start (the epoch's order is re-drawn from it on resume).
        self.epoch = 0
        self.batches_in_epoch = 0
        self.epoch_data_state = self.data_gen.get_state()
        self.seconds = 0.0
        self.resumed = False
        self.bar = None
        self.print_every = cfg.print_every
        if cfg.rewind_to_epoch > 0:  # probing and rewinding wait for the rewind epoch
            self.print_every = cfg.train_iters
            self.forget.rewind_to_init = False

    def batch_inputs(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.data.images[idx].to(torch.float32).div_(255.0)  # ToTensor scaling, no normalisation
        if self.config.train_data == "cifar10":
            x = augment_batch(x, crop_padding=4, flip=True, generator=self.aug_gen)
        return x

    def probe(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, outputs: torch.Tensor,
              loss: torch.Tensor, epoch: int) -> dict[str, Any]:
        groups = margin_groups(outputs) if self.config.margin_groups else self.data.groups[idx]
        before = group_stats(outputs, y, groups)
        forget_copy(self.model, self.clone, self.forget, init_weights=self.init_weights, generator=self.mask_gen)
        with torch.no_grad():
            copy_outputs = self.clone(x)  # the copy stays in train mode, as in the original
        after = group_stats(copy_outputs, y, groups)
        record = probe_record(self.iterations, float(loss.detach()), before, after)
        record["Epoch"] = epoch
        record["Random Group Size"] = int(groups.sum())
        return record

    def start_epoch(self, epoch: int) -> None:
        """What the original did at the top of every epoch (late rewinding, the ResNet schedule)."""
        cfg = self.config
        if cfg.rewind_to_epoch > 0 and epoch == cfg.rewind_to_epoch:
            self.print_every = cfg.print_every
            self.forget.rewind_to_init = True
            self.init_weights = snapshot(self.model)
        if cfg.train_data == "cifar10" and cfg.arch == "resnet18":
            lr = resnet_lr(epoch)
            if lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr

    def train_step(self, idx: torch.Tensor, epoch: int, log: RunLog | None, print_lines: bool) -> None:
        x = self.batch_inputs(idx)
        y = self.data.labels[idx]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.model(x)
        loss = F.cross_entropy(outputs, y)
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        if self.trackers:  # after the step: plasticity reads the updated network on the same batch
            self.trackers.on_batch(idx, outputs.detach(), y, model=self.model, inputs=x)
        if self.iterations % self.print_every == 0:
            record = self.probe(x, y, idx, outputs.detach(), loss, epoch)
            self.records.append(record)
            if log is not None:
                log.log(record, step=self.iterations)
            if print_lines:
                line = stdout_line(record) + "\n"
                if self.bar is not None and not self.bar.disable:
                    self.bar.write(line)  # above the bar, which a plain print would tear
                else:
                    print(line, flush=True)

    def end_epoch_tracking(self, epoch: int, log: RunLog | None) -> None:
        """The ``--track`` values of the epoch just ended (the last one may be partial), as one row."""
        if not self.trackers:
            return
        values = self.trackers.end_epoch(epoch)
        if log is not None:
            log.log({"Epoch": epoch, **{TRACK_PREFIX + k: v for k, v in values.items()}}, step=self.iterations)

    def run(self, log: RunLog | None = None, print_lines: bool = True,
            checkpoint: Callable[[], object] | None = None) -> list[dict[str, Any]]:
        """Train to ``--train_iters``, probing every ``print_every`` steps.

        ``checkpoint`` (if given) is called every ``--checkpoint_every`` iterations and, after
        the current iteration, when Ctrl-C or SIGTERM arrives (then the run stops).
        """
        cfg = self.config
        every = cfg.checkpoint_every
        self.bar = log.progress(total=cfg.train_iters, initial=self.iterations, desc="train") \
            if log is not None else None
        n = len(self.data)
        start = time.perf_counter() - self.seconds
        first_epoch, skip = self.epoch, self.batches_in_epoch
        with DeferredStop("mixed_group_training.py", unit="iteration") as stop:
            for epoch in range(first_epoch, MAX_EPOCHS):
                if self.resumed and epoch == first_epoch:
                    self.data_gen.set_state(self.epoch_data_state)  # the same order again
                else:
                    self.epoch, self.batches_in_epoch, skip = epoch, 0, 0
                    self.epoch_data_state = self.data_gen.get_state()
                    self.start_epoch(epoch)
                self.epochs = epoch + 1
                batches = index_batches(n, cfg.batch_size, generator=self.data_gen, drop_last=True,
                                        device=self.device)
                for b, idx in enumerate(batches):
                    if b < skip:
                        continue  # done before the checkpoint this run resumed from
                    self.train_step(idx, epoch, log, print_lines)
                    self.batches_in_epoch = b + 1
                    if self.bar is not None:
                        self.bar.update(1)
                    if self.iterations >= cfg.train_iters:
                        break
                    if checkpoint is not None and (stop.requested or (every and self.iterations % every == 0)):
                        self.seconds = time.perf_counter() - start
                        checkpoint()
                    if stop.requested:
                        stop.stop()
                self.end_epoch_tracking(epoch, log)
                if self.iterations >= cfg.train_iters:
                    break
        self.seconds = time.perf_counter() - start
        if self.bar is not None:
            self.bar.close()
        if self.iterations < cfg.train_iters:
            print(f"mixed_group_training.py: note: stopped after {MAX_EPOCHS} epochs at iteration "
                  f"{self.iterations} (the original's epoch bound)", file=sys.stderr)
        return self.records


def run(cfg: Config) -> Path | None:
    """Run the experiment the flags describe; return the run folder (None for --print_config)."""
    validate(cfg)
    if maybe_print_config(cfg.as_dict()):
        return None
    if cfg.lr != 0.1 or cfg.opt != "sgd":
        print("mixed_group_training.py: note: --lr and --opt are ignored, as in the original "
              "(SGD 0.1 for MNIST, Adam 3e-4 for conv4, SGD 0.1 momentum 0.9 for resnet18)", file=sys.stderr)
    wandb_kwargs = wandb_settings(cfg)
    if cfg.resume:
        run_dir, state, saved_config = resume_point(cfg)
    else:
        run_dir, state, saved_config = fresh_run_dir(cfg.save_path, cfg.fname), None, None
    exp = Experiment(cfg)  # checks the flags against the model and data before anything is written
    print(f"mixed_group_training.py: writing to {run_dir}", file=sys.stderr)
    config = config_dict(cfg.as_dict())
    config["resolved"] = {
        "device": str(exp.device), "data": exp.data.source, "train_examples": len(exp.data),
        "random_label_examples": int(exp.data.groups.sum()),
        "iterations_per_epoch": len(exp.data) // cfg.batch_size, "run_dir": str(run_dir),
        "torch": torch.__version__,
    }
    if state is not None:
        restore_experiment(exp, state)
        print(f"mixed_group_training.py: resuming at iteration {exp.iterations}", file=sys.stderr)
    log = RunLog.create(run_dir, saved_config or config, tensorboard=not cfg.no_tensorboard, quiet=cfg.quiet,
                        wandb=wandb_kwargs, resume=cfg.resume,
                        resume_state=state["runlog"] if state is not None else EMPTY_STATE, tensorboard_tag=tensorboard_tag)
    try:
        def checkpoint() -> None:
            path = save_checkpoint(exp, log, run_dir)
            if exp.bar is not None and not exp.bar.disable:
                exp.bar.set_postfix_str(f"checkpoint at {exp.iterations}")
            return path

        try:
            records = exp.run(log, print_lines=wandb_kwargs is None, checkpoint=checkpoint)
        except KeyboardInterrupt:
            print(f"mixed_group_training.py: checkpoint {run_dir / CHECKPOINT} at iteration {exp.iterations}; "
                  f"continue with the same flags and --resume", file=sys.stderr)
            raise
        summary = {
            "iterations": exp.iterations, "epochs": exp.epochs, "probes": len(records),
            "seconds": round(exp.seconds, 3),
            "iterations_per_second": round(exp.iterations / exp.seconds, 2) if exp.seconds > 0 else math.nan,
            "data": exp.data.source,
            "second_half": summarize(records, cfg.train_iters / 2),
            "all_probes": summarize(records, 0),
        }
        atomic_torch_save({"state_dict": exp.model.state_dict(), "iterations": exp.iterations},
                          run_dir / "model.pt")
        if exp.trackers:
            exp.trackers.save_compact(run_dir / COMPACT_FILE)
        if records and not cfg.no_plot:
            plot_runs([records], run_dir / "groups.png", margin_groups=cfg.margin_groups,
                      title=f"{cfg.fname}: before / after forgetting")
        log.write_json("summary.json", summary)
        remove_checkpoint(run_dir)
    finally:
        log.close()
    return run_dir


def main(argv: list[str] | None = None) -> Path | None:
    return run(parse_config(argv))
