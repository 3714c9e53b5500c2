"""The generation loop of ``train_KE_cls.py``: build, (forget, freeze,) train, record; repeat."""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import torch
from forgetting_common.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from forgetting_common.cli import config_dict
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, wandb_available
from forgetting_common.seeding import seed_everything, set_rng_state

from llf_ke import engine, forgetting
from llf_ke.checkpoint import (
    RESUME_FILE,
    Generation,
    find_resume,
    generation_root,
    load_pretrained_state,
    rewind_outputs,
    save_resume,
    set_requires_grad,
)
from llf_ke.data import load_splits, make_loader
from llf_ke.layers import split_modules
from llf_ke.models import RESNETS, Builder, build_model
from llf_ke.outputs import append_csv_row, close_logger, csv_row, setup_logger
from llf_ke.schedule import ValDependentLR, lr_at


def _device(args: argparse.Namespace) -> torch.device:
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None and args.gpu:
        device = resolve_device(f"cuda:{args.gpu}")
    return device


def _builder(args: argparse.Namespace) -> Builder:
    return Builder(conv_type=args.conv_type, linear_type=args.linear_type, bn_type=args.bn_type,
                   split_mode=args.split_mode, split_rate=args.split_rate, init=args.init,
                   mode=args.mode, nonlinearity=args.nonlinearity)


def _pretrained_state(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """The ``--pretrained`` tensors, read before anything is written (a bad file stops the run first)."""
    if args.pretrained == "imagenet":
        if args.arch not in RESNETS:
            raise UserError(f"--pretrained imagenet: only the ResNets have ImageNet weights here, not {args.arch}")
        import torchvision

        tv_name = {"Split_ResNet18": "resnet18", "Split_ResNet18Norm": "resnet18", "Split_ResNet34": "resnet34",
                   "Split_ResNet50": "resnet50", "Split_ResNet50Norm": "resnet50", "Split_ResNet101": "resnet101"}[args.arch]
        try:
            state = getattr(torchvision.models, tv_name)(weights="DEFAULT").state_dict()
        except Exception as err:  # noqa: BLE001 - a download failure of any kind
            raise UserError(f"--pretrained imagenet: could not get torchvision's {tv_name} weights ({err})") from err
        return state
    return load_pretrained_state(args.pretrained)


def _load_pretrained(model: torch.nn.Module, state: dict[str, torch.Tensor], args: argparse.Namespace) -> str:
    """Load the tensors whose name and shape match; return the line for the log."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return f"loaded {len(usable)} of {len(own)} tensors from --pretrained {args.pretrained}"


def _finished_summary(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("finished"))
    except (OSError, ValueError, AttributeError):
        return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every generation of one experiment; return a summary (also written to summary.json)."""
    device = _device(args)
    if not args.no_wandb and not wandb_available():
        raise UserError("W&B logging is on but wandb is not installed; pass --no_wandb (or install wandb)")
    exp_dir = Path(args.exp_dir)
    resume_state, start_ckpt = find_resume(args, exp_dir)
    if resume_state is not None and resume_state.get("finished"):
        raise UserError(f"{exp_dir} holds a finished run; nothing to resume (choose another --name)")
    restart = bool(args.resume) and resume_state is None and start_ckpt is None  # nothing saved yet
    if restart and _finished_summary(exp_dir / "summary.json"):
        raise UserError(f"{exp_dir} holds a finished run (without its checkpoint); nothing to resume "
                        "(choose another --name)")
    if resume_state is None and (exp_dir / "config.json").exists() and not restart:
        raise UserError(f"{exp_dir} already holds a run; pass --resume to continue it, or choose another "
                        "--name or --checkpoints_dir (finished results are never overwritten)")

    if args.fix_seed:
        seed_everything(args.seed)
    elif args.init_seed is not None:
        seed_everything(args.init_seed)
    else:
        torch.backends.cudnn.benchmark = True

    # Data first: a bad dataset stops the run before any folder is written.
    splits = load_splits(args.data, args.set, args.num_cls, args.image_size, flip=not args.no_flip)
    if args.set == "Folder":
        args.num_cls = splits.num_classes
    pin = device.type == "cuda"
    train_loader = make_loader(splits.train, args.batch_size, train=True, workers=args.num_threads, pin=pin,
                               pairs=args.cs_kd)
    val_loader = make_loader(splits.val, args.batch_size, train=False, workers=args.num_threads, pin=pin)
    test_loader = (make_loader(splits.test, args.batch_size, train=False, workers=args.num_threads, pin=pin)
                   if splits.test is not None and args.eval_tst else None)

    model = build_model(args.arch, args.num_cls, _builder(args))
    resuming = resume_state is not None
    pretrained_note = None
    if args.pretrained and not resuming:
        # as the original: load, split-reinitialise with the masks the layers were built with,
        # and only then (generation 0) let --reset_layer_name rewrite the masks
        pretrained_note = _load_pretrained(model, _pretrained_state(args), args)
        if not args.no_reset:
            forgetting.split_reinitialize(model, evolve_mode=args.evolve_mode, split_rate=args.split_rate,
                                          reset_hypothesis=args.reset_hypothesis)
    llf_percent = None
    if args.reset_layer_name and not args.no_reset:
        llf_percent = forgetting.apply_llf_masks(model, args.reset_layer_name, args.reverse_reset)

    exp_dir.mkdir(parents=True, exist_ok=True)
    if resuming or restart:
        rewind_outputs(args, exp_dir, resume_state)
    log = setup_logger(exp_dir / args.log_file, append=resuming)
    if args.quiet:
        for h in log.handlers:
            if not isinstance(h, logging.FileHandler):
                h.setLevel(logging.WARNING)
    config = config_dict(args)
    runlog = RunLog.create(exp_dir, config, resume=resuming or restart, tensorboard=True, quiet=args.quiet,
                           resume_state=resume_state["runlog"] if resuming else EMPTY_STATE if restart else None,
                           wandb=None if args.no_wandb else {"project": "fortuitous_forgetting", "group": "llf_ke",
                                                              "name": args.exp_name})
    try:
        if resuming:  # the header is already in the (cut back) log file
            where = (f"generation {resume_state['generation'] + 1}, epoch 0" if resume_state["generation_done"]
                     else f"generation {resume_state['generation']}, epoch {resume_state['gen_state']['next_epoch']}")
            log.info("output folder %s: resuming from %s at %s", exp_dir, RESUME_FILE, where)
        else:
            log.info("output folder %s: %s", exp_dir, "restarting (no checkpoint to resume)" if restart else "new run")
            log.info("config: %s", json.dumps(config, sort_keys=True))
            log.info("device %s; %d train / %d val / %s test images, %d classes", device, len(splits.train),
                     len(splits.val), len(splits.test) if test_loader is not None else "no", args.num_cls)
            n_params = sum(p.numel() for p in model.parameters())
            log.info("parameters (Split-Mask included): %d", n_params)
            if llf_percent is not None:
                log.info("RESETTING ENTIRE LAYERS from %r%s", args.reset_layer_name, " (reverse)" if args.reverse_reset else "")
                log.info("resetting %.3f percent of parameters", llf_percent)
            if pretrained_note is not None:
                log.info("%s", pretrained_note)
        return _generations(args, model, device, exp_dir, log, runlog, train_loader, val_loader, test_loader,
                            resume_state, start_ckpt, llf_percent)
    finally:
        runlog.close()
        close_logger()


class _Progress:
    """Where the run stands, for the message on Ctrl-C / SIGTERM."""

    def __init__(self) -> None:
        self.generation, self.epoch, self.saved = 0, 0, None


def _generations(args, model, device, exp_dir, log, runlog, train_loader, val_loader, test_loader,
                 resume_state, start_ckpt, llf_percent) -> dict[str, Any]:
    start_gen, gen_state, optim_state, sched_state = 0, None, None, None
    summary: dict[str, Any] = {"name": args.name, "generations": [], "llf_reset_percent": llf_percent,
                               "finished": False}
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        set_requires_grad(model, resume_state["requires_grad"])
        set_rng_state(resume_state["rng"])
        summary = resume_state["summary"]
        start_gen = resume_state["generation"]
        if resume_state["generation_done"]:
            start_gen += 1
        else:
            gen_state = resume_state["gen_state"]
            optim_state = resume_state["optimizer"]
            sched_state = resume_state.get("val_lr")
    elif start_ckpt is not None:  # the original --resume: weights (and optimizer) of a checkpoint
        model.load_state_dict(start_ckpt["state_dict"], strict=False)
        optim_state = start_ckpt.get("optimizer")
        log.info("loaded model weights from --resume %s", args.resume)
    model.to(device)
    where = _Progress()
    if resume_state is not None:
        where.saved = (resume_state["generation"], "end" if resume_state["generation_done"]
                       else resume_state["gen_state"]["next_epoch"] - 1)
    csv_path = exp_dir / f"{args.exp_name}.csv"
    save = dict(model=model, log=log, runlog=runlog, csv_path=csv_path)
    try:
        for g in range(start_gen, args.num_generations):
            where.generation = g
            gen = Generation()
            after_reset = None
            if gen_state is not None:
                gen.load_state_dict(gen_state)
                gen_state = None
            else:
                if g >= 1 and not args.no_reset:
                    _forget(args, model, log, g)
                gen.run_dir = str(_new_run_dir(args, exp_dir, g))
                run_dir = Path(gen.run_dir)
                atomic_write_text(run_dir / "settings.txt", str(argparse.Namespace(**vars(args))) + "\n")
                if args.save_model:
                    atomic_torch_save({"epoch": 0, "arch": args.arch, "state_dict": model.state_dict()},
                                      run_dir / "checkpoints" / "init_model.state")
                if args.eval_after_reset and g >= 1 and test_loader is not None:
                    # forked RNG: the extra pass (its loader draws a seed) leaves the run's randomness as without it
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        after_reset = engine.evaluate(model, test_loader, engine.make_criterion(args.label_smoothing),
                                                      device)
                    log.info("Test after reset (generation %d): top1 %.2f top5 %.2f", g, after_reset["top1"],
                             after_reset["top5"])
                if args.fix_seed:  # every generation sees the same data order and augmentations
                    random.seed(args.seed)
                    torch.manual_seed(args.seed)
                for n, p in model.named_parameters():
                    log.debug("requires_grad %s %s", n, p.requires_grad)
            _train_generation(args, model, device, log, runlog, g, gen, train_loader, val_loader, test_loader,
                              optim_state, sched_state, summary, save, where, after_reset)
            optim_state = sched_state = None
            row = {"generation": g, "val_top1": gen.curr_val["top1"], "val_top5": gen.curr_val["top5"],
                   "best_val_top1": gen.best_val["top1"],
                   "test_top1": gen.curr_tst["top1"] if gen.curr_tst else None,
                   "test_top5": gen.curr_tst["top5"] if gen.curr_tst else None,
                   "best_train_top1": gen.best_trn["top1"], "run_dir": gen.run_dir}
            numbers = {"curr_val_top1": gen.curr_val["top1"], "curr_val_top5": gen.curr_val["top5"],
                       "best_val_top1": gen.best_val["top1"], "best_val_top5": gen.best_val["top5"],
                       "curr_tst_top1": row["test_top1"], "curr_tst_top5": row["test_top5"],
                       "best_tst_top1": gen.best_tst["top1"], "best_tst_top5": gen.best_tst["top5"],
                       "best_trn_top1": gen.best_trn["top1"], "best_trn_top5": gen.best_trn["top5"]}
            append_csv_row(csv_path, csv_row(args.name, args.split_rate, args.bias_split_rate, numbers))
            log.info("generation %d done: val top1 %.2f, test top1 %s", g, row["val_top1"],
                     "-" if row["test_top1"] is None else f"{row['test_top1']:.2f}")
            last = g == args.num_generations - 1
            summary = {"name": args.name, "generations": [*summary["generations"], row],
                       "llf_reset_percent": llf_percent, "finished": last}
            atomic_write_json(exp_dir / "summary.json", summary)
            save_resume(exp_dir, generation=g, done=True, summary=summary, finished=last, **save)
            where.saved = (g, "end")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through run_main
        kept = ("no checkpoint yet: --resume starts the run again" if where.saved is None else
                f"{exp_dir / RESUME_FILE} holds generation {where.saved[0]} "
                + ("complete" if where.saved[1] == "end" else f"up to epoch {where.saved[1]}"))
        log.warning("interrupted in generation %d, epoch %d; %s; continue with --resume", where.generation,
                    where.epoch, kept)
        raise
    return summary


def _forget(args, model, log, g: int) -> None:
    generator = None
    if args.fix_seed:  # the same reset values in every generation, on any device
        generator = torch.Generator().manual_seed(args.seed)
    forgetting.split_reinitialize(model, evolve_mode=args.evolve_mode, split_rate=args.split_rate,
                                  reset_hypothesis=args.reset_hypothesis, generator=generator)
    zeros = sum(int((m.mask == 0).sum()) for _, m in split_modules(model))
    total = sum(m.mask.numel() for _, m in split_modules(model))
    log.info("generation %d: re-initialised %d of %d masked weights (%.3f%%, evolve_mode %s)", g, zeros, total,
             100.0 * zeros / max(total, 1), args.evolve_mode)
    if args.reset_bn:
        forgetting.reset_batchnorm(model)
        log.info("generation %d: reset every BatchNorm layer", g)
    if args.freeze_non_reset and args.reset_layer_name:
        frozen = forgetting.freeze(model, args.reset_layer_name, args.reverse_freeze)
        log.info("generation %d: froze %d parameter tensors", g, len([n for n in frozen if "mask" not in n]))
    model.zero_grad(set_to_none=True)


def _new_run_dir(args, exp_dir: Path, g: int) -> Path:
    base = generation_root(args, exp_dir) / f"gen_{g}" / str(random.randint(0, 1000000))
    base.mkdir(parents=True, exist_ok=True)
    index = 0
    while (base / f"{index:04d}_g{args.gpu}").exists():
        index += 1
    path = base / f"{index:04d}_g{args.gpu}"
    path.mkdir()
    return path


def _train_generation(args, model, device, log, runlog, g, gen: Generation, train_loader, val_loader,
                      test_loader, optim_state, sched_state, summary, save, where, after_reset) -> None:
    """Train one generation from ``gen.next_epoch``; one metrics row (and TensorBoard step) per epoch."""
    optimizer = engine.build_optimizer(args.optimizer, model, lr=args.lr, momentum=args.momentum,
                                       weight_decay=args.weight_decay)
    if optim_state is not None:
        try:
            optimizer.load_state_dict(optim_state)
        except ValueError as err:
            raise UserError(f"--resume: the optimizer state does not fit this model/optimizer ({err})") from err
    criterion = engine.make_criterion(args.label_smoothing)
    val_lr = ValDependentLR(args.lr) if args.lr_policy == "val_dependent_lr" else None
    if val_lr is not None and sched_state is not None:
        val_lr.load_state_dict(sched_state)
    run_dir = Path(gen.run_dir)
    E = args.epochs
    bar = runlog.progress(total=(E - gen.next_epoch) * len(train_loader), desc=f"generation {g}/{args.num_generations - 1}")
    try:
        for epoch in range(gen.next_epoch, E):
            where.epoch = epoch
            lr = val_lr.lr if val_lr is not None else lr_at(
                args.lr_policy, epoch, base=args.lr, warmup=args.warmup_length, epochs=E, generation=g,
                num_generations=args.num_generations, multistep_adjust=args.multistep_lr_adjust,
                multistep_gamma=args.multistep_lr_gamma)
            engine.set_lr(optimizer, lr)

            def log_batch(i, nb, loss, epoch=epoch):
                log.debug("generation %d epoch [%d][%d/%d] loss %.4f", g, epoch, i, nb, loss)

            trn = engine.train_epoch(model, train_loader, criterion, optimizer, device, bar=bar, log_batch=log_batch,
                                     cs_kd=args.cs_kd)
            global_epoch = g * E + epoch
            # one row per epoch, keyed by split: its step is the global epoch, monotonic across generations
            record: dict[str, Any] = {"generation": g, "epoch": epoch, "global_epoch": global_epoch, "lr": lr}
            if after_reset is not None and epoch == 0:
                record.update({f"test_after_reset/{k}": v for k, v in after_reset.items()})
            record.update({f"train/{k}": v for k, v in trn.items()})
            log.info("generation %d epoch %d lr %.5f train loss %.4f top1 %.2f top5 %.2f", g, epoch, lr,
                     trn["loss"], trn["top1"], trn["top5"])
            # fixed: the last epoch always validates, so epochs < test_interval no longer crashes
            validated = (epoch + 1) % args.test_interval == 0 or epoch == E - 1
            if validated:
                val = engine.evaluate(model, val_loader, criterion, device)
                gen.curr_val = val
                is_best = val["top1"] > gen.best_val["top1"]
                gen.best_val["top1"] = max(gen.best_val["top1"], val["top1"])
                gen.best_val["top5"] = max(gen.best_val["top5"], val["top5"])
                gen.best_trn["top1"] = max(gen.best_trn["top1"], trn["top1"])
                gen.best_trn["top5"] = max(gen.best_trn["top5"], trn["top5"])
                log.info("Val: generation %d epoch %d top1 %.2f top5 %.2f loss %.4f", g, epoch, val["top1"],
                         val["top5"], val["loss"])
                record.update({f"val/{k}": v for k, v in val.items()})
                if val_lr is not None:
                    val_lr.update(val["top1"])
                if args.save_model:
                    _save_model_files(args, model, optimizer, gen, epoch, is_best, run_dir)
            inter = args.eval_intermediate_tst
            if test_loader is not None and ((inter > 0 and (epoch + 1) % inter == 0) or (inter == 0 and epoch == E - 1)):
                tst = engine.evaluate(model, test_loader, criterion, device)
                gen.curr_tst = tst
                gen.best_tst["top1"] = max(gen.best_tst["top1"], tst["top1"])
                gen.best_tst["top5"] = max(gen.best_tst["top5"], tst["top5"])
                log.info("Test: generation %d epoch %d top1 %.2f top5 %.2f loss %.4f", g, epoch, tst["top1"],
                         tst["top5"], tst["loss"])
                if inter > 0:
                    record["equivalent_generation"] = (epoch + 1) / inter - 1
                record.update({f"test/{k}": v for k, v in tst.items()})
            runlog.log(record, step=global_epoch)
            gen.next_epoch = epoch + 1
            if validated and epoch < E - 1:
                save_resume(Path(args.exp_dir), generation=g, done=False, summary=summary, gen=gen,
                            optimizer=optimizer, val_lr=val_lr, **save)
                where.saved = (g, epoch)
    finally:
        bar.close()


def _save_model_files(args, model, optimizer, gen: Generation, epoch: int, is_best: bool, run_dir: Path) -> None:
    state = {"epoch": epoch + 1, "arch": args.arch, "state_dict": model.state_dict(),
             "best_acc1": gen.best_val["top1"], "best_acc5": gen.best_val["top5"],
             "best_train_acc1": gen.best_trn["top1"], "best_train_acc5": gen.best_trn["top5"],
             "optimizer": optimizer.state_dict(), "curr_acc1": gen.curr_val["top1"],
             "curr_acc5": gen.curr_val["top5"]}
    ckpt = run_dir / "checkpoints"
    written = None
    if epoch == args.epochs - 1 or (args.save_every > 0 and (epoch + 1) % args.save_every == 0):
        written = atomic_torch_save(state, ckpt / f"epoch_{epoch}.state")
    if is_best:
        if written is not None:  # the same bytes: link instead of serialising twice
            tmp = ckpt / ".model_best.pth.link"
            tmp.unlink(missing_ok=True)
            os.link(written, tmp)
            os.replace(tmp, ckpt / "model_best.pth")
        else:
            atomic_torch_save(state, ckpt / "model_best.pth")
