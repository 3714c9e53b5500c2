"""The small reproduction (spec R3-R7): three game regimes over several seeds, and the
mixed-language targeted forgetting over five seeds, with the figures the README reports.

Regimes (the seed command lines, shortened; forgetting periods kept as in the paper):

* no reset: ``forget_train.py`` with a topographic-similarity evaluation every 3 000 iterations;
* reset receiver: full receiver reset every 6 000 iterations (Li & Bowling);
* PBF: sender and receiver keep the 10 % of entries with the largest initial magnitude, the rest
  re-initialised, every 3 000 iterations.

Every run is an ordinary ``forget_train.py`` / ``mixed_language_forget_samebatch.py`` run (called
in-process), with its own output folder under ``--out_dir``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from forgetting_common import cli
from forgetting_common.errors import UserError
from forgetting_common.runlog import read_metrics

from ease_of_teaching import mixed_language, plots, train


def build_parser() -> argparse.ArgumentParser:
    p = cli.OneLineErrorParser(prog="reproduce.py", description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", default="runs/reproduction", help="folder for all runs and the summary")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the game regimes")
    p.add_argument("--trainIters", type=cli.positive_int, default=30000, help="iterations per game run (multiple of 6000)")
    p.add_argument("--mixed_seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--mixed_iters", type=cli.positive_int, default=700)
    p.add_argument("--eot_receivers", type=cli.positive_int, default=30)
    p.add_argument("--eot_iters", type=cli.positive_int, default=1000)
    p.add_argument("--skip_game", action="store_true")
    p.add_argument("--skip_mixed", action="store_true")
    p.add_argument("--jobs", type=cli.positive_int, default=1,
                   help="game runs in parallel (one process each, one thread per process)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    cli.add_print_config_flag(p)
    return p


def regimes(T: int) -> dict[str, list[str]]:
    return {
        "no reset": ["--resetNum", str(T // 3000)],
        "reset receiver": ["--resetNum", str(T // 6000), "--reset_receiver"],
        "PBF": ["--resetNum", str(T // 3000), "--forget_sender", "--sender_keep_perc", "0.1", "--forget_receiver",
                "--receiver_keep_perc", "0.1", "--weight_mask", "--same_mask"],
    }


def _mean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if x.size and np.isfinite(x).any() else math.nan


def game_run_record(folder: Path) -> dict:
    topo = json.loads((folder / "topo.json").read_text())
    rec = {
        "trainAcc": np.load(folder / "trainAcc.npy"),
        "topo_iters": topo["Iter"],
        "topo": [math.nan if v is None else v for v in topo["Topographic Similarity"]],
        "topo_new": [math.nan if v is None else v for v in topo["New Topographic Similarity"]],
        "summary": json.loads((folder / "summary.json").read_text()),
        "config": json.loads((folder / "config.json").read_text()),
    }
    if (folder / "evalAcc.npy").exists():
        rec["eot_curve"] = np.load(folder / "evalAcc.npy")[-1].mean(0)
    return rec


def analyse_game(label: str, rec: dict) -> dict:
    """The R3-R5 quantities for one run."""
    acc, cfg = rec["trainAcc"], rec["config"]
    period = cfg["resetIter"]
    T = len(acc)
    out = {
        "acc 4000-6000": _mean(acc[4000:6000]),
        "acc last 1000": _mean(acc[-1000:]),
        "topo initial": rec["topo"][0],
        "topo final": rec["topo"][-1],
        "topo mean second half": _mean([v for it, v in zip(rec["topo_iters"], rec["topo"]) if it >= T // 2]),
    }
    if rec.get("eot_curve") is not None:
        c = rec["eot_curve"]
        out["eot mean first 100"] = _mean(c[:100])
        out["eot mean first 200"] = _mean(c[:200])
        out["eot mean all"] = _mean(c)
    if label != "no reset":
        events = list(range(period, T, period))
        drops, before, after, recovered, topo_changed = [], [], [], [], []
        for k, b in enumerate(events, start=1):
            pre, post = _mean(acc[b - 100:b]), _mean(acc[b + 1:b + 101])
            before.append(pre)
            after.append(post)
            drops.append(pre - post)
            nxt = min(b + period, T)
            recovered.append(_mean(acc[min(b + 900, nxt - 100):min(b + 1000, nxt)]))
            topo_changed.append(rec["topo"][k] != rec["topo_new"][k])
        out.update({
            "events": len(events),
            "acc 100 before event (mean)": _mean(before),
            "acc 100 after event (mean)": _mean(after),
            "min drop": float(min(drops)) if drops else math.nan,
            "acc 900-1000 after event (min)": float(min(recovered)) if recovered else math.nan,
            "acc before next event (min)": float(min(before[1:] + [_mean(acc[-100:])])) if events else math.nan,
            "topo changed by every event": bool(all(topo_changed)),
        })
    return out


def _train(argv: list[str]) -> None:
    train.main(argv)


def run_game(args) -> dict:
    out = Path(args.out_dir)
    todo, folders = [], {}
    for label, flags in regimes(args.trainIters).items():
        for seed in args.seeds:
            fname = f"{label.replace(' ', '_')}_seed{seed}"
            folder = out / fname
            folders.setdefault(label, []).append(folder)
            if not (folder / "summary.json").exists():
                argv = ["--fname", fname, "--seed", str(seed), "--no_wandb", "--trainIters", str(args.trainIters),
                        "--out_dir", str(out), "--device", args.device, "--eot_every", "0",
                        "--eot_receivers", str(args.eot_receivers), "--eot_iters", str(args.eot_iters),
                        "--overwrite", *flags]
                if args.quiet or args.jobs > 1:
                    argv.append("--quiet")
                todo.append(argv)
    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_train, todo))
    else:
        for argv in todo:
            _train(argv)
    results: dict[str, list[dict]] = {}
    for label, paths in folders.items():
        for folder in paths:
            rec = game_run_record(folder)
            rec["analysis"] = analyse_game(label, rec)
            results.setdefault(label, []).append(rec)
    plots.plot_regimes(results, out / "regimes.png")
    table = {}
    for label, recs in results.items():
        keys = recs[0]["analysis"].keys()
        table[label] = {k: _agg([r["analysis"][k] for r in recs]) for k in keys}
        table[label]["per seed topo final"] = [r["analysis"]["topo final"] for r in recs]
        table[label]["per seed topo mean second half"] = [r["analysis"]["topo mean second half"] for r in recs]
    return table


def _agg(values):
    if all(isinstance(v, bool) for v in values):
        return all(values)
    return _mean(values)


def run_mixed(args) -> dict:
    out = Path(args.out_dir) / "mixed"
    configs = {"C6 random re-init": ["--fname", "new_rand_reinit"],
               "C7 init-magnitude zero": ["--fname", "same_weight_zero", "--same_mask", "--weight_mask", "--reset_to_zero"]}
    table, curves = {}, {}
    for label, flags in configs.items():
        sums, recs = [], []
        for seed in args.mixed_seeds:
            argv = ["--group_vars", "same_mask", "weight_mask", "reset_to_zero", "keep_perc", "seed", "trainIters",
                    "train_with_reset", "reset_every", "--seed", str(seed), "--keep_perc", "0.5",
                    "--trainIters", str(args.mixed_iters), "--out_dir", str(out), "--device", args.device,
                    "--no_wandb", "--overwrite", "--quiet", *flags]
            parsed = mixed_language.build_parser().parse_args(argv)
            folder = mixed_language.run_folder(parsed)
            if not (folder / "summary.json").exists():
                mixed_language.main(argv)
            sums.append(json.loads((folder / "summary.json").read_text()))
            recs.append(read_metrics(folder))
        keys = [k for k in sums[0] if isinstance(sums[0][k], float)]
        table[label] = {k: _mean([s[k] for s in sums]) for k in keys}
        table[label]["per seed copy gap"] = [s["copy gap (Perfect - Permuted)"] for s in sums]
        table[label]["seeds where Perfect reaches 100 first"] = sum(
            1 for s in sums if (s["first iteration Exact Match Perfect = 100"] or 10**9)
            < (s["first iteration Exact Match Permuted = 100"] or 10**9))
        curves[label] = recs
    plots.plot_mixed_seeds(out / "mixed_copy_accuracy.png", curves)
    return table


def main(argv=None) -> dict | None:
    args = build_parser().parse_args(argv)
    if not args.skip_game and args.trainIters % 6000:
        raise UserError(f"--trainIters must be a multiple of 6000 (reset every 6000, evaluate every 3000), got {args.trainIters}")
    if cli.maybe_print_config(args):
        return None
    summary = {"config": cli.config_dict(args)}
    if not args.skip_game:
        summary["game"] = run_game(args)
    if not args.skip_mixed:
        summary["mixed"] = run_mixed(args)
    from forgetting_common.atomic import atomic_write_json

    atomic_write_json(Path(args.out_dir) / "reproduction.json", summary)
    print(json.dumps(summary, indent=1, default=str))
    return summary
