"""``mixed_language_forget_samebatch.py``: targeted forgetting on a half-compositional language.

An imitation sender (the game's sender architecture, greedy free-running decoding, NLL loss,
Adam) learns a fixed batch of the 32 objects: the first 16 (in an order drawn once) must say
their compositional message (colour symbol, shape symbol), the last 16 a permuted message
(the compositional message of another object, a fixed random bijection). After every step a
copy of the sender is forgotten (random or magnitude masks, re-initialised or zeroed) and
evaluated on the same batch; with ``--train_with_reset`` the live sender takes the forgotten
weights every ``--reset_every`` iterations (forget-and-relearn).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common import cli
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog
from forgetting_common.seeding import seed_everything

from ease_of_teaching import plots
from ease_of_teaching.checkpoint import (
    CHECKPOINT,
    FORMAT_MIXED,
    StopRequests,
    progress_bar,
    remove_checkpoint,
    restore_mixed,
    resume_point,
    save_mixed_checkpoint,
)
from ease_of_teaching.game import (
    NUM_OBJECTS,
    Sender,
    attribute_table,
    build_model_masks,
    make_adam,
    partial_forget,
)
from ease_of_teaching.metrics import perfect_language, step_entropies
from ease_of_teaching.outputs import (
    check_group_vars,
    clear_old_tensorboard,
    group_name,
    set_threads,
    wandb_settings,
)

HALF = NUM_OBJECTS // 2
PROG = "mixed_language_forget_samebatch.py"


def build_parser(prog: str = "mixed_language_forget_samebatch.py") -> argparse.ArgumentParser:
    p = cli.OneLineErrorParser(prog=prog, description="Targeted forgetting on a mixed compositional/permuted language")
    p.add_argument("--gpu", type=int, default=0, help="CUDA index used when --device is auto and CUDA is present")
    p.add_argument("--fname", type=str, default="test", help="run group; outputs go to <out_dir>/<fname>/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jupyter", action="store_true", help="accepted, unused")
    p.add_argument("--slambda", type=float, default=0.1, help="accepted, unused here")
    p.add_argument("--rlambda", type=float, default=0.1, help="accepted, unused here")
    p.add_argument("--receiverNum", type=int, default=1, help="accepted, unused")
    p.add_argument("--topk", type=int, default=3, help="accepted, unused here")
    p.add_argument("--evaluateSize", type=int, default=1000, help="accepted, unused")
    p.add_argument("--trainIters", type=cli.positive_int, default=700, help="training iterations")
    p.add_argument("--resetNum", type=cli.positive_int, default=50, help="accepted, unused here")
    p.add_argument("--batchSize", type=int, default=32, help="accepted, unused (the batch is the 32 objects)")
    p.add_argument("--sLearnRate", type=cli.positive_float, default=0.001,
                   help="Adam learning rate of the imitation sender")
    p.add_argument("--rLearnRate", type=float, default=0.001, help="accepted, unused")
    p.add_argument("--same_mask", action="store_true", help="masks fixed once from the initial weights")
    p.add_argument("--weight_mask", action="store_true", help="forget the smallest-magnitude weights (else random)")
    p.add_argument("--reset_to_zero", action="store_true", help="set forgotten weights to 0 (else re-initialise)")
    p.add_argument("--reset_every", type=cli.positive_int, default=1,
                   help="with --train_with_reset: the live sender takes the forgotten copy every n iterations")
    p.add_argument("--train_with_reset", action="store_true", help="make the forgetting real (forget and relearn)")
    p.add_argument("--keep_perc", type=cli.fraction, default=1, help="fraction of each tensor kept")
    p.add_argument("--group_vars", type=str, nargs="+", default="", help="options naming the run (and W&B run)")
    p.add_argument("--no_wandb", action="store_true", help="do not write to wandb")
    p.add_argument("--iter_per_batch", type=int, default=1, help="accepted, unused in this variant")
    cli.add_common_flags(p)
    p.add_argument("--out_dir", default=".", help="folder holding <fname>/ (default: here)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in the same folder")
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in its folder from checkpoint.pt (same flags)")
    p.add_argument("--checkpoint_every", type=cli.non_negative_int, default=100,
                   help="write checkpoint.pt in the run folder every n iterations (0: only on Ctrl-C/SIGTERM); "
                   "removed when the run finishes")
    return p


def validate(args: argparse.Namespace) -> None:
    if args.reset_every != 1 and not args.train_with_reset:
        raise UserError("--reset_every has no effect without --train_with_reset")
    if args.num_threads < 0:
        raise UserError(f"--num_threads must be >= 0, got {args.num_threads}")
    if args.group_vars:
        check_group_vars(args, args.group_vars)


def run_folder(args: argparse.Namespace) -> Path:
    """``<out_dir>/<fname>/<run name>`` with ``--group_vars`` (the original's W&B group/run), else ``<out_dir>/<fname>``."""
    base = Path(args.out_dir) / args.fname
    return base / group_name(args, args.group_vars) if args.group_vars else base


def mixed_targets(perm: torch.Tensor, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object order and target messages: rows 0-15 compositional, rows 16-31 permuted.

    ``perm``: the permuted language says, for object ``o``, the compositional message of ``perm[o]``.
    """
    perfect = perfect_language()
    permuted = perfect[perm.cpu().numpy()]
    messages = np.concatenate([perfect[order[:HALF]], permuted[order[HALF:]]])
    return order, messages


def imitation_forward(sender: Sender, attrs: torch.Tensor, targets: torch.Tensor):
    """Greedy free-running decoding; NLL averaged over all target tokens."""
    speech = sender.speak(attrs, stochastic=False)
    lp = speech.step_log_probs  # (L, B, V)
    loss = F.nll_loss(lp.reshape(-1, lp.shape[-1]), targets.t().reshape(-1))
    return loss, speech.message, lp


def half_metrics(loss, message, log_probs, targets, prefix: str = "") -> dict[str, float]:
    match = (message == targets).all(1).float() * 100.0
    ent = step_entropies(log_probs)  # (L, B)
    out = {
        "Sender loss": float(loss),
        "Exact Match Perfect": float(match[:HALF].mean()),
        "Exact Match Permuted": float(match[HALF:].mean()),
        "Exact Match Overall": float(match.mean()),
        "True 1 Entropy": float(ent[0, :HALF].mean()),
        "True 2 Entropy": float(ent[1, :HALF].mean()),
        "Perm 1 Entropy": float(ent[0, HALF:].mean()),
        "Perm 2 Entropy": float(ent[1, HALF:].mean()),
    }
    return {prefix + k: v for k, v in out.items()}


def run(args: argparse.Namespace, device: torch.device, log: RunLog, state: dict | None = None) -> list[dict]:
    """Train and probe; from the checkpoint ``state`` (everything before it re-drawn from the seed)."""
    seed_everything(args.seed)
    # RNG order of the original: permutation, live sender, clone, [fixed random masks], object order
    perm = torch.randperm(NUM_OBJECTS)
    live = Sender().to(device)
    clone = Sender().to(device)
    opt = make_adam(live.parameters(), args.sLearnRate)
    fixed = build_model_masks(live, args.keep_perc, args.weight_mask) if args.same_mask else None
    order = np.random.choice(NUM_OBJECTS, NUM_OBJECTS, replace=False)
    order, messages = mixed_targets(perm, order)
    attrs = attribute_table(device)[torch.from_numpy(order).to(device)]
    targets = torch.from_numpy(messages).to(device)
    log.write_json("language.json", {"object_order": order.tolist(), "target_messages": messages.tolist(),
                                     "permutation": perm.tolist()})
    start, records = restore_mixed(state, live, opt) if state is not None else (0, [])
    every = args.checkpoint_every
    with StopRequests(PROG) as stop:
        for i in progress_bar(log, range(start, args.trainIters), desc=args.fname, total=args.trainIters,
                              initial=start):
            live.train()
            loss, message, lp = imitation_forward(live, attrs, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                rec = {"Iter": i, **half_metrics(loss.detach(), message, lp, targets)}
                clone.load_state_dict(live.state_dict())
                masks = fixed if fixed is not None else build_model_masks(clone, args.keep_perc, args.weight_mask)
                partial_forget(clone, masks, args.reset_to_zero)
                c_loss, c_msg, c_lp = imitation_forward(clone, attrs, targets)
                rec.update(half_metrics(c_loss, c_msg, c_lp, targets, prefix="Copy "))
            if args.train_with_reset and i % args.reset_every == 0:
                live.load_state_dict(clone.state_dict())  # Adam state kept, as the original
            log.log(rec, step=i)
            records.append(rec)
            if stop.requested or (every and (i + 1) % every == 0 and i + 1 < args.trainIters):
                save_mixed_checkpoint(args, log, i + 1, live, opt, records)
            if stop.requested:
                print(f"{PROG}: checkpoint {log.dir / CHECKPOINT} after iteration {i}; continue with the same "
                      "flags and --resume", file=sys.stderr)
                stop.stop()
    return records


def summarize(records: list[dict], lo: int | None = None) -> dict:
    """Means over the second part of training (default: from 3/7 of the run, iterations 300-699 at 700)."""
    n = len(records)
    lo = (3 * n) // 7 if lo is None else lo
    tail = records[lo:]
    keys = [k for k in records[0] if k != "Iter"]
    out = {f"mean {k} (iters {lo}-{n - 1})": float(np.mean([r[k] for r in tail])) for k in keys}

    def first_full(key):
        return next((r["Iter"] for r in records if r[key] >= 100.0), None)

    out["first iteration Exact Match Perfect = 100"] = first_full("Exact Match Perfect")
    out["first iteration Exact Match Permuted = 100"] = first_full("Exact Match Permuted")
    early = records[: min(n, 300)]
    out["mean (EM Perfect - EM Permuted) over iters 0-299"] = float(
        np.mean([r["Exact Match Perfect"] - r["Exact Match Permuted"] for r in early]))
    out["copy gap (Perfect - Permuted)"] = (out[f"mean Copy Exact Match Perfect (iters {lo}-{n - 1})"]
                                            - out[f"mean Copy Exact Match Permuted (iters {lo}-{n - 1})"])
    return out


def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    validate(args)
    cfg = cli.config_dict(args)
    cfg["resetIter"] = args.trainIters // args.resetNum
    if args.group_vars:
        cfg["run_name"] = group_name(args, args.group_vars)
    if cli.maybe_print_config({**cfg, "print_config": args.print_config}):
        return None
    device = resolve_device(args.device)
    if args.device == "auto" and device.type == "cuda":
        if args.gpu >= torch.cuda.device_count():
            raise UserError(f"--gpu {args.gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device(f"cuda:{args.gpu}")
    set_threads(device, args.num_threads)
    cfg["resolved_device"] = str(device)
    folder = run_folder(args)
    state = saved_config = None
    if args.resume:
        if args.overwrite:
            raise UserError("--resume continues a run and --overwrite replaces it; pass one of them")
        state, saved_config = resume_point(args, folder, PROG, FORMAT_MIXED)
    elif args.overwrite and (folder / "config.json").exists():
        clear_old_tensorboard(folder, args.overwrite)
        remove_checkpoint(folder)  # a later --resume must not pick up the replaced run's state,
        (folder / "summary.json").unlink(missing_ok=True)  # nor take the folder for a finished run
    log = RunLog.create(folder, saved_config or cfg, overwrite=args.overwrite, quiet=args.quiet,
                        wandb=wandb_settings(args, "ease_of_teaching_target"), resume=args.resume,
                        resume_state=state["runlog"] if state is not None else EMPTY_STATE,
                        exists_hint="continue it with --resume, or replace it with --overwrite")
    print(f"{PROG}: writing to {folder}" + (f" (resuming after iteration {state['next_iter'] - 1})"
                                            if state is not None else ""), file=sys.stderr)
    try:
        records = run(args, device, log, state)
        summary = summarize(records)
        log.write_json("summary.json", summary)
        plots.plot_mixed(folder / "copy_accuracy.png", records, title=folder.name)
        remove_checkpoint(folder)
    finally:
        log.close()
    if not args.quiet:
        gap = summary["copy gap (Perfect - Permuted)"]
        print(f"{folder}: mean copy exact match, compositional minus permuted half: {gap:.1f} points")
    return summary


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main() and 0)
