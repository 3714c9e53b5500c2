"""One engine for ``LURE_main.py`` and ``ALMA.py``: the anytime protocol, state by state.

At every state ``k = 1..K`` the learner gets chunk ``k`` (plus replayed data), starts from the
previous state's best-validation model (or, with ``--use_randinit``, from the initial
weights), applies the interventions asked for (SNIP unlearning, later-layer forgetting,
classifier reset, shrink and perturb), trains ``--epochs`` epochs with a per-state multi-step
schedule, keeps the best-validation epoch and reports its test accuracy, its error count
(summed over states: the cumulative error, ``CER``) and its calibration error (ECE).
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
from forgetting_common.atomic import atomic_torch_save, atomic_write_json
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog, wandb_available
from forgetting_common.seeding import Generators, get_rng_state, seed_everything, set_rng_state
from torch import nn

from lure import robustness, unlearn
from lure.cli import parse_milestones, resolved_config
from lure.data import AnytimeData, ReplayPlan, chunk_ids, load_data, replay_mode
from lure.metrics import anytime_relative_errors, calibration_metrics
from lure.models import build_model

STATE_FILE = "anytime_state.pth.tar"
SNIP_BATCH = 100


# --------------------------------------------------------------------------- schedule
def epoch_lr(base: float, epoch: int, milestones: list[int], gamma: float) -> float:
    """The LR of ``epoch`` (0-based) within a state: ``base · gamma^(#milestones <= epoch)``.

    This is what a fresh ``MultiStepLR`` stepped once per epoch gives (a repeated milestone
    counts twice, as in PyTorch).
    """
    return base * gamma ** sum(1 for m in milestones if m <= epoch)


def state_base_lr(k: int, args) -> float:
    """``--lr`` for the first state; every later state restarts at ``--state_lr`` (the original's hard-coded 0.1)."""
    return args.lr if k == 1 else args.state_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: nn.Module, source, ids: torch.Tensor | None, batch_size: int,
            augment=None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of ``ids`` of ``source`` (all of it when ``ids`` is None), in eval mode."""
    model.eval()
    n = len(source) if ids is None else len(ids)
    outs, labels = [], []
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size)) if ids is None else ids[start:start + batch_size]
        x, y = source.fetch(idx)
        if augment is not None:
            x = augment(x, generator)
        outs.append(model(x).float())
        labels.append(y)
    if not outs:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64)
    return torch.cat(outs), torch.cat(labels)


def accuracy_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if len(labels) == 0:
        return 0.0, 0.0
    acc = 100.0 * float((logits.argmax(1) == labels).float().mean())
    return acc, float(F.cross_entropy(logits, labels))


# --------------------------------------------------------------------------- SNIP data
def snip_ids(args, k: int, train_list: list[int]) -> list[int]:
    """The SNIP examples of state ``k``, as the original picks them (see the spec, section 5)."""
    chunk_train, _ = chunk_ids(k, args.meta_batch_size, 0)
    scaled = int(math.floor(args.meta_batch_size * args.snip_size + 1e-9))
    if args.dataset == "cifar100":
        source, n = train_list, scaled
    elif args.snip_no_replay:
        source, n = chunk_train, scaled
    elif args.dataset == "restricted_imagenet":
        source, n = train_list, scaled
    else:  # CIFAR-10 (and MNIST): a hard-coded 128 examples from the start of the state's list
        source, n = train_list, 128
    if args.snip_on_new_chunk:
        source = chunk_train
    if args.snip_examples is not None:
        n = args.snip_examples
    if n > len(source):
        warnings.warn(f"SNIP wants {n} examples but only {len(source)} are available at state {k}; using "
                      f"{len(source)}", stacklevel=2)
        n = len(source)
    return source[:n]


def snip_batches_used(n_examples: int, override: int | None) -> int:
    """The original scores only ceil(#batches / 32) batches of 100 (one batch in every README setting)."""
    total = math.ceil(n_examples / SNIP_BATCH)
    used = override if override is not None else math.ceil(total / 32)
    return max(0, min(total, used))


# --------------------------------------------------------------------------- the run
@dataclass
class RunContext:
    args: object
    device: torch.device
    data: AnytimeData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    gens: Generators
    save_dir: Path
    log: RunLog
    seed: int


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def _check_outputs(args, save_dir: Path) -> None:
    finished = [name for name in ("results.json", STATE_FILE) if (save_dir / name).exists()]
    if finished and not args.resume and not args.overwrite:
        raise UserError(
            f"--save_dir {save_dir} already holds a run ({', '.join(finished)}); pass --resume to continue it, "
            f"--overwrite to replace it, or choose another folder")


def _load(path: Path):
    if not path.is_file():
        raise UserError(f"--resume: {path} is missing; the run folder is incomplete")
    return torch.load(path, map_location="cpu", weights_only=False)


def _log_dir(args, save_dir: Path) -> Path:
    return Path(args.log_dir) / args.run if args.log_dir else save_dir / "wb_offline"


def run_anytime(args) -> dict:
    """Run the whole protocol (or its remainder, with ``--resume``); returns the results dict."""
    device = resolve_device(args.device)
    if device.type == "cuda" and device.index is None and args.gpu:
        device = resolve_device(f"cuda:{args.gpu}")  # the original's --gpu picks the card
    save_dir = Path(args.save_dir)
    _check_outputs(args, save_dir)
    mode = replay_mode(args)
    milestones = parse_milestones(args.decreasing_lr)

    resume_state = None
    if args.resume:
        path = Path(args.checkpoint) if args.checkpoint else save_dir / STATE_FILE
        if not path.is_file():
            raise UserError(f"--resume: no resume file at {path} (no state of this run finished yet?)")
        try:
            resume_state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - a damaged file is the user's to fix
            raise UserError(f"--resume: cannot read {path} ({err})") from err

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    if resume_state is not None:
        seed = resume_state["seed"]
    seed_everything(seed)
    data = load_data(args, device)
    _say(f"data: {data.description}")
    for note in data.notes:
        _say(f"note: {note}")

    model = build_model(args.arch, data.num_classes, in_channels=data.in_channels, imagenet=args.imagenet_arch,
                        mean=data.mean, std=data.std).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    gens = Generators(seed)
    save_dir.mkdir(parents=True, exist_ok=True)
    config = {**resolved_config(args), "seed_used": seed, "data_description": data.description, "replay": mode,
              "script": "ALMA.py" if args.alma else "LURE_main.py"}
    wb = None
    if args.wb:
        if wandb_available():
            wb = {"project": args.project_name, "name": args.run, "dir": str(save_dir)}
        else:
            warnings.warn("-wb: wandb is not installed; metrics go to the offline log only", stacklevel=2)
    log = RunLog.create(_log_dir(args, save_dir), config, resume=args.resume, overwrite=args.overwrite,
                        quiet=args.quiet, wandb=wb)
    ctx = RunContext(args, device, data, model, optimizer, gens, save_dir, log, seed)
    plan = ReplayPlan(mode, args.meta_batch_size, data.val_offset, args.buffer_size_train, args.buffer_size_val,
                      seed=gens.seed)
    results = {"config": config, "states": [], "finished": False}
    first_state = 1
    if resume_state is None:
        randinit = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if not args.alma:
            atomic_torch_save(randinit, save_dir / "randinit.pth.tar")
    else:
        k_done = resume_state["state"]
        randinit = None
        if not args.alma:
            randinit = _load(save_dir / "randinit.pth.tar")
        model.load_state_dict(_load(save_dir / f"{k_done}model_SA_best.pth.tar")["state_dict"])
        optimizer.load_state_dict(_load(save_dir / f"{k_done}checkpoint.pth.tar")["optimizer"])
        set_lr(optimizer, resume_state["lr"])
        plan.load_state_dict(resume_state["plan"])
        gens.load_state_dict(resume_state["generators"])
        set_rng_state(resume_state["rng"])
        results = resume_state["results"]
        results["config"] = config
        first_state = k_done + 1
        _say(f"resuming after state {k_done} of {args.meta_batch_number}")
    try:
        for k in range(first_state, args.meta_batch_number + 1):
            _run_state(ctx, k, plan, milestones, randinit, results)
            # Small on purpose: the weights are in {k}model_SA_best, the optimizer (unchanged since the
            # last epoch) in {k}checkpoint and the initial weights in randinit.pth.tar.
            atomic_torch_save({
                "state": k, "seed": seed, "plan": plan.state_dict(), "generators": gens.state_dict(),
                "rng": get_rng_state(), "results": results, "lr": args.state_lr,
            }, save_dir / STATE_FILE)
        _finish(ctx, results)
    finally:
        log.close()
    return results


def _apply_interventions(ctx: RunContext, k: int, train_list: list[int], info: dict) -> bool:
    """The unlearning step and the baselines, in the original's order; True if anything changed."""
    args, model = ctx.args, ctx.model
    changed = False
    model.eval()  # as in the original: still in eval mode from the end-of-state evaluation (also after --resume)
    if args.use_snip:
        ids = snip_ids(args, k, train_list)
        used = snip_batches_used(len(ids), args.snip_batches)
        ids_t = torch.tensor(ids[: used * SNIP_BATCH], dtype=torch.long)
        gen = ctx.gens["snip"]
        batches = []
        for start in range(0, len(ids_t), SNIP_BATCH):
            x, y = ctx.data.pool.fetch(ids_t[start:start + SNIP_BATCH])
            batches.append((ctx.data.augment(x, gen), y))
        saliency = unlearn.snip_saliency(model, batches, train_mode=args.snip_train_mode)
        masks, threshold = unlearn.snip_mask(saliency, args.snip_size)
        touched = unlearn.reinit_masked(model, masks, generator=ctx.gens["mask"], skip_norm=args.snip_skip_norm)
        atomic_torch_save(unlearn.mask_state_dict(model, masks), ctx.save_dir / f"snip_mask_{k - 1}.pth")
        frac = unlearn.forgotten_fraction(masks)
        reinit_n = sum(int((~masks[n]).sum()) for n in touched)
        info.update(snip_examples=len(ids_t), snip_threshold=threshold, mask_fraction=frac,
                    reinitialised=reinit_n)
        _say(f"SNIP: {len(ids_t)} examples, threshold {threshold:.3e}, {100 * frac:.2f}% of parameters masked, "
             f"{reinit_n} weights re-initialised")
        changed = True
    if args.use_llf:
        names = unlearn.llf_reset(model, generator=ctx.gens["mask"])
        info["llf_reset"] = names
        _say(f"LLF: re-initialised {len(names)} weight tensors")
        changed = True
    if args.use_fc:
        names = unlearn.fc_reset(model, args.fc_layer_name, generator=ctx.gens["mask"])
        info["fc_reset"] = names
        changed = changed or bool(names)
    if args.use_shrink_perturb:
        unlearn.shrink_perturb(model, args.shrink, args.perturb, generator=ctx.gens["mask"])
        _say(f"Shrink & perturb: shrink {args.shrink}, perturb {args.perturb}")
        changed = True
    return changed


def _train_epoch(ctx: RunContext, train_ids: torch.Tensor, epoch: int, lr_of) -> tuple[float, float]:
    args, model, data = ctx.args, ctx.model, ctx.data
    model.train()
    gen = ctx.gens["data"]
    n = len(train_ids)
    order = train_ids[torch.randperm(n, generator=gen)]
    n_iter = math.ceil(n / args.batch_size)
    loss_sum = torch.zeros((), device=ctx.device)
    correct = torch.zeros((), device=ctx.device)
    seen = 0
    for i in range(n_iter):
        idx = order[i * args.batch_size:(i + 1) * args.batch_size]
        if len(idx) == 1 and n > 1:
            continue  # BatchNorm cannot train on one example; the original's loader would have crashed here
        set_lr(ctx.optimizer, lr_of(i, n_iter))
        x, y = data.pool.fetch(idx)
        x = data.augment(x, gen)
        out = model(x)
        loss = F.cross_entropy(out, y)
        ctx.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ctx.optimizer.step()
        loss_sum += loss.detach() * len(idx)
        correct += (out.detach().argmax(1) == y).sum()
        seen += len(idx)
        if (i + 1) % args.print_freq == 0 and not args.quiet:
            _say(f"Epoch: [{epoch}][{i + 1}/{n_iter}]\tLoss {float(loss):.4f}\tAccuracy "
                 f"{100.0 * float((out.argmax(1) == y).float().mean()):.3f}")
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


def _run_state(ctx: RunContext, k: int, plan: ReplayPlan, milestones: list[int], randinit: dict, results: dict) -> None:
    args, model, data = ctx.args, ctx.model, ctx.data
    start_time = time.time()
    train_list, val_list = plan.state(k)
    info: dict = {"state": k, "train_size": len(train_list), "val_size": len(val_list),
                  "train_first": train_list[0], "val_first": val_list[0]}
    _say(f"State {k}/{args.meta_batch_number}: {len(train_list)} train ids (from {train_list[0]}), "
         f"{len(val_list)} val ids (from {val_list[0]})")
    if not args.alma:
        if k >= 2 and args.use_randinit:
            model.load_state_dict(randinit)
        # otherwise the model already holds the best model of state k-1 (or the initial weights)
    if args.reset_optimizer and k >= 2:
        ctx.optimizer.state.clear()
    if k >= 2 and not args.alma:
        before = results["states"][-1]["test_acc"] if results["states"] else None
        if _apply_interventions(ctx, k, train_list, info):
            logits, labels = predict(model, data.test, None, args.batch_size)
            info["test_acc_before_unlearn"] = before
            info["test_acc_after_unlearn"] = accuracy_loss(logits, labels)[0]
            _say(f"Test accuracy before/after the intervention: {before:.2f} / {info['test_acc_after_unlearn']:.2f}")

    if args.save_start_weights:
        atomic_torch_save(_state_dict_copy(model), ctx.save_dir / f"start_{k}.pth.tar")
    train_ids = torch.tensor(train_list, dtype=torch.long)
    val_ids = torch.tensor(val_list, dtype=torch.long)
    base = state_base_lr(k, args)
    best_sa, best_epoch, best_state = -1.0, 0, None
    history = []
    for epoch in ctx.log.progress(range(args.epochs), desc=f"state {k}", leave=False):
        lr_epoch = epoch_lr(base, epoch, milestones, args.gamma)
        if epoch < args.warmup:
            def lr_of(i, n_iter, e=epoch):
                return args.lr * (e * n_iter + i + 1) / (args.warmup * n_iter)
        else:
            def lr_of(i, n_iter, value=lr_epoch):
                return value
        train_acc, train_loss = _train_epoch(ctx, train_ids, epoch, lr_of)
        lr_used = ctx.optimizer.param_groups[0]["lr"]
        augment = None if args.clean_val else data.augment
        v_logits, v_labels = predict(model, data.pool, val_ids, args.batch_size, augment, ctx.gens["val"])
        val_acc, val_loss = accuracy_loss(v_logits, v_labels)
        record = {"state": k, "epoch": epoch, "train_ta": train_acc, "train_loss": train_loss, "val_ta": val_acc,
                  "val_loss": val_loss, "gen_gap": train_acc - val_acc, "lr": lr_used}
        if not args.no_epoch_test:
            t_logits, t_labels = predict(model, data.test, None, args.batch_size)
            record["test_acc"], record["test_loss"] = accuracy_loss(t_logits, t_labels)
        if val_acc > best_sa:
            best_sa, best_epoch = val_acc, epoch
            best_state = _state_dict_copy(model)
        record["best_sa"] = best_sa
        history.append(record)
        checkpoint = {"state": k, "result": history, "epoch": epoch + 1, "state_dict": _state_dict_copy(model),
                      "best_sa": best_sa, "optimizer": ctx.optimizer.state_dict(),
                      "scheduler": {"milestones": milestones, "gamma": args.gamma, "base_lr": base,
                                    "last_epoch": epoch + 1}}
        atomic_torch_save(checkpoint, ctx.save_dir / f"{k}checkpoint.pth.tar")
        if best_epoch == epoch:
            _atomic_copy(ctx.save_dir / f"{k}checkpoint.pth.tar", ctx.save_dir / f"{k}model_SA_best.pth.tar")
        ctx.log.log(record, step=(k - 1) * args.epochs + epoch)
    _say(f"* State = {k} best SA = {best_sa:.3f} Epoch = {best_epoch + 1}")
    model.load_state_dict(best_state)
    logits, labels = predict(model, data.test, None, args.batch_size)
    metrics = calibration_metrics(logits, labels)
    info.update(best_sa=best_sa, best_epoch=best_epoch + 1, test_acc=metrics["acc"], cer=metrics["errors"],
                ece=metrics["ece"], nll=metrics["nll"], brier=metrics["brier"], n_test=len(labels),
                lrs=[r["lr"] for r in history], time=time.time() - start_time)
    _say(f"Correct % {metrics['acc']:.2f}  Total Loss {100 * metrics['nll']:.3f}  misclassified {metrics['errors']}  "
         f"ECE {metrics['ece']:.4f}")
    if results["states"]:
        diff = (metrics["errors"] - results["states"][-1]["cer"]) / max(1, len(labels))
        _say(f"CER diff {diff:.4f}")
    results["states"].append(info)
    ctx.log.log({"Test/test_acc_state": metrics["acc"], "Test/cer_state": metrics["errors"],
                 "Test/ece_state": metrics["ece"], "Test/nll_state": metrics["nll"], "state": k,
                 **({"Test/test_acc_after_unlearn": info["test_acc_after_unlearn"]}
                    if "test_acc_after_unlearn" in info else {})}, step=k * args.epochs - 1)
    set_lr(ctx.optimizer, args.state_lr)
    _write_results(ctx, results)


def _summary(results: dict) -> dict:
    states = results["states"]
    cer = [s["cer"] for s in states]
    n_test = states[-1]["n_test"] if states else 1
    return {
        "final_test_acc": states[-1]["test_acc"] if states else None,
        "final_ece": states[-1]["ece"] if states else None,
        "cer_counts": cer,
        "cer_sum": sum(cer),
        "cumulative_error_rate": sum(cer) / max(1, n_test),
        "anytime_relative_error": anytime_relative_errors(cer, n_test),
        "test_acc_per_state": [s["test_acc"] for s in states],
        "ece_per_state": [s["ece"] for s in states],
        "time_per_state": [s["time"] for s in states],
    }


def _write_results(ctx: RunContext, results: dict) -> None:
    results.update(_summary(results))
    atomic_write_json(ctx.save_dir / "results.json", results)


def _finish(ctx: RunContext, results: dict) -> None:
    summary = _summary(results)
    if ctx.args.corruption_eval and "corruption_acc" not in results:
        table = robustness.corruption_accuracy(ctx.model, ctx.data.test, ctx.args.batch_size, seed=ctx.seed)
        results["corruption_acc"] = table
        results["mean_corruption_acc"] = robustness.mean_corruption_accuracy(table)
        _say(f"Mean corruption accuracy: {results['mean_corruption_acc']:.2f} "
             + " ".join(f"{k}={sum(v) / len(v):.1f}" for k, v in table.items()))
    results["finished"] = True
    _write_results(ctx, results)
    ctx.log.write_json("results.json", results)
    ctx.log.log({"Test/test_acc": summary["final_test_acc"], "Test/CER": summary["cer_sum"],
                 "Test/ECE": summary["final_ece"],
                 "Test/cumulative_error_rate": summary["cumulative_error_rate"]},
                step=ctx.args.meta_batch_number * ctx.args.epochs)
    _say(f"Test Acc = {summary['final_test_acc']:.2f}")
    _say(f"CER = {summary['cer_sum']}")
    _say("Final Test Accuracy: ")
    _say(f"{summary['final_test_acc']:.2f}")
    _say(f"CER list: {summary['cer_counts']}")
    _say(f"Anytime Relative Error: {[round(v, 4) for v in summary['anytime_relative_error']]}")
    _say(f"ECE: {summary['final_ece']:.4f}")
    _say(f"Total time: {sum(summary['time_per_state']):.1f} s, per state {[round(t, 1) for t in summary['time_per_state']]}")
    sys.stdout.flush()
