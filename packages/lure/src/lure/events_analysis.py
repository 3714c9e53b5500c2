"""The cross-paper analysis ``lure.events_unlearn_relearn``: does LURE's unlearning step hit the
hard examples? Toneva et al.'s forgetting events across LURE's learn / unlearn / relearn states,
against warm start with the same schedule, read from ``LURE_main.py --track forgetting,margin,ece``
runs (their ``tracked.npz``, see :mod:`lure.tracking`).

For every state change ``k−1 → k`` (``k ≥ 2``) and the examples of the earlier chunks:

* *the unlearning step* (eval mode, no augmentation): an example is hit when state ``k−1``'s
  selected model gets it right and state ``k``'s starting model (after SNIP re-initialisation)
  gets it wrong. Warm start has no step: its starting model is the previous selected model, so
  its value is 0 by construction (a control);
* *the state change* (Toneva's rule, training presentations): an example is forgotten at the
  change when it was right at its latest presentation in state ``k−1`` and wrong at its first in
  state ``k`` (each example is presented once per epoch, so its event in the state's first
  epoch is this one); measured alike for both methods;
* *relearned*: a hit / forgotten example that state ``k``'s selected model gets right;
* *hard*: its forgetting events so far (``events_end`` of ``k−1``) and its margin before the
  change (eval margin of the selected model for the step, training margin at the latest
  presentation for the change); AUROC = the chance that a hit example ranks harder than a
  spared one (ties half), 0.5 = unrelated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from forgetting_common.figures import save_figure
from forgetting_common.trackers import COMPACT_FILE, read_npz

METHODS = (("lure", "LURE (SNIP unlearning)", "tab:blue"), ("warm", "warm start (same schedule)", "tab:orange"))
TRACK = ["--track", "forgetting,margin,ece"]
FIELDS = ("correct_start", "correct_end", "margin_end", "events_first_epoch", "events_end", "last_end",
          "train_margin_end")
EVENT_BINS = ("0", "1", "2", "3+")
MARGIN_BINS = 5  # quintiles of the margin before the change, lowest first


def read_events(run: dict, out: Path) -> dict:
    """One run's per-state snapshots (lists, NaN margins of unevaluated examples as 0) and its final accuracy."""
    arrays = read_npz(out / COMPACT_FILE)
    missing = [f for f in FIELDS if f"states.{f}" not in arrays]
    if missing:
        raise ValueError(f"{out / COMPACT_FILE} has no states.{missing[0]}: the run needs --track forgetting,margin")
    results = json.loads((out / "results.json").read_text())
    values: dict = {"final_test_acc": results["final_test_acc"], "examples": int(arrays["forgetting.ids"].shape[0]),
                    "events_total": int(arrays["forgetting.events"].sum())}
    for field in FIELDS:
        a = np.nan_to_num(arrays[f"states.{field}"].astype(np.float64), nan=0.0)
        values[field] = [[float(x) for x in row] if field.startswith(("margin", "train_margin")) else
                         [int(x) for x in row] for row in a]
    return values


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½ P(equal); NaN without both classes."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    uniq, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first copy
    ranks = (first + (counts + 1) / 2.0)[inverse]  # mid-ranks, 1-based
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def transitions(v: dict) -> list[dict]:
    """Per state change k−1 → k: the eligible examples, who was hit / forgotten / relearned, how hard."""
    a = {f: np.asarray(v[f]) for f in FIELDS}
    out = []
    for k in range(1, len(a["correct_end"])):
        before = a["correct_end"][k - 1]
        earlier = before >= 0  # trained in states < k
        step_pool = earlier & (before == 1)
        step_hit = step_pool & (a["correct_start"][k] == 0)
        change_pool = earlier & (a["last_end"][k - 1] == 1)
        change_hit = change_pool & (a["events_first_epoch"][k] - a["events_end"][k - 1] > 0)
        out.append({"k": k + 1, "step_pool": step_pool, "step_hit": step_hit, "change_pool": change_pool,
                    "change_hit": change_hit, "after": a["correct_end"][k] == 1, "events": a["events_end"][k - 1],
                    "eval_margin": a["margin_end"][k - 1], "train_margin": a["train_margin_end"][k - 1]})
    return out


def _fraction(num: int, den: int) -> float:
    return num / den if den else float("nan")


def run_measures(v: dict) -> dict[str, float]:
    """One run's numbers, the state changes pooled."""
    ts = transitions(v)
    m: dict[str, float] = {"final_test_acc": float(v["final_test_acc"]),
                           "events_per_example": v["events_total"] / max(1, v["examples"])}
    for kind, margin in (("step", "eval_margin"), ("change", "train_margin")):
        pool = np.concatenate([t[f"{kind}_pool"] for t in ts])
        hit = np.concatenate([t[f"{kind}_hit"] for t in ts])
        after = np.concatenate([t["after"] for t in ts])
        events = np.concatenate([t["events"] for t in ts])
        margins = np.concatenate([t[margin] for t in ts])
        m[f"{kind}_forgotten"] = _fraction(int(hit.sum()), int(pool.sum()))
        m[f"{kind}_relearned"] = _fraction(int((hit & after).sum()), int(hit.sum()))
        m[f"{kind}_auc_events"] = auroc(events[pool], hit[pool])
        m[f"{kind}_auc_low_margin"] = auroc(-margins[pool], hit[pool])
        m[f"{kind}_events_hit"] = float(events[hit].mean()) if hit.any() else float("nan")
        spared = pool & ~hit
        m[f"{kind}_events_spared"] = float(events[spared].mean()) if spared.any() else float("nan")
    return m


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")


def measure_events(values: dict) -> dict[str, float]:
    """Per method, the mean over seeds of :func:`run_measures` (NaN where no seed defines it)."""
    out: dict[str, float] = {}
    for method, _, _ in METHODS:
        runs = [run_measures(v) for v in values.values() if v["_labels"]["method"] == method]
        for key in (runs[0] if runs else {}):
            out[f"{method}_{key}"] = _mean([r[key] for r in runs])
    out["seeds"] = float(len({v["_labels"]["seed"] for v in values.values()}))
    return out


def summary_events(m: dict) -> str:
    return (f"LURE's unlearning made {m['lure_step_forgotten']:.1%} of the learned earlier examples wrong "
            f"({m['lure_step_relearned']:.0%} right again at the state's end; AUROC of prior events "
            f"{m['lure_step_auc_events']:.2f}, of low margin {m['lure_step_auc_low_margin']:.2f}); forgotten at the "
            f"state change (Toneva events): LURE {m['lure_change_forgotten']:.1%} vs warm {m['warm_change_forgotten']:.1%} "
            f"(AUROC low margin {m['lure_change_auc_low_margin']:.2f} vs {m['warm_change_auc_low_margin']:.2f}); "
            f"{m['seeds']:.0f} seed(s)")


def _binned(ts: list[dict], kind: str, margin: str) -> tuple[list[float], list[float]]:
    """Hit fraction per prior-events bin (0, 1, 2, 3+) and per margin quintile, the changes pooled."""
    by_events = np.zeros((2, len(EVENT_BINS)))
    by_margin = np.zeros((2, MARGIN_BINS))
    for t in ts:
        pool, hit = t[f"{kind}_pool"], t[f"{kind}_hit"]
        if not pool.any():
            continue
        ev = np.minimum(t["events"][pool], len(EVENT_BINS) - 1)
        np.add.at(by_events[0], ev, 1)
        np.add.at(by_events[1], ev, hit[pool])
        order = np.argsort(np.argsort(t[margin][pool], kind="stable"), kind="stable")  # 0 = lowest margin
        q = order * MARGIN_BINS // max(1, int(pool.sum()))
        np.add.at(by_margin[0], q, 1)
        np.add.at(by_margin[1], q, hit[pool])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (by_events[1] / by_events[0]).tolist(), (by_margin[1] / by_margin[0]).tolist()


def _column_means(rows) -> np.ndarray:
    """Mean over runs of each column, NaNs left out; NaN (a gap in the curve) where every run has NaN."""
    a = np.asarray(rows, dtype=np.float64)
    count = (~np.isnan(a)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(a, axis=0) / count


def figure_events(values: dict, measured: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    curves = []  # (label, colour, style, kind, margin field, method)
    for method, label, colour in METHODS:
        curves.append((f"{label}: at the state change", colour, "-", "change", "train_margin", method))
    curves.append(("LURE: the unlearning step (eval)", "tab:blue", "--", "step", "eval_margin", "lure"))
    for label, colour, style, kind, margin, method in curves:
        runs = [transitions(v) for v in values.values() if v["_labels"]["method"] == method]
        if not runs:
            continue
        states = [t["k"] for t in runs[0]]
        per_state = _column_means([[_fraction(int(t[f"{kind}_hit"].sum()), int(t[f"{kind}_pool"].sum())) for t in ts]
                                   for ts in runs])
        axes[0].set_xticks(states)
        axes[0].plot(states, per_state, style, color=colour, marker="o", label=label)
        ev, mg = zip(*[_binned(ts, kind, margin) for ts in runs])
        axes[1].plot(EVENT_BINS, _column_means(ev), style, color=colour, marker="o", label=label)
        axes[2].plot(range(1, MARGIN_BINS + 1), _column_means(mg), style, color=colour, marker="o", label=label)
    axes[0].set(xlabel="state k (change k−1 → k)", ylabel="fraction of earlier examples forgotten",
                title="forgotten at each state change")
    axes[1].set(xlabel="forgetting events before the change", ylabel="fraction forgotten",
                title="by forgettability (Toneva events so far)")
    axes[2].set_xticks(range(1, MARGIN_BINS + 1))
    axes[2].set(xlabel="margin quintile before the change (1 = lowest)", ylabel="fraction forgotten",
                title="by margin before the change")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("LURE's unlearn / relearn states against warm start: which earlier examples are forgotten")
    fig.tight_layout()
    save_figure(fig, path)
