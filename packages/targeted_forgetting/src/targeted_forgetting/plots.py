"""The paper-style figure (per-group accuracy before and after forgetting over training), its
summary numbers, and the ``plot_mixed_groups.py`` command over finished run folders."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from forgetting_common.atomic import json_clean
from forgetting_common.cli import OneLineErrorParser, add_print_config_flag, maybe_print_config
from forgetting_common.errors import UserError
from forgetting_common.figures import save_figure
from forgetting_common.runlog import read_metrics

GROUP_NAMES = {False: ("clean labels", "random labels"), True: ("easy", "hard (10% lowest margin)")}


def _series(records: Sequence[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in records], dtype=float)


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean without NaNs; NaN (silently) where a group was empty in every probe."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


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
        b = float(_nanmean(before))
        a = float(_nanmean(after))
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
            mean = _nanmean(stack, axis=0)
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
    means = [float(_nanmean(np.asarray(d, dtype=float))) for d in drops]
    bar.bar([0, 1], means, color=colours)
    for i, d in enumerate(drops):
        bar.scatter([i] * len(d), d, color="k", s=8, zorder=3)
    bar.set_xticks([0, 1], [n.split(" (")[0] for n in names])
    bar.set_ylabel("accuracy drop, 2nd half (points)")
    bar.set_title("before − after", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- plot_mixed_groups.py
def make_plot_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="plot_mixed_groups.py",
                           description="Per-group accuracy before/after forgetting, averaged over runs.")
    p.add_argument("runs", nargs="+", help="run folders written by mixed_group_training.py")
    p.add_argument("--out", required=True, help="PNG to write (refuses to overwrite without --force)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--title", default="")
    p.add_argument("--from_iter", type=float, default=None,
                   help="summary over probes after this iteration (default: the second half)")
    add_print_config_flag(p)
    return p


def load_run(folder: str) -> tuple[list[dict], dict]:
    path = Path(folder)
    if not (path / "metrics.jsonl").is_file() or not (path / "config.json").is_file():
        raise UserError(f"{folder} is not a run folder (expected config.json and metrics.jsonl in it)")
    records = [r for r in read_metrics(path) if "Iter" in r]
    if not records:
        raise UserError(f"{folder}/metrics.jsonl holds no probe records")
    config = json.loads((path / "config.json").read_text())
    return records, config


def plot_main(argv: list[str] | None = None) -> dict:
    args = make_plot_parser().parse_args(argv)
    if maybe_print_config(args):
        return {}
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it or choose another --out")
    loaded = [load_run(folder) for folder in args.runs]
    margins = {bool(cfg.get("margin_groups")) for _, cfg in loaded}
    if len(margins) > 1:
        raise UserError("the runs mix --margin_groups and label-noise groups; plot them separately")
    runs = [records for records, _ in loaded]
    plot_runs(runs, out, margin_groups=margins.pop(), title=args.title)
    result = {}
    for folder, records in zip(args.runs, runs):
        start = args.from_iter if args.from_iter is not None else records[-1]["Iter"] / 2
        result[folder] = summarize(records, start)
    keys = [k for k in next(iter(result.values())) if k.startswith("group") or k == "drop_gap"]
    mean = {k: sum(r[k] for r in result.values()) / len(result) for k in keys}
    result["mean"] = mean
    print(json.dumps(json_clean(result), indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return result
