"""The small real reproduction (spec section 15): LURE vs warm start vs ALMA vs from scratch on MNIST-5k.

Every run goes through the real entry points (``LURE_main.py``'s and ``ALMA.py``'s ``main``) in
this process, one after another, into ``<out>/<method>/seed<k>/``. A summary (``summary.json``,
a markdown table on stdout) and a plot of test accuracy per chunk (``accuracy_per_chunk.png``)
are written at the end. Finished runs are reused, so an interrupted reproduction continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from forgetting_common.atomic import atomic_write_json
from forgetting_common.cli import OneLineErrorParser, positive_int
from forgetting_common.data import resolve_root
from forgetting_common.errors import UserError

from lure.cli import main as script_main

METHODS = {
    "lure": ("LURE (SNIP 20%, gamma 0.1)", False, ["--use_snip", "--snip_size", "0.2", "--gamma", "0.1"]),
    "warm": ("warm start, same schedule (gamma 0.1)", False, ["--gamma", "0.1"]),
    "alma": ("ALMA.py warm start (constant LR)", True, []),
    "scratch": ("from scratch (--use_randinit, gamma 0.1)", False, ["--use_randinit", "--gamma", "0.1"]),
}


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="reproduce_mnist.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data root holding MNIST/raw (default $FORGETTING_DATA, else ../data)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    p.add_argument("--methods", default="lure,warm,alma,scratch", help=f"comma-separated, from {','.join(METHODS)}")
    p.add_argument("--epochs", type=positive_int, default=15, help="epochs per state")
    p.add_argument("--decreasing_lr", default="6,12", help="milestones within a state")
    p.add_argument("--meta_batch_size", type=positive_int, default=500)
    p.add_argument("--meta_batch_number", type=positive_int, default=8)
    p.add_argument("--batch_size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "mnist"))
    p.add_argument("--corruption_eval", action="store_true",
                   help="also measure accuracy under corruptions (post hoc for finished runs that lack it)")
    p.add_argument("--extra", default="", help="extra flags for every run, as one string")
    return p


def run_argv(args, method: str, seed: int, out: Path) -> tuple[list[str], bool]:
    _, alma, flags = METHODS[method]
    argv = ["--dataset", args.dataset, "--arch", "mnistnet", "--epochs", str(args.epochs),
            "--decreasing_lr", args.decreasing_lr, "--batch_size", str(args.batch_size),
            "--meta_batch_size", str(args.meta_batch_size), "--meta_batch_number", str(args.meta_batch_number),
            "--seed", str(seed), "--save_dir", str(out / method / f"seed{seed}"), "--device", args.device,
            "--quiet", "--print_freq", "1000000", "--run", f"{method}-seed{seed}"]
    if args.data:
        argv += ["--data", args.data]
    if not alma:
        argv += ["--no_epoch_test", "--save_start_weights"]
    if args.corruption_eval:
        argv.append("--corruption_eval")
    return argv + flags + args.extra.split(), alma


def _mean_sd(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(per_method: dict[str, list[dict]]) -> dict:
    summary = {}
    for method, runs in per_method.items():
        final = [r["final_test_acc"] for r in runs]
        cer = [r["cumulative_error_rate"] for r in runs]
        ece = [r["final_ece"] for r in runs]
        drops = [s["test_acc_before_unlearn"] - s["test_acc_after_unlearn"]
                 for r in runs for s in r["states"] if "test_acc_after_unlearn" in s]
        per_state = [r["test_acc_per_state"] for r in runs]
        summary[method] = {
            "label": METHODS[method][0], "seeds": len(runs),
            "final_test_acc": _mean_sd(final), "cumulative_error_rate": _mean_sd(cer), "final_ece": _mean_sd(ece),
            "first_state_acc": _mean_sd([p[0] for p in per_state]),
            "acc_per_state_mean": [statistics.fmean(col) for col in zip(*per_state)],
            "unlearn_drop_pp": _mean_sd(drops) if drops else None,
            "mean_corruption_acc": (_mean_sd([r["mean_corruption_acc"] for r in runs])
                                    if all("mean_corruption_acc" in r for r in runs) else None),
            "final_test_acc_runs": final, "cer_runs": cer, "ece_runs": ece,
        }
    return summary


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in summary.values():
        acc = s["acc_per_state_mean"]
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=f"{s['label']} (n={s['seeds']})")
    ax.set_xlabel("chunk (state)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def table(summary: dict) -> str:
    rows = ["| method | seeds | final test acc (%) | cumulative error rate | final ECE | acc after state 1 | "
            "acc drop right after unlearning (pp) | mean corruption acc (%) |", "|---|---|---|---|---|---|---|---|"]
    for s in summary.values():
        drop = s["unlearn_drop_pp"]
        rows.append(
            f"| {s['label']} | {s['seeds']} | {s['final_test_acc'][0]:.2f} ± {s['final_test_acc'][1]:.2f} | "
            f"{s['cumulative_error_rate'][0]:.3f} ± {s['cumulative_error_rate'][1]:.3f} | "
            f"{s['final_ece'][0]:.4f} ± {s['final_ece'][1]:.4f} | {s['first_state_acc'][0]:.2f} | "
            + (f"{drop[0]:.2f} ± {drop[1]:.2f} |" if drop else "– |")
            + (f" {s['mean_corruption_acc'][0]:.2f} ± {s['mean_corruption_acc'][1]:.2f} |"
               if s.get("mean_corruption_acc") else " – |"))
    return "\n".join(rows)


def _add_corruptions(args, done: Path, results: dict) -> None:
    """Measure corruption accuracy of a finished run's final model and store it in its results.json."""
    import torch

    from lure.data import load_data
    from lure.models import build_model
    from lure.robustness import corruption_accuracy, mean_corruption_accuracy

    ns = argparse.Namespace(dataset=args.dataset, data_source="real", data=args.data,
                            meta_batch_size=args.meta_batch_size, meta_batch_number=args.meta_batch_number,
                            val_offset=None, few_shot=False, n_shots=100, image_size=None, test_limit=None,
                            order_seed=0, imagenet_path="")
    device = torch.device(args.device)
    data = load_data(ns, device)
    model = build_model("mnistnet", data.num_classes, in_channels=data.in_channels, mean=data.mean, std=data.std)
    best = done.parent / f"{args.meta_batch_number}model_SA_best.pth.tar"
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    model.to(device)
    table = corruption_accuracy(model, data.test, args.batch_size, seed=results["config"]["seed_used"])
    results["corruption_acc"] = table
    results["mean_corruption_acc"] = mean_corruption_accuracy(table)
    atomic_write_json(done, results)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as err:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers") from err
    methods = [m for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.data is None:
        args.data = str(resolve_root(None, "../data"))
    out = Path(args.out)
    per_method: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        for method in methods:
            argv_run, alma = run_argv(args, method, seed, out)
            done = out / method / f"seed{seed}" / "results.json"
            if done.is_file() and json.loads(done.read_text()).get("finished"):
                results = json.loads(done.read_text())
                if args.corruption_eval and "corruption_acc" not in results:
                    _add_corruptions(args, done, results)
            else:
                if done.is_file():
                    argv_run.append("--resume")
                print(f"== {method} seed {seed}: {'ALMA.py' if alma else 'LURE_main.py'} {' '.join(argv_run)}",
                      flush=True)
                results = script_main(argv_run, alma=alma)
            per_method[method].append(results)
    summary = summarise(per_method)
    record = {"command": argv, "seeds": seeds, "summary": summary}
    atomic_write_json(out / "summary.json", record)
    plot(summary, out / "accuracy_per_chunk.png",
         f"{args.dataset}: K={args.meta_batch_number}, M={args.meta_batch_size}, {args.epochs} epochs/state")
    print(table(summary))
    return record
