"""``forget_train.py``: the referential game with no reset, receiver resets, or partial
balanced forgetting (PBF), with topographic similarity, the language table and ease of teaching.

Every original flag is accepted with its original meaning (spec B.3). Extension flags, all
keeping the original computation at their defaults: ``--device``, ``--print_config``,
``--quiet``, ``--out_dir`` (the folder that holds ``<fname>/``; default the working directory,
as the original), ``--overwrite``, ``--num_threads``, and the ease-of-teaching schedule
``--eot_every`` / ``--eot_receivers`` / ``--eot_iters`` / ``--no_eot`` (the original had this
evaluation commented out; it never changes the training run, it draws from its own streams).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from forgetting_common import cli
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog
from forgetting_common.seeding import make_numpy_rng, seed_everything, stream_seed

from ease_of_teaching import metrics as MET
from ease_of_teaching.checkpoint import (
    CHECKPOINT,
    StopRequests,
    progress_bar,
    remove_checkpoint,
    restore_trainer,
    resume_point,
    save_checkpoint,
)
from ease_of_teaching.game import (
    NUM_COLORS,
    NUM_OBJECTS,
    NUM_SHAPES,
    GameSampler,
    Team,
    build_model_masks,
    partial_forget,
)
from ease_of_teaching.outputs import (
    check_group_vars,
    clear_old_tensorboard,
    set_threads,
    wandb_settings,
    write_run_outputs,
)
from ease_of_teaching.probes import object_ids, probe_sets
from ease_of_teaching.teaching import summarize_curves, teach_batched

DERIVED = {
    "numColors": NUM_COLORS, "numShapes": NUM_SHAPES, "attrSize": NUM_COLORS + NUM_SHAPES,
    "vocabSize": 8, "messageLen": 2, "distractNum": 5, "deterResetNums": 30, "deterResetIter": 1000,
    "population": False, "hiddenSize": 100,
}


def build_parser(prog: str = "forget_train.py") -> argparse.ArgumentParser:
    p = cli.OneLineErrorParser(prog=prog, description="Referential game settings (forgetting in emergent communication)")
    p.add_argument("--gpu", type=int, default=0, help="CUDA index used when --device is auto and CUDA is present")
    p.add_argument("--fname", type=str, default="test", help="folder name to save results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jupyter", action="store_true", help="accepted, unused (as in the original)")
    p.add_argument("--slambda", type=float, default=0.1, help="speaker entropy regularisation weight")
    p.add_argument("--rlambda", type=float, default=0.1, help="listener entropy regularisation weight")
    p.add_argument("--receiverNum", type=int, default=1, help="accepted, unused (population code disabled)")
    p.add_argument("--topk", type=int, default=3, help="messages per object in the language table")
    p.add_argument("--evaluateSize", type=int, default=1000, help="accepted, unused")
    p.add_argument("--trainIters", type=cli.positive_int, default=300000, help="training iterations")
    p.add_argument("--resetNum", type=int, default=50, help="generations; reset/forget every trainIters//resetNum")
    p.add_argument("--batchSize", type=cli.positive_int, default=100, help="games per iteration")
    p.add_argument("--easy_limit", type=int, default=5, help="max easy distractors per game (active if < 4)")
    p.add_argument("--sLearnRate", type=cli.positive_float, default=0.001)
    p.add_argument("--rLearnRate", type=cli.positive_float, default=0.001)
    p.add_argument("--weight_decay", type=cli.non_negative_float, default=0)
    p.add_argument("--reset_receiver", action="store_true", help="reset the receiver completely every generation")
    p.add_argument("--freeze_receiver", action="store_true", help="freeze the receiver from a generation on")
    p.add_argument("--freeze_after_gen_num", type=int, default=1, help="freeze the receiver after n generations")
    p.add_argument("--forget_sender", action="store_true", help="partial reset of the sender every generation")
    p.add_argument("--forget_receiver", action="store_true", help="partial reset of the receiver every generation")
    p.add_argument("--same_mask", action="store_true", help="masks fixed once from the initial weights")
    p.add_argument("--weight_mask", action="store_true", help="forget the smallest-magnitude weights (else random)")
    p.add_argument("--reset_to_zero", action="store_true", help="set forgotten weights to 0 (else re-initialise)")
    p.add_argument("--sender_keep_perc", type=cli.fraction, default=1, help="fraction of sender weights kept")
    p.add_argument("--receiver_keep_perc", type=cli.fraction, default=1, help="fraction of receiver weights kept")
    p.add_argument("--group_vars", type=str, nargs="+", default="", help="options naming the W&B run")
    p.add_argument("--no_wandb", action="store_true", help="do not write to wandb")
    p.add_argument("--track_examples", action="store_true", help="save the per-example tracker")
    p.add_argument("--save_weights", action="store_true", help="save the weight trajectory")
    # extensions
    cli.add_common_flags(p)
    p.add_argument("--out_dir", default=".", help="folder holding the <fname>/ run folder (default: here)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in <out_dir>/<fname>")
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--eot_every", type=int, default=10,
                   help="ease-of-teaching evaluation every this many generations (0: only at the end)")
    p.add_argument("--eot_receivers", type=cli.positive_int, default=30, help="fresh receivers per evaluation")
    p.add_argument("--eot_iters", type=cli.positive_int, default=1000, help="iterations per fresh receiver")
    p.add_argument("--no_eot", action="store_true", help="skip the ease-of-teaching evaluation")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in <out_dir>/<fname> from its checkpoint.pt (same flags); "
                   "the result equals an uninterrupted run")
    p.add_argument("--checkpoint_every", type=cli.non_negative_int, default=5000,
                   help="write <out_dir>/<fname>/checkpoint.pt every n iterations (0: only at the end of training "
                   "and on Ctrl-C/SIGTERM); it is removed when the run finishes")
    return p


def validate(args: argparse.Namespace) -> None:
    """Reject values and combinations the original would crash on or silently ignore."""
    T, N = args.trainIters, args.resetNum
    if N < 1:
        raise UserError(f"--resetNum must be a positive number of generations, got {N}")
    if N > T:
        raise UserError(f"--resetNum {N} exceeds --trainIters {T}: a generation would last 0 iterations")
    if T % N:
        raise UserError(
            f"--resetNum {N} does not divide --trainIters {T}; generations would have unequal lengths "
            f"(try --resetNum {max(d for d in range(1, N + 1) if T % d == 0)})"
        )
    forgetting = args.forget_sender or args.forget_receiver
    for flag in ("same_mask", "weight_mask", "reset_to_zero"):
        if getattr(args, flag) and not forgetting:
            raise UserError(f"--{flag} has no effect without --forget_sender or --forget_receiver")
    if args.sender_keep_perc != 1 and not args.forget_sender:
        raise UserError("--sender_keep_perc has no effect without --forget_sender")
    if args.receiver_keep_perc != 1 and not args.forget_receiver:
        raise UserError("--receiver_keep_perc has no effect without --forget_receiver")
    if args.reset_receiver and args.forget_receiver:
        raise UserError("--reset_receiver already re-initialises the whole receiver; drop --forget_receiver "
                        "(or use --forget_receiver --receiver_keep_perc 0)")
    if args.freeze_after_gen_num != 1 and not args.freeze_receiver:
        raise UserError("--freeze_after_gen_num has no effect without --freeze_receiver")
    if args.freeze_after_gen_num < 0:
        raise UserError(f"--freeze_after_gen_num must be >= 0, got {args.freeze_after_gen_num}")
    if args.easy_limit < 0:
        raise UserError(f"--easy_limit must be >= 0, got {args.easy_limit}")
    if args.topk < 1:
        raise UserError(f"--topk must be >= 1, got {args.topk}")
    if args.eot_every < 0:
        raise UserError(f"--eot_every must be >= 0, got {args.eot_every}")
    if args.num_threads < 0:
        raise UserError(f"--num_threads must be >= 0, got {args.num_threads}")
    if args.group_vars:
        check_group_vars(args, args.group_vars)


def resolved_config(args: argparse.Namespace) -> dict:
    cfg = cli.config_dict(args)
    cfg.update(DERIVED)
    cfg["resetIter"] = args.trainIters // args.resetNum if args.resetNum > 0 else None
    return cfg


# --------------------------------------------------------------------------- the run
class Trainer:
    def __init__(self, args: argparse.Namespace, device: torch.device, log: RunLog) -> None:
        self.args, self.device, self.log = args, device, log
        self.T, self.reset_iter = args.trainIters, args.trainIters // args.resetNum
        seed_everything(args.seed)
        self.team = Team(device=device, slambda=args.slambda, rlambda=args.rlambda, s_lr=args.sLearnRate,
                         r_lr=args.rLearnRate, weight_decay=args.weight_decay)
        self.sampler = GameSampler(make_numpy_rng(args.seed, "data"), args.easy_limit)
        self.eot_rng = make_numpy_rng(args.seed, "eot")
        n = args.resetNum + 1
        self.dTopo, self.dEntropy = np.full(n, np.nan), np.full(n, np.nan)
        self.dTopoNew = np.full(n, np.nan)
        self.eval_acc: list[np.ndarray] = []
        self.eval_meta: list[dict] = []
        self.trackers: dict[str, list] = {}
        self.weights: dict[str, list] = {}
        self.bar = None

    def say(self, text: str) -> None:
        if self.args.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text)  # above the bar, which a plain print would tear
        else:
            print(text, flush=True)

    def language(self):
        speech = self.team.greedy_language()
        topo = MET.topographic_similarity(speech.message)
        d_entropy = float(-speech.p_log_p.mean())
        return topo, d_entropy, speech

    def masks_for(self, model, keep):
        return build_model_masks(model, keep, self.args.weight_mask)

    def ease_of_teaching(self, generation: int, it: int) -> None:
        a = self.args
        speech = self.team.greedy_language()
        t0 = time.time()
        acc = teach_batched(speech.message, n_receivers=a.eot_receivers, iters=a.eot_iters, batch=a.batchSize,
                            lr=a.rLearnRate, weight_decay=a.weight_decay, rng=self.eot_rng,
                            init_seed=stream_seed(a.seed, f"eot-init-{generation}"), device=self.device,
                            easy_limit=a.easy_limit)
        summary = summarize_curves(acc)
        meta = {"generation": generation, "Iter": it, "seconds": round(time.time() - t0, 2), **summary}
        self.eval_acc.append(acc)
        self.eval_meta.append(meta)
        mean_curve = acc.mean(0)
        tb = self.log.tensorboard
        if tb is not None:
            for j in range(0, a.eot_iters, max(1, a.eot_iters // 100)):
                tb.add_scalar(f"Eval Speed Training accuracy/gen{generation}", float(mean_curve[j]), j + 1)
        self.log.log({"Iter": it, "Eval generation": generation,
                      **{f"Eval Speed {k}": v for k, v in summary.items()}}, step=it)
        first = min(100, a.eot_iters)  # the first 100 iterations, or all of a shorter curve
        self.say(f"Ease of teaching at generation {generation}: {a.eot_receivers} fresh receivers, "
                 f"mean accuracy over the first {first} iterations {float(acc[:, :first].mean()):.2f}%")

    @torch.no_grad()
    def track(self, it: int, probe: dict, topo: float) -> None:
        team = self.team
        for key, name in (("hard_color_tracker", "all_color_hard_examples"),
                          ("hard_shape_tracker", "all_shape_hard_examples"),
                          ("easy_tracker", "all_easy_examples"), ("random_tracker", "all_random_examples")):
            cands = probe[name]
            res = team.play(cands, torch.zeros(NUM_OBJECTS, dtype=torch.long, device=self.device), stochastic=False)
            self.trackers.setdefault(key, []).append(res.rewards.cpu().numpy())
            if key == "hard_color_tracker":
                self.trackers.setdefault("message_tracker", []).append(res.message.cpu().numpy())
        self.trackers.setdefault("topo_tracker", []).append(topo)
        self.trackers.setdefault("time_tracker", []).append(it)

    def forget(self, which: str, keep: float, fixed_masks) -> None:
        model = self.team.sbot if which == "sender" else self.team.rbot
        if keep == 0:
            (self.team.reset_sender if which == "sender" else self.team.reset_receiver)()
            return
        masks = fixed_masks if fixed_masks is not None else self.masks_for(model, keep)
        partial_forget(model, masks, self.args.reset_to_zero)

    def run(self, state: dict | None = None) -> dict:
        """Train (from the checkpoint ``state`` if given), then evaluate and write every output."""
        a, team, T, R = self.args, self.team, self.T, self.reset_iter
        probe = None
        if a.track_examples:
            sets = probe_sets(make_numpy_rng(a.seed, "probe"))
            probe = {k: torch.from_numpy(object_ids(v)).to(self.device) for k, v in sets.items()}
            self.probe_np = sets
        dev = self.device
        traces = {name: torch.zeros(T, device=dev) for name in ("sloss", "rloss", "trainAcc", "entropy")}
        sloss, rloss, acc, ent = traces["sloss"], traces["rloss"], traces["trainAcc"], traces["entropy"]
        if state is not None:
            start, masks = restore_trainer(self, state, traces)
            s_masks, r_masks = masks["sender"], masks["receiver"]
        else:
            start = 0
            self.dTopo[0], self.dEntropy[0], _ = self.language()
            self.log.log({"Iter": 0, "Topographic Similarity": self.dTopo[0],
                          "Deterministic Entropy": self.dEntropy[0]}, step=0)
            s_masks = r_masks = None
            if a.same_mask:  # fixed masks from the initial weights, sender first
                if a.forget_sender and a.sender_keep_perc > 0:
                    s_masks = self.masks_for(team.sbot, a.sender_keep_perc)
                if a.forget_receiver and a.receiver_keep_perc > 0:
                    r_masks = self.masks_for(team.rbot, a.receiver_keep_perc)
        masks = {"sender": s_masks, "receiver": r_masks}
        every = a.checkpoint_every
        self.bar = bar = progress_bar(self.log, range(start, T), desc=a.fname, total=T, initial=start)
        with StopRequests("forget_train.py") as stop:
            for i in bar:
                cands, tpos = self.sampler.sample(a.batchSize)
                cands = torch.from_numpy(cands).to(dev)
                tpos = torch.from_numpy(tpos).to(dev)
                res = team.play(cands, tpos, stochastic=True)
                freeze_now = a.freeze_receiver and i / R >= a.freeze_after_gen_num
                team.update(res, s_step=True, r_step=not freeze_now)
                sloss[i], rloss[i] = res.sloss.detach(), res.rloss.detach()
                acc[i] = res.rewards.mean() * 100.0
                ent[i] = res.entropy.detach()
                if i % 100 == 0:
                    lo = max(0, i - 99)
                    s_i, r_i, a_i = float(sloss[i]), float(rloss[i]), float(acc[i])
                    mean100 = float(acc[lo:i + 1].mean())
                    self.say(f"Iteration {i} Sender loss {round(s_i, 4)} Recever loss {round(r_i, 4)} "
                             f"Training accuracy {round(a_i, 2)}%")
                    self.log.log({"Iter": i, "Sender Loss": round(s_i, 4), "Recever loss": round(r_i, 4),
                                  "Training accuracy": round(a_i, 2),
                                  "Training accuracy (mean of last 100)": mean100}, step=i)
                    bar.set_postfix(acc=f"{mean100:.1f}")
                if probe is not None and i % 10 == 0:
                    self.track(i, probe, self.language()[0])
                if i != 0 and i % R == 0:
                    self.boundary(i, s_masks, r_masks, probe, sloss, rloss, acc)
                if stop.requested or i + 1 == T or (every and (i + 1) % every == 0):
                    save_checkpoint(self, i + 1, traces, masks)
                if stop.requested:
                    print(f"forget_train.py: checkpoint {self.log.dir / CHECKPOINT} after iteration {i}; "
                          "continue with the same flags and --resume", file=sys.stderr)
                    stop.stop()
        bar.close()
        self.bar = None
        T_final = a.resetNum
        self.dTopo[T_final], self.dEntropy[T_final], speech = self.language()
        self.log.log({"Iter": T, "Topographic Similarity": self.dTopo[T_final],
                      "Deterministic Entropy": self.dEntropy[T_final]}, step=T)
        if not a.no_eot:
            self.ease_of_teaching(a.resetNum, T)
        return self.finish(speech, sloss, rloss, acc, ent)

    def boundary(self, i, s_masks, r_masks, probe, sloss, rloss, acc) -> None:
        a, team = self.args, self.team
        ind = i // self.reset_iter
        self.dTopo[ind], self.dEntropy[ind], _ = self.language()
        self.say(f"Periodically Evaluation: generation {ind}: topographic similarity {self.dTopo[ind]:.4f}")
        self.log.log({"Iter": i, "Topographic Similarity": self.dTopo[ind],
                      "Deterministic Entropy": self.dEntropy[ind]}, step=i)
        if a.save_weights:
            w = self.weights
            w.setdefault("sbot_weights_all_time", []).append(
                torch.cat([p.detach().flatten() for p in team.sbot.parameters()]).cpu().numpy())
            w.setdefault("rbot_weights_all_time", []).append(
                torch.cat([p.detach().flatten() for p in team.rbot.parameters()]).cpu().numpy())
            w.setdefault("time_ind", []).append(i)
            w.setdefault("sloss_tracker", []).append(float(sloss[i]))
            w.setdefault("rloss_tracker", []).append(float(rloss[i]))
            w.setdefault("acc_tracker", []).append(float(acc[i]))
            w.setdefault("topo_tracker", []).append(self.dTopo[ind])
        if not a.no_eot and a.eot_every and ind % a.eot_every == 0:
            self.ease_of_teaching(ind, i)  # before the intervention, as Li & Bowling
        changed = False
        if a.reset_receiver:
            team.reset_receiver()
            changed = True
        if a.forget_sender:
            self.forget("sender", a.sender_keep_perc, s_masks)
            changed = True
        if a.forget_receiver:
            self.forget("receiver", a.receiver_keep_perc, r_masks)
            changed = True
        if a.freeze_receiver and i / self.reset_iter >= a.freeze_after_gen_num:
            team.freeze_receiver()
        new_topo = self.language()[0]
        self.dTopoNew[ind] = new_topo
        if changed:
            self.log.log({"Iter": i, "New Topographic Similarity": new_topo}, step=i)
        if probe is not None:
            self.track(i, probe, new_topo)

    def finish(self, speech, sloss, rloss, acc, ent) -> dict:
        summary, table = write_run_outputs(self, speech, {"sloss": sloss, "rloss": rloss, "trainAcc": acc,
                                                          "entropy": ent})
        self.say(f"After training for {self.args.trainIters} iterations: topographic similarity {self.dTopo[-1]:.4f}")
        self.say(MET.format_language_table(table))
        return summary


def main(argv: list[str] | None = None) -> dict | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(args)
    if cli.maybe_print_config({**resolved_config(args), "print_config": args.print_config}):
        return None
    device = resolve_device(args.device)
    if args.device == "auto" and device.type == "cuda":
        if args.gpu >= torch.cuda.device_count():
            raise UserError(f"--gpu {args.gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device(f"cuda:{args.gpu}")
    set_threads(device, args.num_threads)
    cfg = resolved_config(args)
    cfg["resolved_device"] = str(device)
    folder = Path(args.out_dir) / args.fname
    state = saved_config = None
    if args.resume:
        if args.overwrite:
            raise UserError("--resume continues a run and --overwrite replaces it; pass one of them")
        state, saved_config = resume_point(args, folder, "forget_train.py")
    elif args.overwrite and (folder / "config.json").exists():
        clear_old_tensorboard(folder, args.overwrite)
        remove_checkpoint(folder)  # a later --resume must not pick up the replaced run's state,
        (folder / "summary.json").unlink(missing_ok=True)  # nor take the folder for a finished run
    log = RunLog.create(folder, saved_config or cfg, overwrite=args.overwrite, quiet=args.quiet,
                        wandb=wandb_settings(args, "ease_of_teaching_forget"), resume=args.resume,
                        resume_state=state["runlog"] if state is not None else EMPTY_STATE,
                        exists_hint="continue it with --resume, or replace it with --overwrite")
    print(f"forget_train.py: writing to {folder}" + (f" (resuming after iteration {state['next_iter'] - 1})"
                                                     if state is not None else ""), file=sys.stderr)
    try:
        summary = Trainer(args, device, log).run(state)
        remove_checkpoint(folder)
        return summary
    finally:
        log.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main() and 0)
