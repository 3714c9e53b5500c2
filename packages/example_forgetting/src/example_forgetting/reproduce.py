"""The label-noise finding (paper Fig. 3) on real MNIST: are the changed labels the most forgotten?

The paper measures it on CIFAR-10 (``run_cifar.py --noise_percent_labels 20``); the original MNIST
script has no label-noise flag, so this driver builds a ``run_mnist.py`` configuration through
the script's own parser and sets the library's ``noise_percent_labels`` on it. It trains that run
and the same run with clean labels (same seed), then measures how well the forgetting counts
separate the changed labels (ROC-AUC) and how many of each kind are unforgettable. The other
MNIST findings (Fig. 1, Fig. 6, seed stability) are the claims' sweeps of the original scripts:
``uv run forgetting reproduce example_forgetting.unforgettable_mnist --scale cpu``.

Usage (the recorded result of ``example_forgetting.noisy_most_forgotten``)::

    python -m example_forgetting.reproduce --data_root ../../../shared/data --output_dir /tmp/ef_repro

A run whose statistics file is already complete is reused, so an interrupted reproduction can
be restarted with the same command.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from forgetting_common import run_main
from forgetting_common.atomic import atomic_write_json, atomic_write_text
from forgetting_common.cli import OneLineErrorParser, add_quiet_flag
from forgetting_common.safeload import load_pickle

from example_forgetting.cli import MnistConfig, parse_mnist
from example_forgetting.naming import CHANGED_LABELS_SUFFIX, STATS_SUFFIX
from example_forgetting.stats import run_forgetting


def _parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="python -m example_forgetting.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--data_root", default=None, help="root holding MNIST/raw (default: $FORGETTING_DATA)")
    p.add_argument("--data_source", default="real", choices=("real", "synthetic"))
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train_limit", type=int, default=4000)
    p.add_argument("--test_limit", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noise_percent_labels", type=int, default=20)
    p.add_argument("--device", default="auto")
    add_quiet_flag(p)
    return p


def _stats(config: MnistConfig) -> dict:
    """The statistics of the run ``config`` describes: read if complete, else trained (and written)."""
    from example_forgetting.train import train

    path = Path(config.output_dir) / (config.save_fname + STATS_SUFFIX)
    if path.exists():
        stats = load_pickle(path, what="statistics file")
        if len(stats["test"][1]) == config.epochs:
            return stats
    return train(replace(config, overwrite=True)).recorder.to_dict()


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
    run_mnist = ["--dataset", "mnist", "--no_dropout", "--seed", str(a.seed), "--epochs", str(a.epochs),
                 "--train_limit", str(a.train_limit), "--test_limit", str(a.test_limit),
                 "--data_source", a.data_source, "--device", a.device, "--no_download", "--quiet", "--no_tensorboard"]
    if a.data_root:
        run_mnist += ["--data_root", a.data_root]
    clean_config, _ = parse_mnist([*run_mnist, "--output_dir", str(out / "clean")])
    noisy_config, _ = parse_mnist([*run_mnist, "--output_dir", str(out / "noise")])
    noisy_config = replace(noisy_config, noise_percent_labels=a.noise_percent_labels)

    clean_stats = _stats(clean_config)
    noisy_stats = _stats(noisy_config)
    labels_file = out / "noise" / (noisy_config.save_fname + CHANGED_LABELS_SUFFIX)
    changed_ids = {int(line.split()[0]) for line in labels_file.read_text().splitlines() if line.strip()}
    counts = run_forgetting(noisy_stats, a.epochs).as_mapping(a.epochs)
    clean_counts = run_forgetting(clean_stats, a.epochs).as_mapping(a.epochs)
    noisy = np.array([counts[i] for i in changed_ids])
    clean = np.array([c for i, c in counts.items() if i not in changed_ids])
    results = {
        "config": vars(a),
        "clean_run": _summary(clean_stats),
        "label_noise_run": _summary(noisy_stats),
        "label_noise": {
            "percent": a.noise_percent_labels,
            "n_noisy": len(noisy),
            "auc_noisy_vs_clean": auc(noisy, clean),
            "noisy_unforgettable_fraction": float((noisy == 0).mean()) if len(noisy) else None,
            "clean_unforgettable_fraction": float((clean == 0).mean()) if len(clean) else None,
            "mean_count_noisy": float(noisy.mean()) if len(noisy) else None,
            "mean_count_clean": float(clean.mean()) if len(clean) else None,
            # the changed examples in the run with their true labels
            "mean_count_same_examples_clean_labels": (float(np.mean([clean_counts[i] for i in changed_ids]))
                                                      if changed_ids else None),
            "noisy_never_learned_fraction": float((noisy == a.epochs).mean()) if len(noisy) else None,
        },
    }
    results["seconds"] = time.time() - t0
    atomic_write_json(out / "summary.json", results)
    text = render(results)
    atomic_write_text(out / "summary.md", text)
    print(text)
    return results


def render(r: dict) -> str:
    ln = r["label_noise"]
    lines = ["| finding | ours | paper (CIFAR-10, full scale) |", "|---|---|---|",
             f"| best test acc, clean / {ln['percent']}% noisy labels | {r['clean_run']['best_test_acc']:.2f}% / "
             f"{r['label_noise_run']['best_test_acc']:.2f}% | - |",
             f"| {ln['percent']}% label noise: AUC of counts, noisy vs clean | {ln['auc_noisy_vs_clean']:.3f} | "
             "noisy examples most forgotten (Fig. 3) |",
             f"| noisy / clean examples unforgettable | {100 * ln['noisy_unforgettable_fraction']:.1f}% / "
             f"{100 * ln['clean_unforgettable_fraction']:.1f}% | 0% of noisy (Fig. 3) |"]
    return "\n".join(lines) + f"\n\n(total {r['seconds']:.0f} s)\n"


def main() -> None:
    run_main(reproduce, prog="python -m example_forgetting.reproduce")


if __name__ == "__main__":
    main()
