"""A small real-data reproduction of the paper's loss-of-plasticity contrast (SGD vs UPGD).

Runs ``run_stats`` in-process for each learner and seed on one stream, then prints the average
online accuracy over the first and last 20 % of tasks and the dead-unit fraction over the last
20 %, and draws the per-task figure. Defaults: label-permuted scikit-learn digits, 60 000
samples, a new permutation every 500, step size 0.1 (spec section 12.2).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from forgetting_common.atomic import atomic_write_json
from forgetting_common.cli import (
    OneLineErrorParser,
    add_print_config_flag,
    add_quiet_flag,
    config_dict,
)
from forgetting_common.errors import UserError, run_main

from upgd.cli import main as run_main_cli
from upgd.metrics import fraction_summary, load_result

LEARNER_HPS = {
    "sgd": lambda lr: ["--lr", str(lr), "--weight_decay", "0.0"],
    "upgd_fo_global": lambda lr: ["--lr", str(lr), "--beta_utility", "0.999", "--sigma", "0.001", "--weight_decay", "0.0"],
    "upgd_nonprotecting_fo_global": lambda lr: ["--lr", str(lr), "--beta_utility", "0.999", "--sigma", "0.001",
                                                "--weight_decay", "0.0"],
    "shrink_and_perturb": lambda lr: ["--lr", str(lr), "--sigma", "0.01", "--decay", "0.01"],
    "pgd": lambda lr: ["--lr", str(lr), "--sigma", "0.01"],
    "baseline": lambda lr: ["--lr", str(lr), "--beta_utility", "0.999", "--sigma", "0.001", "--weight_decay", "0.0"],
    "usgd": lambda lr: ["--lr", str(lr), "--beta_utility", "0.999", "--sigma", "0.001", "--weight_decay", "0.0"],
}


def build_parser() -> OneLineErrorParser:
    p = OneLineErrorParser(prog="reproduce.py", description=__doc__)
    p.add_argument("--task", default="label_permuted_digits_stats")
    p.add_argument("--network", default="fully_connected_relu_with_hooks")
    p.add_argument("--learners", nargs="+", default=["sgd", "upgd_fo_global"], choices=sorted(LEARNER_HPS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--n_samples", type=int, default=60000)
    p.add_argument("--change_freq", type=int, default=500)
    p.add_argument("--stats_every", type=int, default=50)
    p.add_argument("--dataset_limit", type=int, default=None, help="use the first N training images only")
    p.add_argument("--data_dir", default=None, help="data root (default: FORGETTING_DATA, else ./dataset)")
    p.add_argument("--device", default="auto")
    p.add_argument("--save_path", default="repro_logs")
    p.add_argument("--out", default=None, help="figure folder (default: <save_path>/figures)")
    p.add_argument("--summary", default=None, help="write the summary JSON here (default: <save_path>/summary_<task>.json)")
    add_print_config_flag(p)
    add_quiet_flag(p)
    return p


def summarise(files: dict[str, list[Path]]) -> dict[str, dict[str, float]]:
    out = {}
    for learner, paths in files.items():
        firsts, lasts, deads, overall, secs = [], [], [], [], []
        for path in paths:
            data = load_result(path)
            f, last = fraction_summary(data, "accuracies")
            _, dead = fraction_summary(data, "n_dead_units_per_task")
            firsts.append(f)
            lasts.append(last)
            deads.append(dead)
            overall.append(float(np.mean(data["accuracies"][1:])))
            secs.append(data.get("run_info", {}).get("time_elapsed", float("nan")))
        out[learner] = {"acc_first20": float(np.mean(firsts)), "acc_last20": float(np.mean(lasts)),
                        "dead_last20": float(np.mean(deads)), "acc_mean": float(np.mean(overall)),
                        "seeds": len(paths), "seconds_per_run": float(np.mean(secs))}
    return out


def run(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return {}
    files: dict[str, list[Path]] = {}
    for learner in args.learners:
        for seed in args.seeds:
            argv_run = ["--task", args.task, "--learner", learner, *LEARNER_HPS[learner](args.lr),
                        "--network", args.network, "--seed", str(seed), "--n_samples", str(args.n_samples),
                        "--change_freq", str(args.change_freq), "--stats_every", str(args.stats_every),
                        "--save_path", args.save_path, "--device", args.device]
            if args.dataset_limit:
                argv_run += ["--dataset_limit", str(args.dataset_limit)]
            if args.data_dir:
                argv_run += ["--data_dir", args.data_dir]
            if args.quiet:
                argv_run.append("--quiet")
            from upgd.cli import parse
            from upgd.networks import build_network
            from upgd.runner import result_path

            cfg, _, _ = parse(argv_run)
            path = result_path(cfg, build_network(args.network, 64, 10).name)
            if not path.exists():  # finished runs are reused, never overwritten
                run_main_cli(argv_run)
            elif not args.quiet:
                print(f"reusing {path}", file=sys.stderr)
            files.setdefault(learner, []).append(path)
    summary = summarise(files)
    lines = ["| learner | seeds | acc first 20 % | acc last 20 % | dead units last 20 % | mean acc | s/run |",
             "|---|---|---|---|---|---|---|"]
    for learner, s in summary.items():
        lines.append(f"| {learner} | {s['seeds']} | {s['acc_first20']:.3f} | {s['acc_last20']:.3f} | "
                     f"{s['dead_last20']:.3f} | {s['acc_mean']:.3f} | {s['seconds_per_run']:.0f} |")
    print("\n".join(lines))
    target = Path(args.summary or Path(args.save_path) / f"summary_{args.task}.json")
    atomic_write_json(target, {"config": config_dict(args), "summary": summary})
    from upgd.plots import plot_results

    out_dir = Path(args.out or Path(args.save_path) / "figures")
    try:
        plot_results([p for ps in files.values() for p in ps], out_dir, overwrite=True, smooth=5)
    except UserError as err:  # pragma: no cover - plotting is a convenience here
        print(f"no figure: {err}", file=sys.stderr)
    return summary


def entry() -> None:
    run_main(lambda: run(sys.argv[1:]), prog="reproduce.py")
