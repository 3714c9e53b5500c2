"""The two-model "neural brainwashing" example (spec §4): A = {θ1, θs} trained on D1, then
B = {θ2, θs} trained on D2 with or without WPL on the shared θs; A's test loss is tracked while
B trains.

The original script is not public; this protocol is the project's (spec §4.2). A is
``x → Linear(d,H)[θ1] → ReLU → Linear(H,H)[θs] → ReLU → Linear(H,C)[θs]`` and B the same with its
own first layer θ2 (``--shared=top``); ``--shared=bottom`` shares the first layer instead. WPL
adds ``(α/2)·Σ F ⊙ (θs − θ̂s)²`` to B's loss, with F the empirical diagonal Fisher of A on D1
(mean of per-sample squared gradients of log p(y|x)); ``l2`` uses F ≡ 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_json
from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    config_dict,
    positive_float,
    positive_int,
)
from forgetting_common.data import load_mnist, resolve_root
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, progress
from forgetting_common.safeload import load_checkpoint
from torch import nn

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


# ---------------------------------------------------------------------------------------- data
def load_data(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if args.dataset == "clusters":
        rng = np.random.default_rng(args.data_seed)
        c, d = 10, 32
        means = rng.normal(size=(c, d))
        def draw(n):
            y = rng.integers(0, c, size=n)
            return np.tanh(means[y] + rng.normal(size=(n, d))).astype(np.float32), y
        xtr, ytr = draw(3000)
        xte, yte = draw(1000)
        xtr, ytr, xte, yte = map(torch.as_tensor, (xtr, ytr, xte, yte))
    elif args.dataset == "digits":
        from forgetting_common.data import load_digits

        x, y = load_digits()
        x = x.reshape(len(x), -1).float() / 16.0
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.data_seed))
        x, y = x[perm], y[perm]
        xtr, ytr, xte, yte = x[:1497], y[:1497], x[1497:], y[1497:]
    else:
        root = resolve_root(args.data_dir, "data")
        xtr, ytr = load_mnist(root, train=True)
        xte, yte = load_mnist(root, train=False)
        xtr = xtr.reshape(len(xtr), -1).float() / 255.0
        xte = xte.reshape(len(xte), -1).float() / 255.0
    if args.train_limit:
        xtr, ytr = xtr[: args.train_limit], ytr[: args.train_limit]
    if args.test_limit:
        xte, yte = xte[: args.test_limit], yte[: args.test_limit]
    return xtr.float(), ytr.long(), xte.float(), yte.long()


# -------------------------------------------------------------------------------------- models
class TwoModels(nn.Module):
    """θ1 and θ2 private, θs shared; ``forward(x, which)`` runs model A or B."""

    def __init__(self, d: int, hidden: int, classes: int, shared: str = "top") -> None:
        super().__init__()
        self.shared_mode = shared
        if shared == "top":
            self.first = nn.ModuleDict({"A": nn.Linear(d, hidden), "B": nn.Linear(d, hidden)})
            self.shared = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))
        else:
            self.shared = nn.Linear(d, hidden)
            self.heads = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))
                                        for m in ("A", "B")})

    def forward(self, x, which: str):
        if self.shared_mode == "top":
            return self.shared(F.relu(self.first[which](x)))
        return self.heads[which](F.relu(self.shared(x)))

    def private(self, which: str):
        return list((self.first[which] if self.shared_mode == "top" else self.heads[which]).parameters())


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


def fisher_diag(model, x, y, kind: str = "empirical", batch_size: int = 32, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of model A on (x, y) for the shared parameters θs."""
    names = [n for n, _ in model.shared.named_parameters()]
    fisher = {n: torch.zeros_like(p) for n, p in model.shared.named_parameters()}
    if kind == "minibatch":
        nb = 0
        for start in range(0, len(x), batch_size):
            model.zero_grad()
            F.cross_entropy(model(x[start:start + batch_size], "A"), y[start:start + batch_size]).backward()
            for n, p in model.shared.named_parameters():
                fisher[n] += p.grad.detach() ** 2
            nb += 1
        return {n: f / nb for n, f in fisher.items()}
    from torch.func import functional_call, grad, vmap

    shared_params = {n: p.detach() for n, p in model.shared.named_parameters()}

    def loss_one(params, xi, yi):
        def run(inp):
            if model.shared_mode == "top":
                return functional_call(model.shared, params, (F.relu(model.first["A"](inp)),))
            return model.heads["A"](F.relu(functional_call(model.shared, params, (inp,))))
        return F.cross_entropy(run(xi.unsqueeze(0)), yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    for start in range(0, len(x), chunk):
        grads = per_sample(shared_params, x[start:start + chunk], y[start:start + chunk])
        for n in names:
            fisher[n] += grads[n].detach().pow(2).sum(0)
    return {n: f / len(x) for n, f in fisher.items()}


def run_seed(args, seed: int, arms, data, device) -> dict:
    xtr, ytr, xte, yte = data
    classes = int(max(ytr.max(), yte.max()) + 1)
    ytr_b, yte_b = ytr, yte
    if args.task_b == "permuted_labels":
        perm = torch.randperm(classes, generator=torch.Generator().manual_seed(seed + 1000)).to(device)
        ytr_b, yte_b = perm[ytr], perm[yte]
    torch.manual_seed(seed)
    base = TwoModels(xtr.shape[1], args.hidden, classes, args.shared).to(device)
    train_epochs(base, "A", xtr, ytr, args.epochs_a, args.lr, args.batch_size, torch.Generator().manual_seed(seed))
    a_loss0, a_acc0 = evaluate(base, "A", xte, yte)
    fisher = fisher_diag(base, xtr, ytr, args.fisher, args.batch_size)
    anchor = {n: p.detach().clone() for n, p in base.shared.named_parameters()}
    state = {k: v.clone() for k, v in base.state_dict().items()}
    out = {"seed": seed, "A_before": {"loss": a_loss0, "acc": a_acc0}, "arms": {}}
    for name, alpha in arms:
        model = TwoModels(xtr.shape[1], args.hidden, classes, args.shared).to(device)
        model.load_state_dict(state)
        weights = fisher if name == "wpl" else {n: torch.ones_like(a) for n, a in anchor.items()}

        def penalty(model=model, weights=weights, alpha=alpha):
            total = sum((weights[n] * (p - anchor[n]).pow(2)).sum() for n, p in model.shared.named_parameters())
            return 0.5 * alpha * total

        @torch.no_grad()
        def prox(model=model, weights=weights, alpha=alpha):
            # argmin_t  (alpha/2) W (t - anchor)^2 + (t - p)^2 / (2 lr)  =  (p + k anchor) / (1 + k),  k = lr alpha W
            for n, p in model.shared.named_parameters():
                k = args.lr * alpha * weights[n]
                p.copy_((p + k * anchor[n]) / (1 + k))

        curve = {"iter": [0], "A_loss": [a_loss0], "A_acc": [a_acc0]}
        b0 = evaluate(model, "B", xte, yte_b)
        curve["B_loss"], curve["B_acc"] = [b0[0]], [b0[1]]

        def record(it, model=model, curve=curve):
            if it % args.record_every == 0:
                la, aa = evaluate(model, "A", xte, yte)
                lb, ab = evaluate(model, "B", xte, yte_b)
                curve["iter"].append(it)
                curve["A_loss"].append(la)
                curve["A_acc"].append(aa)
                curve["B_loss"].append(lb)
                curve["B_acc"].append(ab)

        use = name != "plain"
        gradient = use and args.penalty_update == "gradient"
        train_epochs(model, "B", xtr, ytr_b, args.epochs_b, args.lr, args.batch_size,
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


def plot(per_seed: list[dict], path: Path, title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for lab in per_seed[0]["arms"]:
        curves = [s["arms"][lab]["curve"] for s in per_seed]
        n = min(len(c["iter"]) for c in curves)
        it = curves[0]["iter"][:n]
        a = np.mean([c["A_loss"][:n] for c in curves], axis=0)
        b = np.mean([[1 - v for v in c["B_acc"][:n]] for c in curves], axis=0)
        axes[0].plot(it, a, label=lab)
        axes[1].plot(it, b, label=lab)
    axes[0].set(xlabel="B training iterations", ylabel="model A test loss", title="A while B trains")
    axes[1].set(xlabel="B training iterations", ylabel="model B test error", title="B")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


RESUME_FILE = "checkpoint.pth"
NOT_COMPARED = ("resume", "overwrite", "quiet", "print_config", "device")


def compared_config(args) -> dict:
    return {k: v for k, v in config_dict(args).items() if k not in NOT_COMPARED}


def start_state(args, out_dir: Path) -> tuple[list[dict], dict | None]:
    """(the finished seeds to keep, the RunLog resume state) for this start of the run."""
    started = (out_dir / "config.json").exists()
    if not args.resume:
        if started and not args.overwrite:
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
    now = json.loads(json.dumps(compared_config(args), sort_keys=True))
    if saved != now:
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise UserError(f"{out_dir} was started with other flags ({', '.join(changed)}); resume it with the "
                        "same flags, or pass --overwrite")
    return done, state["runlog"]


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    args.output_dir = args.output_dir or f"logs/two_models_{args.dataset}"
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return {}
    arms = parse_arms(args.arms)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as err:
        raise UserError(f"--seeds must be a comma list of integers, got {args.seeds!r}") from err
    if not seeds:
        raise UserError("--seeds is empty")
    out_dir = Path(args.output_dir)
    print(f"two_models.py: output folder {out_dir}", file=sys.stderr)
    if (out_dir / "results.json").exists() and not args.overwrite:
        raise UserError(f"{out_dir}/results.json exists; pass --overwrite or choose another --output_dir")
    done, log_state = start_state(args, out_dir)
    device = resolve_device(args.device)
    data = tuple(t.to(device) for t in load_data(args))
    runlog = RunLog.create(out_dir, config_dict(args), resume=args.resume, overwrite=not args.resume,
                           resume_state=log_state, tensorboard=False, quiet=args.quiet)
    if not done:
        (out_dir / RESUME_FILE).unlink(missing_ok=True)  # an earlier attempt's, not this run's
    try:
        per_seed = list(done)
        for seed in progress(seeds[len(done):], quiet=args.quiet, desc="seeds"):
            res = run_seed(args, seed, arms, data, device)
            per_seed.append(res)
            for lab, r in res["arms"].items():
                runlog.log({"seed": seed, "arm": lab, "A_loss_before": res["A_before"]["loss"],
                            "A_loss_after": r["A_after"]["loss"], "A_loss_rise": r["A_loss_rise"],
                            "A_acc_after": r["A_after"]["acc"], "B_acc": r["B_final"]["acc"]})
            # every seed starts from its own seeds, so the finished ones are all a resume needs
            atomic_torch_save({"config": json.dumps(compared_config(args), sort_keys=True),
                               "per_seed": json.dumps(per_seed), "runlog": runlog.checkpoint_state()},
                              out_dir / RESUME_FILE)
        summary = summarise(per_seed)
        result = {"config": config_dict(args), "summary": summary, "per_seed": per_seed}
        atomic_write_json(out_dir / "results.json", result)
        plot(per_seed, out_dir / "forgetting.png",
             f"{args.dataset}, shared={args.shared}, {len(seeds)} seed(s): A's loss while B trains")
    except KeyboardInterrupt:
        print(f"two_models.py: interrupted; {out_dir / RESUME_FILE} holds the finished seeds: continue with --resume",
              file=sys.stderr)
        raise
    finally:
        runlog.close()
    if not args.quiet:
        for lab, s in summary.items():
            if isinstance(s, dict):
                print(f"{lab:>14}: A loss rise {s['A_loss_rise_mean']:+.4f}  A acc {s['A_acc_after_mean']:.3f}  "
                      f"B acc {s['B_acc_mean']:.3f}", file=sys.stderr)
    if not all(math.isfinite(s["A_loss_rise_mean"]) for s in summary.values() if isinstance(s, dict)):
        raise UserError("non-finite losses: lower --lr")
    return result
