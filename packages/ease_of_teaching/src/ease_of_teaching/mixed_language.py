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

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.cli import maybe_print_config
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog
from forgetting_common.seeding import seed_everything
from forgetting_common.stopping import DeferredStop

from ease_of_teaching import plots
from ease_of_teaching.checkpoint import (
    CHECKPOINT,
    FORMAT_MIXED,
    remove_checkpoint,
    restore_mixed,
    save_mixed_checkpoint,
)
from ease_of_teaching.cli import MixedConfig, parse_mixed_config
from ease_of_teaching.game import (
    NUM_OBJECTS,
    Sender,
    attribute_table,
    build_model_masks,
    make_adam,
    partial_forget,
)
from ease_of_teaching.metrics import perfect_language, step_entropies
from ease_of_teaching.outputs import open_run, set_threads

HALF = NUM_OBJECTS // 2
PROG = "mixed_language_forget_samebatch.py"


def run_folder(cfg: MixedConfig) -> Path:
    """``<out_dir>/<fname>/<run name>`` with ``--group_vars`` (the original's W&B group/run), else ``<out_dir>/<fname>``."""
    base = Path(cfg.out_dir) / cfg.fname
    return base / cfg.run_name() if cfg.group_vars else base


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


def run(cfg: MixedConfig, device: torch.device, log: RunLog, state: dict | None = None) -> list[dict]:
    """Train and probe; from the checkpoint ``state`` (everything before it re-drawn from the seed)."""
    seed_everything(cfg.seed)
    # RNG order of the original: permutation, live sender, clone, [fixed random masks], object order
    perm = torch.randperm(NUM_OBJECTS)
    live = Sender().to(device)
    clone = Sender().to(device)
    opt = make_adam(live.parameters(), cfg.sLearnRate)
    fixed = build_model_masks(live, cfg.keep_perc, cfg.weight_mask) if cfg.same_mask else None
    order = np.random.choice(NUM_OBJECTS, NUM_OBJECTS, replace=False)
    order, messages = mixed_targets(perm, order)
    attrs = attribute_table(device)[torch.from_numpy(order).to(device)]
    targets = torch.from_numpy(messages).to(device)
    log.write_json("language.json", {"object_order": order.tolist(), "target_messages": messages.tolist(),
                                     "permutation": perm.tolist()})
    start, records = restore_mixed(state, live, opt) if state is not None else (0, [])
    every = cfg.checkpoint_every
    with DeferredStop(PROG, unit="iteration") as stop:
        for i in log.progress(range(start, cfg.trainIters), desc=cfg.fname, total=cfg.trainIters,
                              initial=start):
            live.train()
            loss, message, lp = imitation_forward(live, attrs, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                rec = {"Iter": i, **half_metrics(loss.detach(), message, lp, targets)}
                clone.load_state_dict(live.state_dict())
                masks = fixed if fixed is not None else build_model_masks(clone, cfg.keep_perc, cfg.weight_mask)
                partial_forget(clone, masks, cfg.reset_to_zero)
                c_loss, c_msg, c_lp = imitation_forward(clone, attrs, targets)
                rec.update(half_metrics(c_loss, c_msg, c_lp, targets, prefix="Copy "))
            if cfg.train_with_reset and i % cfg.reset_every == 0:
                live.load_state_dict(clone.state_dict())  # Adam state kept, as the original
            log.log(rec, step=i)
            records.append(rec)
            if stop.requested or (every and (i + 1) % every == 0 and i + 1 < cfg.trainIters):
                save_mixed_checkpoint(cfg, log, i + 1, live, opt, records)
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
    cfg = parse_mixed_config(argv)
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
    folder = run_folder(cfg)
    log, state = open_run(cfg, folder, resolved, PROG, "ease_of_teaching_target", FORMAT_MIXED)
    try:
        records = run(cfg, device, log, state)
        summary = summarize(records)
        log.write_json("summary.json", summary)
        plots.plot_mixed(folder / "copy_accuracy.png", records, title=folder.name)
        remove_checkpoint(folder)
    finally:
        log.close()
    if not cfg.quiet:
        gap = summary["copy gap (Perfect - Permuted)"]
        print(f"{folder}: mean copy exact match, compositional minus permuted half: {gap:.1f} points")
    return summary


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main() and 0)
