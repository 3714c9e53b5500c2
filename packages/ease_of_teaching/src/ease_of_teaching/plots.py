"""PNG figures: per-run curves, the three-regime comparison, and the mixed-language copy curves.

Figures are written through ``forgetting_common.figures.save_figure`` (atomic, then closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from forgetting_common.figures import save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(values) == 0:
        return values
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_run(out: Path, train_acc, topo_iters, topo, topo_new, reset_iter, eval_acc, eval_meta, title="") -> None:
    """``accuracy.png``, ``topographic_similarity.png`` and (if any) ``ease_of_teaching.png``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    window = max(1, min(100, len(train_acc) // 20))
    ax.plot(np.arange(len(train_acc)), smooth(train_acc, window), lw=1)
    for b in range(reset_iter, len(train_acc), reset_iter):
        ax.axvline(b, color="grey", lw=0.4, alpha=0.5)
    ax.set(xlabel="iteration", ylabel=f"training accuracy % (mean of {window})", title=title, ylim=(0, 100))
    _save(fig, out / "accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(topo_iters, topo, "o-", ms=3, label="before intervention")
    new = np.asarray(topo_new, dtype=float)
    if np.isfinite(new).any():
        ax.plot(topo_iters, new, "x", ms=4, label="after intervention")
    ax.set(xlabel="iteration", ylabel="topographic similarity", title=title)
    ax.legend()
    _save(fig, out / "topographic_similarity.png")

    if eval_acc:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for acc, meta in zip(eval_acc, eval_meta):
            ax.plot(np.arange(1, acc.shape[1] + 1), acc.mean(0), lw=1, label=f"generation {meta['generation']}")
        ax.set(xlabel="iteration of the fresh receiver", ylabel="accuracy %", ylim=(0, 100),
               title=f"ease of teaching {title}")
        ax.legend(fontsize=7)
        _save(fig, out / "ease_of_teaching.png")


def plot_regimes(runs: dict[str, Sequence[dict]], out_png: Path) -> Path:
    """Compare regimes (label -> list of per-seed run records) in one figure of three panels.

    A record holds ``trainAcc`` (array), ``topo_iters``, ``topo`` and optional ``eot_curve``.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, recs in runs.items():
        accs = np.stack([smooth(r["trainAcc"], 200) for r in recs])
        axes[0].plot(accs.mean(0), lw=1, label=label)
        topo = np.array([r["topo"] for r in recs], dtype=float)
        axes[1].plot(recs[0]["topo_iters"], np.nanmean(topo, 0), "o-", ms=3, label=label)
        curves = [r["eot_curve"] for r in recs if r.get("eot_curve") is not None]
        if curves:
            axes[2].plot(np.arange(1, len(curves[0]) + 1), np.mean(curves, 0), lw=1, label=label)
    axes[0].set(xlabel="iteration", ylabel="training accuracy % (smoothed)", ylim=(0, 100))
    axes[1].set(xlabel="iteration", ylabel="topographic similarity (seed mean)")
    axes[2].set(xlabel="fresh-receiver iteration", ylabel="ease of teaching: accuracy %", ylim=(0, 100))
    for ax in axes:
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_mixed(out_png: Path, records: Sequence[dict], title: str = "") -> Path:
    """Exact match of the compositional and permuted halves, before (solid) and after (dashed) forgetting."""
    plt = _plt()
    it = [r["Iter"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key, color in (("Perfect", "tab:blue"), ("Permuted", "tab:red")):
        ax.plot(it, [r[f"Exact Match {key}"] for r in records], color=color, lw=1, label=f"{key} (live)")
        ax.plot(it, [r[f"Copy Exact Match {key}"] for r in records], color=color, lw=1, ls="--",
                label=f"{key} (forgotten copy)")
    ax.set(xlabel="iteration", ylabel="exact match %", ylim=(-2, 102), title=title)
    ax.legend(fontsize=8)
    return _save(fig, out_png)


def plot_mixed_seeds(out_png: Path, runs: dict[str, Sequence[Sequence[dict]]]) -> Path:
    """Seed-mean copy-accuracy curves for several configurations (one panel each)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 3.5), squeeze=False)
    for ax, (label, seeds) in zip(axes[0], runs.items()):
        it = [r["Iter"] for r in seeds[0]]
        for key, color in (("Perfect", "tab:blue"), ("Permuted", "tab:red")):
            live = np.mean([[r[f"Exact Match {key}"] for r in s] for s in seeds], 0)
            copy = np.mean([[r[f"Copy Exact Match {key}"] for r in s] for s in seeds], 0)
            ax.plot(it, live, color=color, lw=1, label=f"{key} (live)")
            ax.plot(it, copy, color=color, lw=1, ls="--", label=f"{key} (forgotten copy)")
        ax.set(xlabel="iteration", ylabel="exact match % (seed mean)", ylim=(-2, 102), title=label)
        ax.legend(fontsize=7)
    return _save(fig, out_png)
