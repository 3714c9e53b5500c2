"""A small real-data reproduction of the paper's MNIST findings (spec section 14), end to end.

It drives the real command lines (``run_mnist.py`` / ``order_examples_by_forgetting.py``
in-process) on the first ``--train_limit`` real MNIST training images and measures:

1. the unforgettable fraction on MNIST vs permuted MNIST (paper Fig. 1: 91.7% vs 75.3%);
2. test accuracy after removing the least-forgotten examples vs a random subset of the same size
   (paper Fig. 6);
3. whether forgetting counts find the examples whose labels were changed (paper Fig. 3: 20%
   label noise; no noisy example is unforgettable). The MNIST script has no label-noise flag in
   the original, so this run goes through the library with ``noise_percent_labels`` set.

Usage (the README's reproduction command)::

    python -m example_forgetting.reproduce --data_root ../shared/data --output_dir repro

Runs whose statistics file is already complete are reused, so an interrupted reproduction can
be restarted with the same command.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from forgetting_common import run_main
from forgetting_common.atomic import atomic_write_json, atomic_write_text
from forgetting_common.cli import OneLineErrorParser, add_quiet_flag

from example_forgetting.cli import mnist_main, mnist_parser, order_main
from example_forgetting.naming import (
    CHANGED_LABELS_SUFFIX,
    MNIST_NAME_ARGS,
    STATS_SUFFIX,
    save_fname,
)
from example_forgetting.stats import order_examples, run_forgetting

PAPER = {
    "unforgettable_mnist": 0.917,
    "unforgettable_permuted_mnist": 0.753,
    "unforgettable_cifar10": 0.313,
}


def _parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="python -m example_forgetting.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--data_root", default=None, help="root holding MNIST/raw (default: $FORGETTING_DATA)")
    p.add_argument("--data_source", default="real", choices=("real", "synthetic"))
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_limit", type=int, default=4000)
    p.add_argument("--test_limit", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--stats_seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--removal_seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--removal_n", type=int, nargs="+", default=[1000, 2000, 3000])
    p.add_argument("--noise_percent_labels", type=int, default=20)
    p.add_argument("--removal_dropout", choices=("yes", "no"), default="yes",
                   help="train the removal runs with dropout, as the README's Figure 6 commands do")
    p.add_argument("--removal_baseline", choices=("yes", "no"), default="yes",
                   help="also train each removal seed on the full data (remove_n 0)")
    p.add_argument("--device", default="auto")
    add_quiet_flag(p)
    return p


def _run_mnist(common: list[str], extra: list[str], output_dir: Path, epochs: int) -> dict:
    """One ``run_mnist.py`` run (reused if its stats file is complete); returns its summary."""
    argv = [*extra, *common, "--output_dir", str(output_dir)]
    args = mnist_parser().parse_args(argv)
    path = output_dir / (save_fname(vars(args), MNIST_NAME_ARGS) + STATS_SUFFIX)
    if path.exists():
        with open(path, "rb") as handle:
            stats = pickle.load(handle)
        if len(stats["test"][1]) == epochs:
            return _summary(stats)
    mnist_main([*argv, "--overwrite"])
    with open(path, "rb") as handle:
        return _summary(pickle.load(handle))


def _summary(stats: dict) -> dict:
    train, epochs = stats["train"][1], len(stats["test"][1])
    per_epoch = len(train) // max(1, epochs)  # minibatches per epoch
    return {
        "best_running_train_acc": max(train),  # what __best_acc.txt records (a running mean)
        "best_train_acc": max(train[per_epoch - 1 :: per_epoch]),  # best end-of-epoch train acc
        "best_test_acc": max(stats["test"][1]),
        "final_test_acc": stats["test"][1][-1],
        "train_size": sum(1 for k in stats if not isinstance(k, str)),
    }


def _stats_runs(directory: Path, dataset: str, epochs: int) -> list:
    runs = []
    for path in sorted(directory.glob(f"dataset_{dataset}__no_dropout_True__seed_*__sorting_file_none__remove_n_0__keep_lowest_n_0{STATS_SUFFIX}")):
        with open(path, "rb") as handle:
            runs.append(run_forgetting(pickle.load(handle), epochs, source=str(path)))
    return runs


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """ROC-AUC of ``score`` separating positives from negatives (ties count one half)."""
    pos = np.asarray(scores_pos, dtype=np.float64)
    neg = np.asarray(scores_neg, dtype=np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="stable")
    ranks = np.empty(len(allv))
    sorted_vals = allv[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def reproduce(argv: Sequence[str] | None = None) -> dict:
    a = _parser().parse_args(argv)
    out = Path(a.output_dir)
    t0 = time.time()
    common = ["--epochs", str(a.epochs), "--train_limit", str(a.train_limit), "--test_limit", str(a.test_limit),
              "--data_source", a.data_source, "--device", a.device, "--no_download", "--quiet", "--no_tensorboard"]
    if a.data_root:
        common += ["--data_root", a.data_root]
    results: dict = {"config": vars(a), "paper": PAPER}

    # 1. Statistics runs and sorting, MNIST and permuted MNIST (README's first two commands).
    fractions = {}
    for dataset in ("mnist", "permuted_mnist"):
        d = out / f"{dataset}_results"
        full = {}
        for s in a.stats_seeds:
            full[s] = _run_mnist(common, ["--dataset", dataset, "--no_dropout", "--seed", str(s)], d, a.epochs)
        sorted_path = d / f"{dataset}_sorted.pkl"
        order_main(["--output_dir", str(d), "--output_name", f"{dataset}_sorted", "--input_dir", str(d),
                    "--input_fname_args", "dataset", dataset, "no_dropout", "True", "sorting_file", "none",
                    "remove_n", "0", "keep_lowest_n", "0", "--epochs", str(a.epochs), "--overwrite", "--quiet"])
        runs = _stats_runs(d, dataset, a.epochs)
        ordering = order_examples(runs, a.epochs)
        n = len(ordering.indices)
        # align every run's counts by example id (each pickle lists ids in its own shuffle order)
        counts = [r.counts(a.epochs)[np.argsort(r.ids, kind="stable")] for r in runs]
        pearson = [float(np.corrcoef(counts[i], counts[j])[0, 1])
                   for i in range(len(counts)) for j in range(i + 1, len(counts))]
        fractions[dataset] = ordering.unforgettable / n
        results[dataset] = {
            "runs": full,
            "n_train": n,
            "unforgettable": ordering.unforgettable,
            "unforgettable_fraction": ordering.unforgettable / n,
            "never_learned_any_run": int(sum((~r.learned).sum() for r in runs)),
            "mean_seed_pair_pearson": float(np.mean(pearson)) if pearson else None,
            "sorted_file": str(sorted_path),
        }

    # 2. Removal on MNIST (README's Figure 6 command: with dropout, unless told otherwise).
    d = out / "mnist_results"
    removal = {"full": {}, "selected": {}, "random": {}}
    drop = [] if a.removal_dropout == "yes" else ["--no_dropout"]
    for s in a.removal_seeds:
        base = ["--dataset", "mnist", "--seed", str(s), *drop, "--input_dir", str(d)]
        if a.removal_baseline == "yes":
            removal["full"][s] = _run_mnist(common, [*base], d, a.epochs)
        for r in a.removal_n:
            for k, arm in ((0, "selected"), (-1, "random")):
                res = _run_mnist(common, [*base, "--sorting_file", "mnist_sorted", "--remove_n", str(r),
                                          "--keep_lowest_n", str(k)], d, a.epochs)
                removal[arm].setdefault(r, {})[s] = res
    table = []
    full = [v["best_test_acc"] for v in removal["full"].values()]
    full_mean = float(np.mean(full)) if full else None
    for r in a.removal_n:
        sel = float(np.mean([v["best_test_acc"] for v in removal["selected"][r].values()]))
        rnd = float(np.mean([v["best_test_acc"] for v in removal["random"][r].values()]))
        table.append({"remove_n": r, "fraction": r / a.train_limit, "selected": sel, "random": rnd})
    results["removal"] = {"full_best_test_acc_mean": full_mean, "table": table}

    # 3. Label noise through the library (the original MNIST script has no flag for it).
    nd = out / "noise"
    nd.mkdir(parents=True, exist_ok=True)
    nargs = mnist_parser().parse_args(["--dataset", "mnist", "--no_dropout", "--seed", str(a.stats_seeds[0]),
                                       *common, "--output_dir", str(nd), "--overwrite"])
    nargs.noise_percent_labels = a.noise_percent_labels
    name = save_fname(vars(nargs), MNIST_NAME_ARGS)
    stats_file, labels_file = nd / (name + STATS_SUFFIX), nd / (name + CHANGED_LABELS_SUFFIX)
    noisy_stats = None
    if stats_file.exists() and labels_file.exists():  # reuse a complete earlier run
        with open(stats_file, "rb") as handle:
            noisy_stats = pickle.load(handle)
        if len(noisy_stats["test"][1]) != a.epochs:
            noisy_stats = None
    if noisy_stats is None:
        from example_forgetting.train import run_training

        noisy_stats = run_training(nargs, "mnist").recorder.to_dict()
    changed_ids = {int(line.split()[0]) for line in labels_file.read_text().splitlines() if line.strip()}
    noisy_run = run_forgetting(noisy_stats, a.epochs)
    counts = noisy_run.as_mapping(a.epochs)
    results["label_noise_run"] = _summary(noisy_stats)
    noisy = np.array([counts[i] for i in changed_ids])
    clean = np.array([c for i, c in counts.items() if i not in changed_ids])
    clean_counts_of_noisy = None
    first_mnist = _stats_runs(out / "mnist_results", "mnist", a.epochs)
    if first_mnist:
        mapping = first_mnist[0].as_mapping(a.epochs)
        clean_counts_of_noisy = float(np.mean([mapping[i] for i in changed_ids])) if changed_ids else None
    results["label_noise"] = {
        "percent": a.noise_percent_labels,
        "n_noisy": len(noisy),
        "auc_noisy_vs_clean": auc(noisy, clean),
        "noisy_unforgettable_fraction": float((noisy == 0).mean()) if len(noisy) else None,
        "clean_unforgettable_fraction": float((clean == 0).mean()) if len(clean) else None,
        "mean_count_noisy": float(noisy.mean()) if len(noisy) else None,
        "mean_count_clean": float(clean.mean()) if len(clean) else None,
        "mean_count_same_examples_clean_labels": clean_counts_of_noisy,
        "noisy_never_learned_fraction": float((noisy == a.epochs).mean()) if len(noisy) else None,
    }
    results["seconds"] = time.time() - t0
    atomic_write_json(out / "summary.json", results)
    text = render(results)
    atomic_write_text(out / "summary.md", text)
    print(text)
    return results


def render(r: dict) -> str:
    lines = ["| finding | ours | paper (full scale) |", "|---|---|---|"]
    for ds in ("mnist", "permuted_mnist"):
        x = r[ds]
        lines.append(f"| unforgettable {ds} ({len(x['runs'])} seeds, {x['n_train']} ex.) | "
                     f"{x['unforgettable']} ({100 * x['unforgettable_fraction']:.1f}%) | "
                     f"{100 * PAPER['unforgettable_' + ds]:.1f}% |")
        lines.append(f"| {ds}: stats runs, mean best epoch train acc / best test acc | "
                     f"{np.mean([v['best_train_acc'] for v in x['runs'].values()]):.2f}% / "
                     f"{np.mean([v['best_test_acc'] for v in x['runs'].values()]):.2f}% | "
                     f"{'- / 99.2%' if ds == 'mnist' else '-'} |")
        if x["mean_seed_pair_pearson"] is not None:
            lines.append(f"| {ds}: seed-to-seed Pearson of counts | {x['mean_seed_pair_pearson']:.3f} | 0.892 (CIFAR-10) |")
    rem = r["removal"]
    if rem["full_best_test_acc_mean"] is not None:
        lines.append(f"| removal: full data, mean best test acc | {rem['full_best_test_acc_mean']:.2f}% | - |")
    for row in rem["table"]:
        lines.append(f"| removal {row['remove_n']} ({100 * row['fraction']:.0f}%): selected / random | "
                     f"{row['selected']:.2f}% / {row['random']:.2f}% | selected >= random (Fig. 6) |")
    ln = r["label_noise"]
    lines.append(f"| {ln['percent']}% label noise: AUC of counts, noisy vs clean | {ln['auc_noisy_vs_clean']:.3f} | "
                 "noisy examples most forgotten (Fig. 3) |")
    lines.append(f"| noisy / clean examples unforgettable | {100 * ln['noisy_unforgettable_fraction']:.1f}% / "
                 f"{100 * ln['clean_unforgettable_fraction']:.1f}% | 0% of noisy (Fig. 3) |")
    return "\n".join(lines) + f"\n\n(total {r['seconds']:.0f} s)\n"


def main() -> None:
    run_main(reproduce, prog="python -m example_forgetting.reproduce")


if __name__ == "__main__":
    main()
    sys.exit(0)
