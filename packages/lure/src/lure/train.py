"""The training loop of ``LURE_main.py`` and ``ALMA.py``: the anytime protocol, state by state.

At every state ``k = 1..K`` the learner gets chunk ``k`` (plus replayed data), starts from the
previous state's best-validation model (or, with ``--use_randinit``, from the initial
weights), applies the interventions asked for (SNIP unlearning, later-layer forgetting,
classifier reset, shrink and perturb), trains ``--epochs`` epochs with a per-state multi-step
schedule, keeps the best-validation epoch and reports its test accuracy, its error count
(summed over states: the cumulative error, ``CER``) and its calibration error (ECE).

It reads one :class:`lure.cli.Config`; TensorBoard tags are namespaced (``train/``, ``test/``,
``eval/`` for validation, ``stats/`` for the LR and the unlearning step) with one step axis,
``(state - 1) * epochs + epoch``, for the whole run.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.device import resolve_device
from forgetting_common.distributed import (
    Dist,
    all_reduce_sum,
    barrier,
    broadcast_object,
    collective_failures,
    init,
    share_weight,
    shutdown,
    sync_buffers,
    wrap_model,
)
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog, SilentRunLog, wandb_available
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import Generators, seed_everything, set_rng_state
from torch import nn

from lure import checkpoint, report, tracking
from lure.checkpoint import StateProgress
from lure.cli import Config, resolved_config
from lure.data import AnytimeData, load_data
from lure.ddp import batch_share, only_main_speaks
from lure.metrics import accuracy_loss, calibration_metrics, predict
from lure.models import build_model
from lure.replay import ReplayPlan, replay_mode
from lure.unlearn import apply_interventions

#: TensorBoard / metrics.jsonl tags of the per-epoch numbers (the checkpoints' history keeps the original's names).
EPOCH_TAGS = {"train_ta": "train/acc", "train_loss": "train/loss", "val_ta": "eval/val_acc", "val_loss": "eval/val_loss",
              "best_sa": "eval/best_val_acc", "gen_gap": "stats/gen_gap", "lr": "stats/lr", "test_acc": "test/acc",
              "test_loss": "test/loss"}


# --------------------------------------------------------------------------- schedule
def epoch_lr(base: float, epoch: int, milestones: list[int], gamma: float) -> float:
    """The LR of ``epoch`` (0-based) within a state: ``base · gamma^(#milestones <= epoch)``.

    This is what a fresh ``MultiStepLR`` stepped once per epoch gives (a repeated milestone
    counts twice, as in PyTorch).
    """
    return base * gamma ** sum(1 for m in milestones if m <= epoch)


def state_base_lr(k: int, cfg: Config) -> float:
    """``--lr`` for the first state; every later state restarts at ``--state_lr`` (the original's hard-coded 0.1)."""
    return cfg.lr if k == 1 else cfg.state_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------- the run
@dataclass
class RunContext:
    cfg: Config
    device: torch.device
    data: AnytimeData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    gens: Generators
    save_dir: Path
    log: RunLog
    seed: int
    plan: ReplayPlan
    randinit: dict | None = None  # the initial weights, where --use_randinit restarts from them
    dist: Dist | None = None  # several ranks under torchrun (None: one process)
    net: nn.Module | None = None  # what trains: the model, DDP-wrapped on several ranks
    tracking: tracking.RunTracking | None = None  # --track: the shared trackers (lure.tracking)

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (one process, or rank 0)."""
        return self.dist is None or self.dist.is_main


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _load_randinit(save_dir: Path) -> dict:
    path = save_dir / "randinit.pth.tar"
    if not path.is_file():
        raise UserError(f"--resume: {path} is missing; the run folder is incomplete")
    return load_checkpoint(path, what="initial weights")


def _log_dir(cfg: Config, save_dir: Path) -> Path:
    return Path(cfg.log_dir) / cfg.run if cfg.log_dir else save_dir / "wb_offline"


def run_anytime(cfg: Config) -> dict:
    """Run the whole protocol (or its remainder, with ``--resume``); returns the results dict.

    Under torchrun every rank runs it, on its share of every batch; rank 0 alone prints and
    writes (see :mod:`lure.ddp`).
    """
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is None and cfg.gpu:
        device = resolve_device(f"cuda:{cfg.gpu}")  # the original's --gpu picks the card
    dist = init(device)
    try:
        with collective_failures(dist), only_main_speaks(dist):  # a rank whose peer died stops with one line
            return _run(cfg, dist)
    finally:
        shutdown()


def _run(cfg: Config, dist: Dist) -> dict:
    save_dir = Path(cfg.save_dir)
    prog = cfg.prog
    _say(f"{prog}: output folder {save_dir} (logs: {_log_dir(cfg, save_dir)})")
    device = dist.device
    if dist.enabled and cfg.sync_bn and cfg.snip_train_mode:
        raise UserError("--snip_train_mode with --sync_bn under torchrun: every rank scores the same SNIP batches, so "
                        "synchronised statistics would count them once per rank; drop one of the two flags")
    checkpoint.check_outputs(cfg, save_dir)
    mode = replay_mode(cfg)
    resume_state = checkpoint.load_resume(cfg, save_dir)

    seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "little")
    seed = broadcast_object(seed, dist)  # an unseeded run draws rank 0's seed on every rank
    if resume_state is not None:
        seed = resume_state["seed"]
    seed_everything(seed)
    data = load_data(cfg.data_spec(), device)
    _say(f"data: {data.description}")
    for note in data.notes:
        _say(f"note: {note}")

    model = build_model(cfg.arch, data.num_classes, in_channels=data.in_channels, imagenet=cfg.imagenet_arch,
                        mean=data.mean, std=data.std).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gens = Generators(seed)
    barrier(dist)  # every rank has checked its input before rank 0 writes anything
    if dist.is_main:
        save_dir.mkdir(parents=True, exist_ok=True)
        if resume_state is None:
            checkpoint.clear_stale(save_dir)
    config = {**resolved_config(cfg), "seed_used": seed, "data_description": data.description, "replay": mode,
              "script": prog}
    wb = None
    if cfg.wb:
        if wandb_available():
            wb = {"project": cfg.project_name, "name": cfg.run, "dir": str(save_dir)}
        else:
            warnings.warn("-wb: wandb is not installed; metrics go to the offline log only", stacklevel=2)
    if dist.is_main:
        log = RunLog.create(_log_dir(cfg, save_dir), config, resume=cfg.resume, overwrite=cfg.overwrite,
                            quiet=cfg.quiet, wandb=wb, resume_state=checkpoint.runlog_resume_state(cfg, resume_state),
                            exists_hint="pass --resume to continue it, --overwrite to replace it, or choose another "
                                        "folder")
    else:
        log = SilentRunLog()
    if dist.enabled:
        _say(f"{dist.world_size} processes (torchrun), each a share of every batch of {cfg.batch_size}"
             + ("; BatchNorm over the global batch (--sync_bn)" if cfg.sync_bn else ""))
    plan = ReplayPlan(mode, cfg.meta_batch_size, data.val_offset, buffer_size_train=cfg.buffer_size_train,
                      buffer_size_val=cfg.buffer_size_val, seed=gens.seed)
    ctx = RunContext(cfg=cfg, device=device, data=data, model=model, optimizer=optimizer, gens=gens,
                     save_dir=save_dir, log=log, seed=seed, plan=plan, dist=dist,
                     tracking=tracking.start(cfg, model, device, resume_state))  # --track, on the starting weights
    results = {"config": config, "states": [], "finished": False}
    first_state, progress = 1, None
    if resume_state is None:
        ctx.randinit = _state_dict_copy(model)
        if not cfg.alma and dist.is_main:
            atomic_torch_save(ctx.randinit, save_dir / "randinit.pth.tar")
    else:
        if not cfg.alma and cfg.use_randinit:
            ctx.randinit = _load_randinit(save_dir)
        checkpoint.restore_model(ctx, resume_state)
        plan.load_state_dict(resume_state["plan"])
        gens.load_state_dict(resume_state["generators"])
        set_rng_state(resume_state["rng"])
        results = resume_state["results"]
        results["config"] = config
        first_state = resume_state["state"]
        if resume_state["phase"] == checkpoint.PHASE_STATE:
            first_state += 1
        else:
            progress = StateProgress.from_state_dict(resume_state["progress"])
        _say(f"resuming {checkpoint.describe(resume_state)} ({cfg.meta_batch_number} states in all)")
    ctx.net = wrap_model(model, dist, sync_bn=cfg.sync_bn)
    try:
        for k in range(first_state, cfg.meta_batch_number + 1):
            _run_state(ctx, k, results, progress)
            progress = None
        report.finish(ctx, results)
        _save(ctx, checkpoint.PHASE_STATE, cfg.meta_batch_number, None, results, finished=True)
    except KeyboardInterrupt:
        if dist.is_main:
            where = save_dir / checkpoint.RESUME_FILE if (save_dir / checkpoint.RESUME_FILE).exists() else None
            print(f"{prog}: stopped; " + (f"the last checkpoint is {where}: continue with --resume" if where
                                         else "no epoch had finished, nothing to resume"), file=sys.stderr, flush=True)
        raise
    finally:
        log.close()
    return results


def _save(ctx: RunContext, phase: str, k: int, progress, results: dict, finished: bool = False) -> None:
    """The resume file, by rank 0; no rank moves on (and may fail) while it is being written."""
    if ctx.writes:
        checkpoint.save(ctx, phase, k, progress, results, finished=finished)
    if ctx.dist is not None:
        barrier(ctx.dist)


def _train_epoch(ctx: RunContext, train_ids: torch.Tensor, epoch: int, lr_of) -> tuple[float, float]:
    """One epoch over ``train_ids``. Several ranks: every rank draws and augments each whole batch
    (the generator's stream stays one process's), trains on its share with its loss weighted by
    the share's size (DDP's average is then the batch's mean gradient); the sums cover all ranks."""
    cfg, data, dist = ctx.cfg, ctx.data, ctx.dist
    model = ctx.net if ctx.net is not None else ctx.model
    model.train()
    gen = ctx.gens["data"]
    n = len(train_ids)
    order = train_ids[torch.randperm(n, generator=gen)]
    n_iter = math.ceil(n / cfg.batch_size)
    loss_sum = torch.zeros((), device=ctx.device)
    correct = torch.zeros((), device=ctx.device)
    seen = 0
    for i in range(n_iter):
        idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        if len(idx) == 1 and n > 1:
            continue  # BatchNorm cannot train on one example; the original's loader would have crashed here
        set_lr(ctx.optimizer, lr_of(i, n_iter))
        x, y = data.pool.fetch(idx)
        x = data.augment(x, gen)
        share = batch_share(len(idx), dist)
        x, y = x[share], y[share]
        try:
            out = model(x)
        except ValueError as err:
            if dist is None or not dist.enabled or "more than 1 value per channel" not in str(err):
                raise
            raise UserError(f"rank {dist.rank}: its share ({len(y)} of a batch of {len(idx)}) is too small for "
                            "BatchNorm to train on; pass --sync_bn (statistics over the whole batch) or start fewer "
                            "processes") from err
        # an empty share (a batch smaller than the world) still joins the gradient reduction
        loss = F.cross_entropy(out, y) if len(y) else out.sum() * 0.0
        ctx.optimizer.zero_grad(set_to_none=True)
        (loss if dist is None or not dist.enabled else loss * share_weight(len(y), len(idx), dist)).backward()
        ctx.optimizer.step()
        tracking.on_batch(ctx, idx[share], out, y, x)
        loss_sum += loss.detach() * len(y)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(y)
        if (i + 1) % cfg.print_freq == 0 and not cfg.quiet:
            _say(f"Epoch: [{epoch}][{i + 1}/{n_iter}]\tLoss {float(loss):.4f}\tAccuracy "
                 f"{100.0 * float((out.argmax(1) == y).float().mean()):.3f}")
    if dist is not None and dist.enabled:
        sums = all_reduce_sum(torch.stack([correct.to(loss_sum.dtype), loss_sum,
                                           torch.tensor(float(seen), device=loss_sum.device)]), dist)
        correct, loss_sum, seen = sums[0], sums[1], int(round(float(sums[2])))
        sync_buffers(ctx.model, dist)  # evaluate, select and save rank 0's BatchNorm statistics
    seen = max(seen, 1)
    return 100.0 * float(correct) / seen, float(loss_sum) / seen


def _atomic_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src`` atomically (a hard link where the file system allows it).

    ``src`` is always replaced by a rename later, never rewritten in place, so sharing the inode
    is safe and saves serialising the same checkpoint twice.
    """
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _state_dict_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _begin_state(ctx: RunContext, k: int, results: dict) -> StateProgress:
    """The state's id lists, start weights and interventions (everything before its first epoch)."""
    cfg, model, data = ctx.cfg, ctx.model, ctx.data
    train_list, val_list = ctx.plan.state(k)
    info: dict = {"state": k, "train_size": len(train_list), "val_size": len(val_list),
                  "train_first": train_list[0], "val_first": val_list[0]}
    _say(f"State {k}/{cfg.meta_batch_number}: {len(train_list)} train ids (from {train_list[0]}), "
         f"{len(val_list)} val ids (from {val_list[0]})")
    if not cfg.alma and k >= 2 and cfg.use_randinit:
        model.load_state_dict(ctx.randinit)
        # otherwise the model already holds the best model of state k-1 (or the initial weights)
    if cfg.reset_optimizer and k >= 2:
        ctx.optimizer.state.clear()
    if k >= 2 and not cfg.alma:
        before = results["states"][-1]["test_acc"] if results["states"] else None
        changed, report = apply_interventions(cfg, k, train_list, model=model, data=data, gens=ctx.gens,
                                              save_dir=ctx.save_dir if ctx.writes else None)
        info.update(report)
        if changed:
            logits, labels = predict(model, data.test, None, cfg.batch_size, dist=ctx.dist)
            info["test_acc_before_unlearn"] = before
            info["test_acc_after_unlearn"] = accuracy_loss(logits, labels)[0]
            _say(f"Test accuracy before/after the intervention: {before:.2f} / {info['test_acc_after_unlearn']:.2f}")
    tracking.state_started(ctx, k, train_list)
    if cfg.save_start_weights and ctx.writes:
        atomic_torch_save(_state_dict_copy(model), ctx.save_dir / f"start_{k}.pth.tar")
    return StateProgress(k, train_list, val_list, info=info, base_lr=state_base_lr(k, cfg))


def _run_state(ctx: RunContext, k: int, results: dict, progress: StateProgress | None = None) -> None:
    """Run state ``k`` from its start, or from ``progress`` (a resumed run)."""
    cfg, model, data = ctx.cfg, ctx.model, ctx.data
    milestones = cfg.milestones
    start_time = time.time()
    if progress is None:
        progress = _begin_state(ctx, k, results)
    p = progress
    train_ids = torch.tensor(p.train_list, dtype=torch.long)
    val_ids = torch.tensor(p.val_list, dtype=torch.long)
    epochs = ctx.log.progress(range(p.epochs_done, cfg.epochs), desc=f"state {k}", leave=False,
                              initial=p.epochs_done, total=cfg.epochs)
    for epoch in epochs:
        lr_epoch = epoch_lr(p.base_lr, epoch, milestones, cfg.gamma)
        if epoch < cfg.warmup:
            def lr_of(i, n_iter, e=epoch):
                return cfg.lr * (e * n_iter + i + 1) / (cfg.warmup * n_iter)
        else:
            def lr_of(i, n_iter, value=lr_epoch):
                return value
        train_acc, train_loss = _train_epoch(ctx, train_ids, epoch, lr_of)
        lr_used = ctx.optimizer.param_groups[0]["lr"]
        augment = None if cfg.clean_val else data.augment
        v_logits, v_labels = predict(model, data.pool, val_ids, cfg.batch_size, augment, ctx.gens["val"], ctx.dist)
        val_acc, val_loss = accuracy_loss(v_logits, v_labels)
        record = {"state": k, "epoch": epoch, "train_ta": train_acc, "train_loss": train_loss, "val_ta": val_acc,
                  "val_loss": val_loss, "gen_gap": train_acc - val_acc, "lr": lr_used}
        if not cfg.no_epoch_test:
            t_logits, t_labels = predict(model, data.test, None, cfg.batch_size, dist=ctx.dist)
            record["test_acc"], record["test_loss"] = accuracy_loss(t_logits, t_labels)
        if val_acc > p.best_sa:
            p.best_sa, p.best_epoch = val_acc, epoch
            p.best_state = _state_dict_copy(model)
        record["best_sa"] = p.best_sa
        p.history.append(record)
        saved = {"state": k, "result": p.history, "epoch": epoch + 1, "state_dict": _state_dict_copy(model),
                 "best_sa": p.best_sa, "optimizer": ctx.optimizer.state_dict(),
                 "scheduler": {"milestones": milestones, "gamma": cfg.gamma, "base_lr": p.base_lr,
                               "last_epoch": epoch + 1}}
        if ctx.writes:
            atomic_torch_save(saved, ctx.save_dir / f"{k}checkpoint.pth.tar")
            if p.best_epoch == epoch:
                _atomic_copy(ctx.save_dir / f"{k}checkpoint.pth.tar", ctx.save_dir / f"{k}model_SA_best.pth.tar")
        ctx.log.log({"state": k, "epoch": epoch, **{EPOCH_TAGS[key]: v for key, v in record.items() if key in EPOCH_TAGS}},
                    step=(k - 1) * cfg.epochs + epoch)
        tracking.end_epoch(ctx, k, epoch, v_logits, v_labels)
        p.epochs_done = epoch + 1
        p.elapsed += time.time() - start_time
        start_time = time.time()
        _save(ctx, checkpoint.PHASE_EPOCH, k, p, results)
    _end_state(ctx, p, results, time.time() - start_time + p.elapsed)
    tracking.state_ended(ctx, k)
    _save(ctx, checkpoint.PHASE_STATE, k, None, results)


def _end_state(ctx: RunContext, p: StateProgress, results: dict, seconds: float) -> None:
    """Select the best epoch, test it, report the state and reset the LR for the next one."""
    cfg, model, data, k, info = ctx.cfg, ctx.model, ctx.data, p.k, p.info
    _say(f"* State = {k} best SA = {p.best_sa:.3f} Epoch = {p.best_epoch + 1}")
    model.load_state_dict(p.best_state)
    logits, labels = predict(model, data.test, None, cfg.batch_size, dist=ctx.dist)
    metrics = calibration_metrics(logits, labels)
    info.update(best_sa=p.best_sa, best_epoch=p.best_epoch + 1, test_acc=metrics["acc"], cer=metrics["errors"],
                ece=metrics["ece"], nll=metrics["nll"], brier=metrics["brier"], n_test=len(labels),
                lrs=[r["lr"] for r in p.history], time=seconds)
    _say(f"Correct % {metrics['acc']:.2f}  Total Loss {100 * metrics['nll']:.3f}  misclassified {metrics['errors']}  "
         f"ECE {metrics['ece']:.4f}")
    if results["states"]:
        diff = (metrics["errors"] - results["states"][-1]["cer"]) / max(1, len(labels))
        _say(f"CER diff {diff:.4f}")
    results["states"].append(info)
    row = {"state": k, "test/state_acc": metrics["acc"], "test/state_errors": metrics["errors"],
           "test/state_ece": metrics["ece"], "test/state_nll": metrics["nll"]}
    if "test_acc_after_unlearn" in info:
        row["test/state_acc_after_unlearn"] = info["test_acc_after_unlearn"]
    if "mask_fraction" in info:
        row["stats/mask_fraction"] = info["mask_fraction"]
    ctx.log.log(row, step=k * cfg.epochs - 1)
    set_lr(ctx.optimizer, cfg.state_lr)
    report.write_results(ctx, results)
