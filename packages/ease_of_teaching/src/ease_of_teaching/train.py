"""``forget_train.py``'s training loop: the referential game with no reset, receiver resets, or
partial balanced forgetting (PBF), with topographic similarity, the language table and ease of
teaching. The flags and their checks are in :mod:`ease_of_teaching.cli`; the ease-of-teaching
evaluation (the original had it commented out) never changes the training run, it draws from
its own streams.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from forgetting_common.cli import maybe_print_config
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog
from forgetting_common.seeding import make_numpy_rng, seed_everything, stream_seed
from forgetting_common.stopping import DeferredStop

from ease_of_teaching import metrics as MET
from ease_of_teaching.checkpoint import (
    CHECKPOINT,
    remove_checkpoint,
    restore_trainer,
    save_checkpoint,
)
from ease_of_teaching.cli import Config, parse_config
from ease_of_teaching.game import (
    NUM_OBJECTS,
    GameSampler,
    Team,
    build_model_masks,
    partial_forget,
)
from ease_of_teaching.outputs import (
    open_run,
    set_threads,
    write_run_outputs,
)
from ease_of_teaching.probes import object_ids, probe_sets
from ease_of_teaching.teaching import summarize_curves, teach_batched


# --------------------------------------------------------------------------- the run
class Trainer:
    def __init__(self, cfg: Config, device: torch.device, log: RunLog) -> None:
        self.config, self.device, self.log = cfg, device, log
        self.T, self.reset_iter = cfg.trainIters, cfg.reset_iter
        seed_everything(cfg.seed)
        self.team = Team(device=device, slambda=cfg.slambda, rlambda=cfg.rlambda, s_lr=cfg.sLearnRate,
                         r_lr=cfg.rLearnRate, weight_decay=cfg.weight_decay)
        self.sampler = GameSampler(make_numpy_rng(cfg.seed, "data"), cfg.easy_limit)
        self.eot_rng = make_numpy_rng(cfg.seed, "eot")
        n = cfg.resetNum + 1
        self.dTopo, self.dEntropy = np.full(n, np.nan), np.full(n, np.nan)
        self.dTopoNew = np.full(n, np.nan)
        self.eval_acc: list[np.ndarray] = []
        self.eval_meta: list[dict] = []
        self.trackers: dict[str, list] = {}
        self.weights: dict[str, list] = {}
        self.bar = None

    def say(self, text: str) -> None:
        if self.config.quiet:
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
        return build_model_masks(model, keep, self.config.weight_mask)

    def ease_of_teaching(self, generation: int, it: int) -> None:
        a = self.config
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
                tb.add_scalar(f"eval/teaching_curve_gen{generation}/Training_accuracy", float(mean_curve[j]), j + 1)
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
        partial_forget(model, masks, self.config.reset_to_zero)

    def run(self, state: dict | None = None) -> dict:
        """Train (from the checkpoint ``state`` if given), then evaluate and write every output."""
        a, team, T, R = self.config, self.team, self.T, self.reset_iter
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
        self.bar = bar = self.log.progress(range(start, T), desc=a.fname, total=T, initial=start)
        with DeferredStop("forget_train.py", unit="iteration") as stop:
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
        a, team = self.config, self.team
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
        self.say(f"After training for {self.config.trainIters} iterations: topographic similarity {self.dTopo[-1]:.4f}")
        self.say(MET.format_language_table(table))
        return summary


def main(argv: list[str] | None = None) -> dict | None:
    cfg = parse_config(argv)
    resolved = cfg.resolved()
    if maybe_print_config({**resolved, "print_config": cfg.print_config}):
        return None
    device = resolve_device(cfg.device)
    if cfg.device == "auto" and device.type == "cuda":
        if cfg.gpu >= torch.cuda.device_count():
            raise UserError(f"--gpu {cfg.gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device(f"cuda:{cfg.gpu}")
    set_threads(device, cfg.num_threads)
    resolved["resolved_device"] = str(device)
    folder = Path(cfg.out_dir) / cfg.fname
    log, state = open_run(cfg, folder, resolved, "forget_train.py", "ease_of_teaching_forget")
    try:
        summary = Trainer(cfg, device, log).run(state)
        remove_checkpoint(folder)
        return summary
    finally:
        log.close()
