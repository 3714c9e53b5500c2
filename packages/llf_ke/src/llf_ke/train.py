"""The loop of ``train_KE_cls.py``: build, (forget, freeze,) train, record; repeat per generation.

:func:`run` takes the :class:`~llf_ke.cli.Config`, checks what it is asked to resume, reads
the data and builds the network before anything is written, then hands over to
:class:`Training`, which runs the generations and reports every epoch to the run's
``RunLog`` (``metrics.jsonl`` and the one TensorBoard writer, step = global epoch).
"""

from __future__ import annotations

import gc
import logging
import random
from pathlib import Path
from typing import Any

import torch
from forgetting_common.atomic import atomic_torch_save, atomic_write_json
from forgetting_common.cli import config_dict
from forgetting_common.device import resolve_device
from forgetting_common.distributed import (
    Dist,
    barrier,
    collective_failures,
    init,
    shutdown,
    sync_buffers,
    wrap_model,
)
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, SilentRunLog, wandb_available
from forgetting_common.seeding import seed_everything, set_rng_state
from forgetting_common.trackers import check_data_parallel

from llf_ke import epoch as passes
from llf_ke import forgetting
from llf_ke.checkpoint import (
    RESUME_FILE,
    Generation,
    generation_root,
    load_matching,
    pretrained_state,
    resume_decision,
    rewind_outputs,
    save_resume,
    set_requires_grad,
)
from llf_ke.cli import Config
from llf_ke.data import load_splits, make_loaders
from llf_ke.ddp import sync_rng
from llf_ke.models import Builder, build_model
from llf_ke.optim import ValDependentLR, build_optimizer, lr_at, set_lr
from llf_ke.outputs import (
    append_csv_row,
    close_logger,
    csv_row,
    log_header,
    new_run_dir,
    save_model_files,
    setup_logger,
    silent_logger,
    write_settings,
)
from llf_ke.plots import plot_run
from llf_ke.tracking import RunTracking, check_resume_track, with_indices


def _device(cfg: Config) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None and cfg.gpu:
        device = resolve_device(f"cuda:{cfg.gpu}")
    return device


def _builder(cfg: Config) -> Builder:
    return Builder(conv_type=cfg.conv_type, linear_type=cfg.linear_type, bn_type=cfg.bn_type,
                   split_mode=cfg.split_mode, split_rate=cfg.split_rate, init=cfg.init,
                   mode=cfg.mode, nonlinearity=cfg.nonlinearity)


def run(cfg: Config) -> dict[str, Any]:
    """Run every generation of one experiment; return a summary (also written to summary.json).

    Under torchrun every rank runs this; only rank 0 writes (see :mod:`llf_ke.ddp`).
    """
    dist = init(_device(cfg))
    try:
        with collective_failures(dist):  # a rank whose peer died stops with one line
            return _run(cfg, dist)
    finally:
        shutdown()


def _run(cfg: Config, dist: Dist) -> dict[str, Any]:
    device = dist.device
    if not cfg.no_wandb and not wandb_available():
        raise UserError("W&B logging is on but wandb is not installed; pass --no_wandb (or install wandb)")
    exp_dir = Path(cfg.exp_dir)
    resume_state, start_ckpt, restart = resume_decision(cfg.resume, exp_dir)

    if cfg.fix_seed:
        seed_everything(cfg.seed)
    elif cfg.init_seed is not None:
        seed_everything(cfg.init_seed)
    else:
        torch.backends.cudnn.benchmark = True
    sync_rng(dist)  # unseeded ranks start alike too: the model and the reset draws are rank 0's

    # Data first: a bad dataset stops the run before any folder is written.
    splits = load_splits(cfg.data, cfg.set, cfg.num_cls, cfg.image_size, flip=not cfg.no_flip)
    check_data_parallel(cfg.track, dist.world_size, dist.is_main)
    check_resume_track(cfg.track, resume_state)
    splits = with_indices(splits, cfg.track)  # --track: the training batches carry their positions
    if cfg.set == "Folder":
        cfg = cfg.with_classes(splits.num_classes)
    loaders = make_loaders(splits, cfg, dist)

    model = build_model(cfg.arch, cfg.num_cls, _builder(cfg))
    resuming = resume_state is not None
    pretrained_note = None
    if cfg.pretrained and not resuming:
        # as the original: load, split-reinitialise with the masks the layers were built with,
        # and only then (generation 0) let --reset_layer_name rewrite the masks
        loaded, total = load_matching(model, pretrained_state(cfg.pretrained, cfg.arch))
        pretrained_note = f"loaded {loaded} of {total} tensors from --pretrained {cfg.pretrained}"
        if not cfg.no_reset:
            forgetting.split_reinitialize(model, evolve_mode=cfg.evolve_mode, split_rate=cfg.split_rate,
                                          reset_hypothesis=cfg.reset_hypothesis)
    llf_percent = None
    if cfg.reset_layer_name and not cfg.no_reset:
        llf_percent = forgetting.apply_llf_masks(model, cfg.reset_layer_name, cfg.reverse_reset)

    barrier(dist)  # every rank has checked its input before rank 0 writes anything
    config = config_dict(cfg.as_dict())
    if dist.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        if resuming or restart:
            rewind_outputs(cfg, resume_state)
        log = setup_logger(exp_dir / cfg.log_file, append=resuming)
        if cfg.quiet:
            for h in log.handlers:
                if not isinstance(h, logging.FileHandler):
                    h.setLevel(logging.WARNING)
        runlog = RunLog.create(exp_dir, config, resume=resuming or restart, tensorboard=True, quiet=cfg.quiet,
                               resume_state=resume_state["runlog"] if resuming else EMPTY_STATE if restart else None,
                               wandb=None if cfg.no_wandb else {"project": "fortuitous_forgetting", "group": "llf_ke",
                                                                 "name": cfg.exp_name})
    else:
        log, runlog = silent_logger(), SilentRunLog()
    try:
        if resuming:  # the header is already in the (cut back) log file
            where = (f"generation {resume_state['generation'] + 1}, epoch 0" if resume_state["generation_done"]
                     else f"generation {resume_state['generation']}, epoch {resume_state['gen_state']['next_epoch']}")
            log.info("output folder %s: resuming from %s at %s", exp_dir, RESUME_FILE, where)
        else:
            log_header(log, cfg, config, restart, splits, loaders, model, dist, llf_percent, pretrained_note)
        training = Training(cfg, model, device, log, runlog, loaders, llf_percent, dist)
        return training.run(resume_state, start_ckpt)
    finally:
        runlog.close()
        close_logger()


class Training:
    """The generations of one run, with where it stands (for the message on Ctrl-C / SIGTERM)."""

    def __init__(self, cfg: Config, model: torch.nn.Module, device: torch.device, log: logging.Logger,
                 runlog: RunLog, loaders: dict[str, Any], llf_percent: float | None, dist: Dist | None = None) -> None:
        self.cfg, self.model, self.device, self.log, self.runlog = cfg, model, device, log, runlog
        self.dist = dist if dist is not None else Dist(0, 1, 0, device)
        self.net: torch.nn.Module = model  # what trains: the model, DDP-wrapped on several ranks
        self.loaders = loaders
        self.exp_dir = Path(cfg.exp_dir)
        self.csv_path = self.exp_dir / cfg.csv_name
        self.criterion = passes.make_criterion(cfg.label_smoothing)
        self.summary: dict[str, Any] = {"name": cfg.name, "generations": [], "llf_reset_percent": llf_percent,
                                        "finished": False}
        self.generation, self.epoch = 0, 0
        self.saved: tuple[int, int | str] | None = None  # (generation, epoch or "end") of the last checkpoint
        self.tracking: RunTracking | None = None  # --track

    def run(self, resume_state: dict | None, start_ckpt: dict | None) -> dict[str, Any]:
        cfg, model = self.cfg, self.model
        start_gen, gen_state, optim_state, sched_state = 0, None, None, None
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            set_requires_grad(model, resume_state["requires_grad"])
            set_rng_state(resume_state["rng"])
            self.summary = resume_state["summary"]
            start_gen = resume_state["generation"]
            if resume_state["generation_done"]:
                start_gen += 1
            else:
                gen_state = resume_state["gen_state"]
                optim_state = resume_state["optimizer"]
                sched_state = resume_state.get("val_lr")
            self.saved = (resume_state["generation"], "end" if resume_state["generation_done"]
                          else resume_state["gen_state"]["next_epoch"] - 1)
        elif start_ckpt is not None:  # the original --resume: weights (and optimizer) of a checkpoint
            model.load_state_dict(start_ckpt["state_dict"], strict=False)
            optim_state = start_ckpt.get("optimizer")
            self.log.info("loaded model weights from --resume %s", cfg.resume)
        model.to(self.device)
        if cfg.track:  # on the starting weights (or the checkpoint's, whose trackers carry their own)
            self.tracking = RunTracking(cfg.track, model, self.device, len(self.loaders["train"].dataset), cfg.num_cls,
                                        cfg.num_generations, self.dist)
            if resume_state is not None:
                self.tracking.load_state_dict(resume_state.get("tracking"))
        try:
            for g in range(start_gen, cfg.num_generations):
                self.generation = g
                gen = Generation()
                after_reset = None
                if gen_state is not None:
                    gen.load_state_dict(gen_state)
                    gen_state = None
                else:
                    after_reset = self._begin_generation(g, gen)
                self._train_generation(g, gen, optim_state, sched_state, after_reset)
                optim_state = sched_state = None
                self._end_generation(g, gen)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through run_main
            kept = ("no checkpoint yet: --resume starts the run again" if self.saved is None else
                    f"{self.exp_dir / RESUME_FILE} holds generation {self.saved[0]} "
                    + ("complete" if self.saved[1] == "end" else f"up to epoch {self.saved[1]}"))
            self.log.warning("interrupted in generation %d, epoch %d; %s; continue with --resume", self.generation,
                             self.epoch, kept)
            raise
        return self.summary

    def _begin_generation(self, g: int, gen: Generation) -> dict[str, float] | None:
        """Forget (g >= 1), make the generation's folder; return the optional after-reset test."""
        cfg, model, log = self.cfg, self.model, self.log
        sync_rng(self.dist)  # the reset's draws: the same on every rank
        if g >= 1 and not cfg.no_reset:
            done = forgetting.forget(model, cfg)
            log.info("generation %d: re-initialised %d of %d masked weights (%.3f%%, evolve_mode %s)", g,
                     done.reinitialised, done.masked, 100.0 * done.reinitialised / max(done.masked, 1),
                     cfg.evolve_mode)
            if cfg.reset_bn:
                log.info("generation %d: reset every BatchNorm layer", g)
            if cfg.freeze_non_reset and cfg.reset_layer_name:
                log.info("generation %d: froze %d parameter tensors", g, done.frozen)
        if self.dist.is_main:
            run_dir = new_run_dir(generation_root(self.exp_dir, cfg.log_dir, cfg.exp_name), g, cfg.gpu)
            gen.run_dir = str(run_dir)
            write_settings(run_dir, cfg)
            if cfg.save_model:
                atomic_torch_save({"epoch": 0, "arch": cfg.arch, "state_dict": model.state_dict()},
                                  run_dir / "checkpoints" / "init_model.state")
        after_reset = None
        if cfg.eval_after_reset and g >= 1 and self.loaders["test"] is not None:
            # forked RNG: the extra pass (its loader draws a seed) leaves the run's randomness as without it
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                after_reset = passes.evaluate(model, self.loaders["test"], self.criterion, self.device, self.dist)
            log.info("Test after reset (generation %d): top1 %.2f top5 %.2f", g, after_reset["top1"],
                     after_reset["top5"])
        if cfg.fix_seed:  # every generation sees the same data order and augmentations
            random.seed(cfg.seed)
            torch.manual_seed(cfg.seed)
        for n, p in model.named_parameters():
            log.debug("requires_grad %s %s", n, p.requires_grad)
        if self.tracking is not None:
            self.tracking.start_generation()
        return after_reset

    def _end_generation(self, g: int, gen: Generation) -> None:
        """The CSV row, summary.json, the run's figure and the generation-end checkpoint."""
        cfg = self.cfg
        tst = gen.curr_tst or {}
        row = {"generation": g, "val_top1": gen.curr_val["top1"], "val_top5": gen.curr_val["top5"],
               "best_val_top1": gen.best_val["top1"], "test_top1": tst.get("top1"), "test_top5": tst.get("top5"),
               "best_train_top1": gen.best_trn["top1"], "run_dir": gen.run_dir}
        numbers = {"curr_val_top1": gen.curr_val["top1"], "curr_val_top5": gen.curr_val["top5"],
                   "best_val_top1": gen.best_val["top1"], "best_val_top5": gen.best_val["top5"],
                   "curr_tst_top1": row["test_top1"], "curr_tst_top5": row["test_top5"],
                   "best_tst_top1": gen.best_tst["top1"], "best_tst_top5": gen.best_tst["top5"],
                   "best_trn_top1": gen.best_trn["top1"], "best_trn_top5": gen.best_trn["top5"]}
        if self.dist.is_main:
            append_csv_row(self.csv_path, csv_row(cfg.name, cfg.split_rate, cfg.bias_split_rate, numbers))
        self.log.info("generation %d done: val top1 %.2f, test top1 %s", g, row["val_top1"],
                      "-" if row["test_top1"] is None else f"{row['test_top1']:.2f}")
        last = g == cfg.num_generations - 1
        self.summary = {"name": cfg.name, "generations": [*self.summary["generations"], row],
                        "llf_reset_percent": self.summary["llf_reset_percent"], "finished": last}
        if self.dist.is_main:
            if self.tracking is not None:
                self.tracking.save(self.exp_dir)
            atomic_write_json(self.exp_dir / "summary.json", self.summary)
            plot_run(self.exp_dir, label=cfg.user_name or "run")
        self._checkpoint(g, done=True, finished=last)

    def _checkpoint(self, g: int, *, done: bool, gen: Generation | None = None, optimizer=None, val_lr=None,
                    finished: bool = False) -> None:
        if self.dist.is_main:
            save_resume(self.exp_dir, model=self.model, log=self.log, runlog=self.runlog, csv_path=self.csv_path,
                        generation=g, done=done, summary=self.summary, gen=gen, optimizer=optimizer,
                        val_lr=val_lr, finished=finished,
                        tracking=self.tracking.state_dict() if self.tracking is not None else None)
        barrier(self.dist)  # no rank moves on (and may fail) while rank 0 is still writing it
        self.saved = (g, "end" if done else gen.next_epoch - 1)

    def _train_generation(self, g: int, gen: Generation, optim_state: dict | None, sched_state: dict | None,
                          after_reset: dict[str, float] | None) -> None:
        """Train one generation from ``gen.next_epoch``; one metrics row (and TensorBoard step) per epoch."""
        cfg, model, device = self.cfg, self.model, self.device
        optimizer = build_optimizer(cfg.optimizer, model, lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
        if optim_state is not None:
            try:
                optimizer.load_state_dict(optim_state)
            except ValueError as err:
                raise UserError(f"--resume: the optimizer state does not fit this model/optimizer ({err})") from err
        val_lr = ValDependentLR(cfg.lr) if cfg.lr_policy == "val_dependent_lr" else None
        self._wrap()
        if val_lr is not None and sched_state is not None:
            val_lr.load_state_dict(sched_state)
        E = cfg.epochs
        train_loader, test_loader = self.loaders["train"], self.loaders["test"]
        bar = self.runlog.progress(total=(E - gen.next_epoch) * len(train_loader),
                                   desc=f"generation {g}/{cfg.num_generations - 1}")
        try:
            for epoch in range(gen.next_epoch, E):
                self.epoch = epoch
                lr = val_lr.lr if val_lr is not None else lr_at(
                    cfg.lr_policy, epoch, base=cfg.lr, warmup=cfg.warmup_length, epochs=E, generation=g,
                    num_generations=cfg.num_generations, multistep_adjust=cfg.multistep_lr_adjust,
                    multistep_gamma=cfg.multistep_lr_gamma)
                set_lr(optimizer, lr)

                def log_batch(i, nb, loss, epoch=epoch):
                    self.log.debug("generation %d epoch [%d][%d/%d] loss %.4f", g, epoch, i, nb, loss)

                sync_rng(self.dist)  # the epoch's order: the same global batches on every rank
                trn = passes.train_epoch(self.net, train_loader, self.criterion, optimizer, device, bar=bar,
                                         log_batch=log_batch, cs_kd=cfg.cs_kd, dist=self.dist,
                                         on_step=self.tracking.on_step if self.tracking is not None else None)
                sync_buffers(model, self.dist)  # evaluate and save rank 0's BatchNorm statistics
                # one row per epoch; its step is the global epoch, monotonic across generations.
                # generation and epoch are counters: in metrics.jsonl, not drawn in TensorBoard.
                record: dict[str, Any] = {"generation": g, "epoch": epoch, "train/lr": lr}
                if after_reset is not None and epoch == 0:
                    record.update({f"test/after_reset_{k}": v for k, v in after_reset.items()})
                record.update({f"train/{k}": v for k, v in trn.items()})
                self.log.info("generation %d epoch %d lr %.5f train loss %.4f top1 %.2f top5 %.2f", g, epoch, lr,
                              trn["loss"], trn["top1"], trn["top5"])
                # fixed: the last epoch always validates, so epochs < test_interval no longer crashes
                validated = (epoch + 1) % cfg.test_interval == 0 or epoch == E - 1
                if validated:
                    record.update(self._validate(g, gen, epoch, trn, optimizer, val_lr))
                inter = cfg.eval_intermediate_tst
                if test_loader is not None and ((inter > 0 and (epoch + 1) % inter == 0)
                                                or (inter == 0 and epoch == E - 1)):
                    tst = passes.evaluate(model, test_loader, self.criterion, device, self.dist)
                    gen.curr_tst = tst
                    gen.best_tst["top1"] = max(gen.best_tst["top1"], tst["top1"])
                    gen.best_tst["top5"] = max(gen.best_tst["top5"], tst["top5"])
                    self.log.info("Test: generation %d epoch %d top1 %.2f top5 %.2f loss %.4f", g, epoch,
                                  tst["top1"], tst["top5"], tst["loss"])
                    # the generation this test stands for: the long baseline's intermediate tests
                    # count as the equivalent generations (epochs / --eval_intermediate_tst)
                    record["test/generation"] = (epoch + 1) / inter - 1 if inter > 0 else g
                    record.update({f"test/{k}": v for k, v in tst.items()})
                if self.tracking is not None:
                    record.update(self.tracking.end_epoch(g, epoch, g * E + epoch))
                self.runlog.log(record, step=g * E + epoch)
                gen.next_epoch = epoch + 1
                if validated and epoch < E - 1:
                    self._checkpoint(g, done=False, gen=gen, optimizer=optimizer, val_lr=val_lr)
        finally:
            bar.close()

    def _wrap(self) -> None:
        """DDP around the model, made anew each generation: which tensors train may have changed
        (``--freeze_non_reset``), and DDP reduces the gradients of those it was built with."""
        if not self.dist.enabled:
            return
        old, self.net = self.net, self.model
        if old is not self.model:
            remove = getattr(old, "_remove_autograd_hooks", None)
            if remove is not None:
                remove()
            del old
            gc.collect()  # the old wrapper's gradient hooks must be gone before the next backward pass
        self.net = wrap_model(self.model, self.dist, sync_bn=self.cfg.sync_bn)

    def _validate(self, g: int, gen: Generation, epoch: int, trn: dict[str, float], optimizer,
                  val_lr: ValDependentLR | None) -> dict[str, float]:
        """Validate, update the trackers (and --save_model files); return the eval/ metrics."""
        cfg = self.cfg
        val = passes.evaluate(self.model, self.loaders["val"], self.criterion, self.device, self.dist,
                              on_logits=self.tracking.on_eval_batch if self.tracking is not None else None)
        if self.tracking is not None:
            self.tracking.eval_done()
        gen.curr_val = val
        is_best = val["top1"] > gen.best_val["top1"]
        gen.best_val["top1"] = max(gen.best_val["top1"], val["top1"])
        gen.best_val["top5"] = max(gen.best_val["top5"], val["top5"])
        gen.best_trn["top1"] = max(gen.best_trn["top1"], trn["top1"])
        gen.best_trn["top5"] = max(gen.best_trn["top5"], trn["top5"])
        self.log.info("Val: generation %d epoch %d top1 %.2f top5 %.2f loss %.4f", g, epoch, val["top1"],
                      val["top5"], val["loss"])
        if val_lr is not None:
            val_lr.update(val["top1"])
        if cfg.save_model and self.dist.is_main:
            state = {"epoch": epoch + 1, "arch": cfg.arch, "state_dict": self.model.state_dict(),
                     "best_acc1": gen.best_val["top1"], "best_acc5": gen.best_val["top5"],
                     "best_train_acc1": gen.best_trn["top1"], "best_train_acc5": gen.best_trn["top5"],
                     "optimizer": optimizer.state_dict(), "curr_acc1": gen.curr_val["top1"],
                     "curr_acc5": gen.curr_val["top5"]}
            save_model_files(Path(gen.run_dir), state, epoch=epoch, epochs=cfg.epochs, save_every=cfg.save_every,
                             is_best=is_best)
        return {f"eval/val_{k}": v for k, v in val.items()}
