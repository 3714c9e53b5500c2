"""The two-model "neural brainwashing" example (spec §4): A = {θ1, θs} trained on D1, then
B = {θ2, θs} trained on D2 with or without WPL on the shared θs; A's test loss is tracked while
B trains.

The original script is not public; this protocol is the project's (spec §4.2). The models are
:class:`wpl_enas.models.two_models.TwoModels`, the data :func:`wpl_enas.data.load_two_model_data`,
the Fisher :func:`wpl_enas.wpl.diagonal_fisher`, the figure :func:`wpl_enas.plots.plot_two_models`. WPL
adds ``(α/2)·Σ F ⊙ (θs − θ̂s)²`` to B's loss, with F the empirical diagonal Fisher of A on D1
(mean of per-sample squared gradients of log p(y|x)); ``l2`` uses F ≡ 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save, atomic_write_json
from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    config_dict,
    positive_float,
    positive_int,
)
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, progress
from forgetting_common.safeload import load_checkpoint

from wpl_enas.data import load_two_model_data
from wpl_enas.models.two_models import TwoModels
from wpl_enas.plots import plot_two_models
from wpl_enas.wpl import diagonal_fisher

DEFAULT_ALPHAS = {"plain": [0.0], "l2": [0.1, 1.0], "wpl": [10.0, 100.0, 1000.0]}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="two_models.py", description="Two models sharing parameters, with and without WPL")
    p.add_argument("--dataset", choices=["clusters", "digits", "mnist"], default="clusters")
    p.add_argument("--data_dir", default=None, help="root holding MNIST/raw (mnist); default $FORGETTING_DATA, else data")
    p.add_argument("--task_b", choices=["same", "permuted_labels"], default="same")
    p.add_argument("--shared", choices=["top", "bottom"], default="top")
    p.add_argument("--hidden", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=0.05)
    p.add_argument("--batch_size", type=positive_int, default=32)
    p.add_argument("--epochs_a", type=positive_int, default=20)
    p.add_argument("--epochs_b", type=positive_int, default=20)
    p.add_argument("--record_every", type=positive_int, default=50, help="B iterations between measurements")
    p.add_argument("--fisher", choices=["empirical", "minibatch"], default="empirical")
    p.add_argument("--penalty_update", choices=["proximal", "gradient"], default="proximal",
                   help="apply the quadratic penalty as its exact proximal step after each SGD step (stable for "
                        "any lr*alpha*F) or as a gradient term of the loss (diverges once lr*alpha*F > 2)")
    p.add_argument("--arms", default="plain,l2,wpl",
                   help="comma list of plain, l2, wpl (each with its default strengths) or name:alpha")
    p.add_argument("--seeds", default="1", help="comma list of model seeds")
    p.add_argument("--data_seed", type=int, default=0)
    p.add_argument("--train_limit", type=positive_int, default=None, help="at most this many training samples")
    p.add_argument("--test_limit", type=positive_int, default=None, help="at most this many test samples")
    p.add_argument("--output_dir", default=None, help="default logs/two_models_<dataset>")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results.json")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --output_dir: the seeds its checkpoint.pth holds are kept")
    add_common_flags(p)
    return p


@dataclass(frozen=True)
class TwoModelsConfig:
    """The ``two_models.py`` flags, parsed once (``output_dir`` resolved)."""

    dataset: str
    data_dir: str | None
    task_b: str
    shared: str
    hidden: int
    lr: float
    batch_size: int
    epochs_a: int
    epochs_b: int
    record_every: int
    fisher: str
    penalty_update: str
    arms: str
    seeds: str
    data_seed: int
    train_limit: int | None
    test_limit: int | None
    output_dir: str
    overwrite: bool
    resume: bool
    device: str
    print_config: bool
    quiet: bool

    def to_dict(self) -> dict:
        return config_dict(dict(vars(self)))


def parse_args(argv: list[str] | None = None) -> TwoModelsConfig:
    args = build_parser().parse_args(argv)
    args.output_dir = args.output_dir or f"logs/two_models_{args.dataset}"
    return TwoModelsConfig(**vars(args))


def parse_arms(text: str) -> list[tuple[str, float]]:
    arms = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        name, _, alpha = item.partition(":")
        if name not in DEFAULT_ALPHAS:
            raise UserError(f"--arms: unknown arm {name!r}; use plain, l2, wpl or name:alpha")
        if alpha:
            try:
                arms.append((name, float(alpha)))
            except ValueError as err:
                raise UserError(f"--arms: {item!r} has a non-numeric strength") from err
        else:
            arms += [(name, a) for a in DEFAULT_ALPHAS[name]]
    if not arms:
        raise UserError("--arms is empty")
    return arms


def arm_label(name: str, alpha: float) -> str:
    return name if name == "plain" else f"{name} a={alpha:g}"


def train_epochs(model, which, x, y, epochs, lr, batch_size, gen, penalty=None, on_iter=None, prox=None):
    params = model.private(which) + list(model.shared.parameters())
    opt = torch.optim.SGD(params, lr=lr)
    it = 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start: start + batch_size].to(x.device)
            loss = F.cross_entropy(model(x[idx], which), y[idx])
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if prox is not None:
                prox()
            it += 1
            if on_iter is not None:
                on_iter(it)
    return it


@torch.no_grad()
def evaluate(model, which, x, y) -> tuple[float, float]:
    logits = model(x, which)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def run_seed(cfg: TwoModelsConfig, seed: int, arms, data, device) -> dict:
    xtr, ytr, xte, yte = data
    classes = int(max(ytr.max(), yte.max()) + 1)
    ytr_b, yte_b = ytr, yte
    if cfg.task_b == "permuted_labels":
        perm = torch.randperm(classes, generator=torch.Generator().manual_seed(seed + 1000)).to(device)
        ytr_b, yte_b = perm[ytr], perm[yte]
    torch.manual_seed(seed)
    base = TwoModels(xtr.shape[1], cfg.hidden, classes, cfg.shared).to(device)
    train_epochs(base, "A", xtr, ytr, cfg.epochs_a, cfg.lr, cfg.batch_size, torch.Generator().manual_seed(seed))
    a_loss0, a_acc0 = evaluate(base, "A", xte, yte)
    fisher = diagonal_fisher(base, "shared.", xtr, ytr, "A", kind=cfg.fisher, batch_size=cfg.batch_size)
    anchor = {n: p.detach().clone() for n, p in base.shared.named_parameters()}
    state = {k: v.clone() for k, v in base.state_dict().items()}
    out = {"seed": seed, "A_before": {"loss": a_loss0, "acc": a_acc0}, "arms": {}}
    for name, alpha in arms:
        model = TwoModels(xtr.shape[1], cfg.hidden, classes, cfg.shared).to(device)
        model.load_state_dict(state)
        weights = fisher if name == "wpl" else {n: torch.ones_like(a) for n, a in anchor.items()}

        def penalty(model=model, weights=weights, alpha=alpha):
            total = sum((weights[n] * (p - anchor[n]).pow(2)).sum() for n, p in model.shared.named_parameters())
            return 0.5 * alpha * total

        @torch.no_grad()
        def prox(model=model, weights=weights, alpha=alpha):
            # argmin_t  (alpha/2) W (t - anchor)^2 + (t - p)^2 / (2 lr)  =  (p + k anchor) / (1 + k),  k = lr alpha W
            for n, p in model.shared.named_parameters():
                k = cfg.lr * alpha * weights[n]
                p.copy_((p + k * anchor[n]) / (1 + k))

        curve = {"iter": [0], "A_loss": [a_loss0], "A_acc": [a_acc0]}
        b0 = evaluate(model, "B", xte, yte_b)
        curve["B_loss"], curve["B_acc"] = [b0[0]], [b0[1]]

        def record(it, model=model, curve=curve):
            if it % cfg.record_every == 0:
                la, aa = evaluate(model, "A", xte, yte)
                lb, ab = evaluate(model, "B", xte, yte_b)
                curve["iter"].append(it)
                curve["A_loss"].append(la)
                curve["A_acc"].append(aa)
                curve["B_loss"].append(lb)
                curve["B_acc"].append(ab)

        use = name != "plain"
        gradient = use and cfg.penalty_update == "gradient"
        train_epochs(model, "B", xtr, ytr_b, cfg.epochs_b, cfg.lr, cfg.batch_size,
                     torch.Generator().manual_seed(seed + 1), penalty if gradient else None, record,
                     prox if use and not gradient else None)
        a_loss, a_acc = evaluate(model, "A", xte, yte)
        b_loss, b_acc = evaluate(model, "B", xte, yte_b)
        out["arms"][arm_label(name, alpha)] = {
            "arm": name, "alpha": alpha, "A_after": {"loss": a_loss, "acc": a_acc},
            "A_loss_rise": a_loss - a_loss0, "B_final": {"loss": b_loss, "acc": b_acc}, "curve": curve}
    return out


def summarise(per_seed: list[dict]) -> dict:
    labels = list(per_seed[0]["arms"])
    summary = {}
    for lab in labels:
        rises = [s["arms"][lab]["A_loss_rise"] for s in per_seed]
        b_acc = [s["arms"][lab]["B_final"]["acc"] for s in per_seed]
        a_acc = [s["arms"][lab]["A_after"]["acc"] for s in per_seed]
        summary[lab] = {"A_loss_rise_mean": float(np.mean(rises)), "A_loss_rise_per_seed": rises,
                        "A_acc_after_mean": float(np.mean(a_acc)), "B_acc_mean": float(np.mean(b_acc))}
    summary["A_before_loss_mean"] = float(np.mean([s["A_before"]["loss"] for s in per_seed]))
    return summary


RESUME_FILE = "checkpoint.pth"
NOT_COMPARED = ("resume", "overwrite", "quiet", "print_config", "device")


def compared_config(cfg: TwoModelsConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in NOT_COMPARED}


def start_state(cfg: TwoModelsConfig, out_dir: Path) -> tuple[list[dict], dict | None]:
    """(the finished seeds to keep, the RunLog resume state) for this start of the run."""
    started = (out_dir / "config.json").exists()
    if not cfg.resume:
        if started and not cfg.overwrite:
            raise UserError(f"{out_dir} holds an unfinished run; pass --resume to continue it or --overwrite "
                            "to start again")
        return [], None
    path = out_dir / RESUME_FILE
    if not path.exists():
        if started:
            print(f"two_models.py: {out_dir} holds no {RESUME_FILE}: starting it again", file=sys.stderr)
        return [], EMPTY_STATE if started else None
    state = load_checkpoint(path, what="resume checkpoint")
    try:
        saved, done = json.loads(state["config"]), json.loads(state["per_seed"])
    except (TypeError, KeyError, ValueError) as err:
        raise UserError(f"resume checkpoint {path} was not written by two_models.py") from err
    now = json.loads(json.dumps(compared_config(cfg), sort_keys=True))
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise UserError(f"{out_dir} was started with other flags ({', '.join(changed)}); resume it with the "
                        "same flags, or pass --overwrite")
    return done, state["runlog"]


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    if cfg.print_config:
        print(json.dumps(cfg.to_dict(), sort_keys=True))
        return {}
    arms = parse_arms(cfg.arms)
    try:
        seeds = [int(s) for s in cfg.seeds.split(",") if s.strip()]
    except ValueError as err:
        raise UserError(f"--seeds must be a comma list of integers, got {cfg.seeds!r}") from err
    if not seeds:
        raise UserError("--seeds is empty")
    out_dir = Path(cfg.output_dir)
    print(f"two_models.py: output folder {out_dir}", file=sys.stderr)
    if (out_dir / "results.json").exists() and not cfg.overwrite:
        raise UserError(f"{out_dir}/results.json exists; pass --overwrite or choose another --output_dir")
    done, log_state = start_state(cfg, out_dir)
    device = resolve_device(cfg.device)
    data = tuple(t.to(device) for t in load_two_model_data(cfg.dataset, cfg.data_dir, cfg.data_seed,
                                                           cfg.train_limit, cfg.test_limit))
    runlog = RunLog.create(out_dir, cfg.to_dict(), resume=cfg.resume, overwrite=not cfg.resume,
                           resume_state=log_state, tensorboard=False, quiet=cfg.quiet)
    if not done:
        (out_dir / RESUME_FILE).unlink(missing_ok=True)  # an earlier attempt's, not this run's
    try:
        per_seed = list(done)
        for seed in progress(seeds[len(done):], quiet=cfg.quiet, desc="seeds"):
            res = run_seed(cfg, seed, arms, data, device)
            per_seed.append(res)
            for lab, r in res["arms"].items():
                runlog.log({"seed": seed, "arm": lab, "A_loss_before": res["A_before"]["loss"],
                            "A_loss_after": r["A_after"]["loss"], "A_loss_rise": r["A_loss_rise"],
                            "A_acc_after": r["A_after"]["acc"], "B_acc": r["B_final"]["acc"]})
            # every seed starts from its own seeds, so the finished ones are all a resume needs
            atomic_torch_save({"config": json.dumps(compared_config(cfg), sort_keys=True),
                               "per_seed": json.dumps(per_seed), "runlog": runlog.checkpoint_state()},
                              out_dir / RESUME_FILE)
        summary = summarise(per_seed)
        result = {"config": cfg.to_dict(), "summary": summary, "per_seed": per_seed}
        atomic_write_json(out_dir / "results.json", result)
        plot_two_models(per_seed, out_dir / "forgetting.png",
             f"{cfg.dataset}, shared={cfg.shared}, {len(seeds)} seed(s): A's loss while B trains")
    except KeyboardInterrupt:
        print(f"two_models.py: interrupted; {out_dir / RESUME_FILE} holds the finished seeds: continue with --resume",
              file=sys.stderr)
        raise
    finally:
        runlog.close()
    if not cfg.quiet:
        for lab, s in summary.items():
            if isinstance(s, dict):
                print(f"{lab:>14}: A loss rise {s['A_loss_rise_mean']:+.4f}  A acc {s['A_acc_after_mean']:.3f}  "
                      f"B acc {s['B_acc_mean']:.3f}", file=sys.stderr)
    if not all(math.isfinite(s["A_loss_rise_mean"]) for s in summary.values() if isinstance(s, dict)):
        raise UserError("non-finite losses: lower --lr")
    return result
