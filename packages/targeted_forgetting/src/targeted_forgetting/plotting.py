"""The paper-style figure: per-group accuracy before and after forgetting over training."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from forgetting_common.atomic import atomic_write_bytes

GROUP_NAMES = {False: ("clean labels", "random labels"), True: ("easy", "hard (10% lowest margin)")}


def _series(records: Sequence[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=float)


def summarize(records: Sequence[dict], start_iter: float = 0.0) -> dict[str, float]:
    """Mean per-group accuracy before/after forgetting over probes with ``Iter > start_iter``.

    NaN probes (an empty group) are left out of the means. ``drop`` = before − after (points);
    ``retention`` = after / before.
    """
    chosen = [r for r in records if r["Iter"] > start_iter]
    out: dict[str, float] = {"probes": len(chosen), "from_iter": start_iter}
    for group, (before_key, after_key) in {
        "group0": ("True Label Accuracy", "Copy True Label Accuracy"),
        "group1": ("Random Label Accuracy", "Copy Random Label Accuracy"),
    }.items():
        before = _series(chosen, before_key)
        after = _series(chosen, after_key)
        with np.errstate(all="ignore"):
            b = float(np.nanmean(before)) if np.isfinite(before).any() else math.nan
            a = float(np.nanmean(after)) if np.isfinite(after).any() else math.nan
        out[f"{group}_before"] = b
        out[f"{group}_after"] = a
        out[f"{group}_drop"] = b - a
        out[f"{group}_retention"] = a / b if b else math.nan
    out["drop_gap"] = out["group1_drop"] - out["group0_drop"]
    return out


def plot_runs(
    runs: Sequence[Sequence[dict]], path: str | Path, *, margin_groups: bool = False, title: str = ""
) -> Path:
    """Write a PNG: left, group accuracy before (solid) / after (dashed) forgetting vs iteration
    (mean over runs, shaded min–max); right, mean drop per group over the second half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = GROUP_NAMES[bool(margin_groups)]
    fig, (ax, bar) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    length = min(len(r) for r in runs)
    iters = _series(runs[0][:length], "Iter")
    colours = ("tab:blue", "tab:red")
    keys = (("True Label Accuracy", "Copy True Label Accuracy"),
            ("Random Label Accuracy", "Copy Random Label Accuracy"))
    for colour, name, (bkey, akey) in zip(colours, names, keys):
        for key, style, label in ((bkey, "-", "before"), (akey, "--", "after forgetting")):
            stack = np.stack([_series(r[:length], key) for r in runs])
            with np.errstate(all="ignore"):
                mean = np.nanmean(stack, axis=0)
            ax.plot(iters, mean, style, color=colour, label=f"{name}, {label}", linewidth=1.2)
            if len(runs) > 1:
                ax.fill_between(iters, np.nanmin(stack, 0), np.nanmax(stack, 0), color=colour, alpha=0.12)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("accuracy on the training batch (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "per-group accuracy before / after each forgetting probe", fontsize=10)
    half = float(iters[-1]) / 2 if len(iters) else 0.0
    sums = [summarize(r, half) for r in runs]
    drops = [[s["group0_drop"] for s in sums], [s["group1_drop"] for s in sums]]
    with np.errstate(all="ignore"):
        means = [float(np.nanmean(d)) for d in drops]
    bar.bar([0, 1], means, color=colours)
    for i, d in enumerate(drops):
        bar.scatter([i] * len(d), d, color="k", s=8, zorder=3)
    bar.set_xticks([0, 1], [n.split(" (")[0] for n in names])
    bar.set_ylabel("accuracy drop, 2nd half (points)")
    bar.set_title("before − after", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
