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
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from forgetting_common import cli
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog
from forgetting_common.seeding import make_numpy_rng, seed_everything, stream_seed

from ease_of_teaching import metrics as MET
from ease_of_teaching import plots
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
    save_h5,
    save_npy,
    set_threads,
    wandb_settings,
)
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
    p.add_argument("--sLearnRate", type=float, default=0.001)
    p.add_argument("--rLearnRate", type=float, default=0.001)
    p.add_argument("--weight_decay", type=float, default=0)
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
    for name in ("sLearnRate", "rLearnRate"):
        if not getattr(args, name) > 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.group_vars:
        check_group_vars(args, args.group_vars)


def resolved_config(args: argparse.Namespace) -> dict:
    cfg = cli.config_dict(args)
    cfg.update(DERIVED)
    cfg["resetIter"] = args.trainIters // args.resetNum if args.resetNum > 0 else None
    return cfg


# --------------------------------------------------------------------------- probe sets
def probe_sets(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The four per-object probe games of ``--track_examples``, as (32, 5, 2) colour/shape ids,
    target first: hard-colour, hard-shape, easy, random (spec B.6)."""
    sets = {k: np.zeros((NUM_OBJECTS, 5, 2), dtype=np.int64) for k in
            ("all_color_hard_examples", "all_shape_hard_examples", "all_easy_examples", "all_random_examples")}
    for obj in range(NUM_OBJECTS):
        c, s = obj // NUM_SHAPES, obj % NUM_SHAPES
        others_c = [k for k in range(NUM_COLORS) if k != c]
        others_s = [k for k in range(NUM_SHAPES) if k != s]
        sets["all_color_hard_examples"][obj] = [[c, s]] + [[c, k] for k in others_s] + [[others_c[0], s]]
        picks = rng.choice(len(others_c), 4, replace=False)
        sets["all_shape_hard_examples"][obj] = [[c, s]] + [[others_c[k], s] for k in picks]
        easy = [(a, b) for a in others_c for b in others_s]
        chosen = rng.choice(len(easy), 4, replace=False)
        sets["all_easy_examples"][obj] = [[c, s]] + [list(easy[k]) for k in chosen]
        rest = [k for k in range(NUM_OBJECTS) if k != obj]
        chosen = rng.choice(len(rest), 4, replace=False)
        sets["all_random_examples"][obj] = [[c, s]] + [[rest[k] // NUM_SHAPES, rest[k] % NUM_SHAPES] for k in chosen]
    return sets


def _ids(pairs: np.ndarray) -> np.ndarray:
    return pairs[..., 0] * NUM_SHAPES + pairs[..., 1]


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
        self.frozen = False

    def say(self, text: str) -> None:
        if not self.args.quiet:
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
        self.say(f"Ease of teaching at generation {generation}: {a.eot_receivers} fresh receivers, "
                 f"mean accuracy over the first 100 iterations {summary.get('mean_acc_first100', float('nan')):.2f}%")

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

    def run(self) -> dict:
        a, team, T, R = self.args, self.team, self.T, self.reset_iter
        probe = None
        if a.track_examples:
            sets = probe_sets(make_numpy_rng(a.seed, "probe"))
            probe = {k: torch.from_numpy(_ids(v)).to(self.device) for k, v in sets.items()}
            self.probe_np = sets
        self.dTopo[0], self.dEntropy[0], _ = self.language()
        self.log.log({"Iter": 0, "Topographic Similarity": self.dTopo[0],
                      "Deterministic Entropy": self.dEntropy[0]}, step=0)
        s_masks = r_masks = None
        if a.same_mask:  # fixed masks from the initial weights, sender first
            if a.forget_sender and a.sender_keep_perc > 0:
                s_masks = self.masks_for(team.sbot, a.sender_keep_perc)
            if a.forget_receiver and a.receiver_keep_perc > 0:
                r_masks = self.masks_for(team.rbot, a.receiver_keep_perc)
        dev = self.device
        sloss = torch.zeros(T, device=dev)
        rloss = torch.zeros(T, device=dev)
        acc = torch.zeros(T, device=dev)
        ent = torch.zeros(T, device=dev)
        bar = self.log.progress(range(T), desc=a.fname, total=T)
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
                              "Training accuracy": round(a_i, 2), "Training accuracy (mean of last 100)": mean100},
                             step=i)
                bar.set_postfix(acc=f"{mean100:.1f}")
            if probe is not None and i % 10 == 0:
                self.track(i, probe, self.language()[0])
            if i != 0 and i % R == 0:
                self.boundary(i, s_masks, r_masks, probe, sloss, rloss, acc)
        bar.close()
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
        a, out = self.args, self.log.dir
        table = MET.language_table(speech.message, speech.prob, a.topk)
        save_npy(out / "langDict.npy", np.array(table, dtype=object), allow_pickle=True)
        self.log.write_json("langDict.json", table)
        from forgetting_common.atomic import atomic_write_text

        atomic_write_text(out / "language.txt", MET.format_language_table(table) + "\n")
        if self.log.tensorboard is not None:
            text = MET.format_language_table(table).replace("\n", "  \n")
            self.log.tensorboard.add_text("language table", text, a.trainIters)
        arrays = {"sloss": sloss, "rloss": rloss, "trainAcc": acc, "entropy": ent}
        arrays = {k: v.cpu().numpy() for k, v in arrays.items()}
        for name, arr in arrays.items():
            save_npy(out / f"{name}.npy", arr)
        save_npy(out / "dTopo.npy", self.dTopo)
        save_npy(out / "dTopoNew.npy", self.dTopoNew)
        save_npy(out / "dEntropy.npy", self.dEntropy)
        iters = [k * self.reset_iter for k in range(a.resetNum)] + [a.trainIters]
        topo = {"Iter": iters, "Topographic Similarity": _nan_list(self.dTopo),
                "New Topographic Similarity": _nan_list(self.dTopoNew),
                "Deterministic Entropy": _nan_list(self.dEntropy)}
        self.log.write_json("topo.json", topo)
        if self.eval_acc:
            save_npy(out / "evalAcc.npy", np.stack(self.eval_acc))
            self.log.write_json("eot.json", {"evaluations": self.eval_meta,
                                             "mean_curves": [c.mean(0).round(3).tolist() for c in self.eval_acc]})
        if self.trackers:
            tr = {k: np.asarray(v) for k, v in self.trackers.items()}
            save_h5(out / f"seed{a.seed}_example_tracker.h5",
                    attrs={"resetIter": self.reset_iter, "trainIters": a.trainIters, "resetNum": a.resetNum},
                    **tr, **self.probe_np)
        if self.weights:
            save_h5(out / f"seed{a.seed}_weight_trajectory.h5", **{k: np.asarray(v) for k, v in self.weights.items()})
        acc_np = arrays["trainAcc"]
        n_last = min(1000, len(acc_np))
        summary = {
            "fname": a.fname, "seed": a.seed, "trainIters": a.trainIters, "resetIter": self.reset_iter,
            "final_train_acc_last1000": float(acc_np[-n_last:].mean()),
            "initial_topo": _nan(self.dTopo[0]), "final_topo": _nan(self.dTopo[-1]),
            "mean_topo_last3_boundaries": _nan(np.nanmean(self.dTopo[-4:-1])) if a.resetNum > 1 else None,
            "ease_of_teaching": self.eval_meta[-1] if self.eval_meta else None,
        }
        self.log.write_json("summary.json", summary)
        plots.plot_run(out, arrays["trainAcc"], iters, self.dTopo, self.dTopoNew, self.reset_iter,
                       self.eval_acc, self.eval_meta, title=a.fname)
        self.say(f"After training for {a.trainIters} iterations: topographic similarity {self.dTopo[-1]:.4f}")
        self.say(MET.format_language_table(table))
        return summary


def _nan(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _nan_list(arr) -> list:
    return [_nan(x) for x in arr]


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
    clear_old_tensorboard(Path(args.out_dir) / args.fname, args.overwrite)
    log = RunLog.create(Path(args.out_dir) / args.fname, cfg, overwrite=args.overwrite, quiet=args.quiet,
                        wandb=wandb_settings(args, "ease_of_teaching_forget"))
    try:
        return Trainer(args, device, log).run()
    finally:
        log.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main() and 0)
