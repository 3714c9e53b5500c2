"""The cross-paper analysis ``llf_ke.events_across_generations``: which examples does each
later-layer reset make the network forget, are they relearned, and are they the ones Toneva would
call forgettable?

Each run is ``train_KE_cls.py --track forgetting,margin`` (LLF or KE); :func:`read_events` takes its
``tracked.npz`` (the per-generation record of :mod:`llf_ke.tracking`). Definitions:

- *forgotten at reset g* (g >= 1): correct at its last presentation of generation g-1, wrong at its
  first of generation g (a forgetting event at the boundary, Toneva's rule);
- *relearned*: correct again at some presentation of generation g;
- *generation-0 forgetting count* (Toneva's, over generation 0 alone): the forgetting events of an
  example learned in generation 0, its number of presentations there if never learned; it is
  *forgettable* when that count is above 0 (the complement: learned and never forgotten).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ARMS = (("llf", "LLF (reset layer4)"), ("ke", "KE (KELS 0.8)"))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import spearmanr

    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def read_events(run: dict, out: Path) -> dict:
    """One run's per-generation record from its ``tracked.npz`` (the export stage: nothing)."""
    if run["labels"]["arm"] == "data":
        return {}
    from forgetting_common.trackers import read_npz

    (path,) = sorted(Path(out).rglob("tracked.npz"))
    a = read_npz(path)
    first, last = a["generations.first_correct"], a["generations.last_correct"]
    events, learned = a["generations.events"], a["generations.learned"]
    # generation 0's presentations per example: one per epoch (every example, every epoch)
    epochs0 = int(a["forgetting.presentations"].max()) // first.shape[0] if first.size else 0
    gen0_count = np.where(learned[0], events[0], epochs0)
    return {"gen0_count": gen0_count.tolist(), "reset_forgotten": a["generations.reset_forgotten"].astype(int).tolist(),
            "relearned_epoch": a["generations.relearned_epoch"].tolist(), "last_correct": last.tolist(),
            "first_correct": first.tolist(), "events": events.tolist(), "learned": learned.astype(int).tolist(), "run_dir": str(path.parent)}


def _arm_measures(runs: list[dict]) -> dict[str, float]:
    """The arm's numbers, each the mean over its runs (seeds)."""
    per_run: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        per_run.setdefault(key, []).append(float(value))

    for v in runs:
        count = np.asarray(v["gen0_count"])
        forgotten = np.asarray(v["reset_forgotten"], dtype=bool)  # [G, N]
        relearned = np.asarray(v["relearned_epoch"]) >= 0
        last = np.asarray(v["last_correct"])
        events = np.asarray(v["events"])
        forgettable = count > 0
        G, n = forgotten.shape
        at_risk = np.zeros_like(forgotten)
        at_risk[1:] = last[:-1] == 1  # correct just before the reset: only these can be forgotten by it
        for g in range(1, G):
            add(f"forgotten_fraction_g{g}", forgotten[g].mean())
            add(f"relearned_fraction_g{g}", relearned[g].sum() / forgotten[g].sum() if forgotten[g].any() else np.nan)
        hit = forgotten[1:]
        add("forgotten_fraction", hit.mean())  # over all (reset, example) pairs
        add("forgotten_of_correct", hit.sum() / max(1, at_risk[1:].sum()))
        add("relearned_fraction", relearned[1:][hit].mean() if hit.any() else np.nan)
        ever = hit.any(axis=0)
        add("forgettable_fraction_gen0", forgettable.mean())
        # of the (reset, example) pairs that were correct before the reset: the forgettable share
        # among those the reset forgot, and among those it did not
        risk = at_risk[1:]
        fg = np.broadcast_to(forgettable, risk.shape)
        add("forgettable_among_forgotten", fg[hit].mean() if hit.any() else np.nan)
        add("forgettable_among_kept", fg[risk & ~hit].mean() if (risk & ~hit).any() else np.nan)
        union = (ever | forgettable).sum()
        add("jaccard_forgotten_forgettable", (ever & forgettable).sum() / union if union else np.nan)
        add("spearman_gen0_count_resets_forgotten", _spearman(count, hit.sum(axis=0)))
        add("spearman_gen0_count_later_events", _spearman(count, events[1:].sum(axis=0)))
        learned0 = np.asarray(v["learned"], dtype=bool)[0]
        # among the examples learned in generation 0 (a never-learned one cannot be forgotten by a reset
        # unless learned later, so it would pull the correlation down on its own)
        add("spearman_gen0_count_resets_forgotten_learned", _spearman(count[learned0], hit.sum(axis=0)[learned0]))
        add("examples", n)
        add("generations", G)
    return {k: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for k, v in per_run.items()}


def measure_events(values: dict) -> dict:
    out: dict[str, float] = {}
    for arm, _ in ARMS:
        runs = [v for v in values.values() if v["_labels"].get("arm") == arm]
        if runs:
            out.update({f"{arm}_{k}": x for k, x in _arm_measures(runs).items()})
            out[f"{arm}_seeds"] = float(len(runs))
    return out


def summary_events(m: dict) -> str:
    parts = []
    for arm, _ in ARMS:
        if f"{arm}_forgotten_fraction" in m:
            parts.append(f"{arm.upper()}: a reset forgets {100 * m[f'{arm}_forgotten_fraction']:.1f}% of the training "
                         f"examples ({100 * m[f'{arm}_forgotten_of_correct']:.1f}% of those correct), "
                         f"{100 * m[f'{arm}_relearned_fraction']:.0f}% relearned in the generation; forgettable in "
                         f"gen 0: {100 * m[f'{arm}_forgettable_among_forgotten']:.0f}% of the forgotten vs "
                         f"{100 * m[f'{arm}_forgettable_among_kept']:.0f}% of the kept, Spearman "
                         f"{m[f'{arm}_spearman_gen0_count_resets_forgotten']:.2f}")
    return "; ".join(parts)


def figure_events(values: dict, measured: dict, path: Path) -> None:
    """Left: per reset, the share of training examples it forgets and the share of those relearned.
    Right: examples by their generation-0 forgetting count, the mean number of resets that forgot them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from forgetting_common.figures import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ticks: dict[int, str] = {}
    for (arm, label), color in zip(ARMS, ("tab:blue", "tab:orange")):
        runs = [v for v in values.values() if v["_labels"].get("arm") == arm]
        if not runs:
            continue
        G = len(runs[0]["reset_forgotten"])
        gens = list(range(1, G))
        fg = [measured.get(f"{arm}_forgotten_fraction_g{g}", np.nan) for g in gens]
        rl = [measured.get(f"{arm}_relearned_fraction_g{g}", np.nan) for g in gens]
        left.plot(gens, fg, "o-", color=color, label=f"{label}: forgotten at the reset")
        left.plot(gens, rl, "s--", color=color, label=f"{label}: of those, relearned")
        counts = np.concatenate([np.asarray(v["gen0_count"]) for v in runs])
        learned0 = np.concatenate([np.asarray(v["learned"], dtype=bool)[0] for v in runs])
        resets = np.concatenate([np.asarray(v["reset_forgotten"])[1:].sum(axis=0) for v in runs])
        # never learned in generation 0: its own point right of the learned ones' counts
        never_x = int(counts[learned0].max()) + 1 if learned0.any() else 0
        xs_all = np.where(learned0, counts, never_x)
        xs = np.unique(xs_all)
        ys = [resets[xs_all == x].mean() for x in xs]
        right.plot(xs, ys, "o-", color=color, label=label)
        for x, y in zip(xs, ys):
            right.annotate(str(int((xs_all == x).sum())), (x, y), fontsize=7, textcoords="offset points",
                           xytext=(3, 3), color=color)
        ticks.update({int(x): str(int(x)) for x in xs})
        if not learned0.all():
            ticks[never_x] = "never\nlearned"
        left.set_xticks(gens)
    if ticks:
        right.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    left.set_xlabel("generation (reset before it)")
    left.set_ylabel("fraction")
    left.set_ylim(-0.02, 1.02)
    left.set_title("examples forgotten at each reset, and relearned")
    left.legend(fontsize=7)
    right.set_xlabel("generation-0 forgetting events (Toneva)")
    right.set_ylabel("resets that forgot the example (mean)")
    right.set_title("forgettable in generation 0 vs forgotten by resets\n(numbers: examples per count)")
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
