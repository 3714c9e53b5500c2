"""The cross-paper analysis ``upgd.sgd_vs_upgd_events``: dead units and Toneva-style forgetting
events of SGD against UPGD on input-permuted MNIST, read from ``run_stats.py --track
forgetting,dead_units`` runs (their ``tracked.npz``).

An *example* is an image of the training set (its index in MNIST's 60 000, or in the first
``--dataset_limit`` of them); its *presentations* are the steps at which the stream shows it,
whichever task (pixel permutation) is current. A forgetting event is a presentation at which
the network is wrong on it after being right at its previous presentation; on this stream the
two presentations almost always fall in different tasks (each task shows an image at most once),
so an event mostly means "right under an earlier permutation, wrong under a later one".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from forgetting_common.figures import save_figure
from forgetting_common.trackers import COMPACT_FILE, load_forgetting_counts, read_npz

LEARNERS = (("sgd", "sgd", "SGD", "tab:red"), ("upgd_fo_global", "upgd", "UPGD (first order, global)", "tab:blue"))


def _tail(values: list[float], fraction: float = 0.2, head: bool = False) -> float:
    """Mean of the first or last ``fraction`` of the tasks (at least one)."""
    k = max(1, int(round(len(values) * fraction)))
    part = values[:k] if head else values[-k:]
    return float(np.mean(part)) if part else float("nan")


def read_events(run: dict, out: Path) -> dict:
    """One run's per-task forgetting events and dead-unit fraction, and its per-example summary."""
    from upgd.metrics import load_result

    (npz,) = sorted(out.glob(f"_runs/*/*/*/*/*/{COMPACT_FILE}"))  # _runs/<task>/<learner>/<net>/<hps>/<seed>/
    (result,) = sorted(out.glob("*/*/*/*/*.json"))
    arrays = read_npz(npz)
    counts = load_forgetting_counts(npz)
    shown = counts.presentations > 0
    revisits = int((counts.presentations[shown] - 1).sum())  # presentations that can be an event
    events = counts.events[shown]
    data = load_result(result)
    return {
        "events_per_task": [float(v) for v in arrays["forgetting.history.forgetting_events"]],
        "dead_units_per_task": [float(v) for v in arrays["dead_units.history.dead_units"]],
        "upgd_dead_units_per_task": [None if v is None else float(v) for v in data["n_dead_units_per_task"]],
        "events_total": int(counts.events.sum()), "presentations": int(counts.presentations.sum()),
        "revisits": revisits, "examples_shown": int(shown.sum()), "examples": int(len(counts.ids)),
        "forgotten_examples": int((events > 0).sum()),
        "never_learned_examples": int((~counts.learned[shown]).sum()),
        "events_histogram": np.bincount(events, minlength=1).tolist() if len(events) else [0],
        "change_freq": int(data["run_info"]["change_freq"]),
    }


def measure_events(values: dict) -> dict:
    """Per learner, mean over seeds: events, events per revisit, forgotten and never-learned
    fractions of the examples shown, the tracker's dead-unit fraction (first and last 20 % of the
    tasks) and upgd's own post-update value over the last 20 % (``dead_last20_postupdate``)."""
    out: dict[str, float] = {}
    for learner, short, _, _ in LEARNERS:
        runs = [v for v in values.values() if v["_labels"]["learner"] == learner]
        per_run = {
            "events_total": [r["events_total"] for r in runs],
            "events_per_revisit": [r["events_total"] / max(r["revisits"], 1) for r in runs],
            "forgotten_fraction": [r["forgotten_examples"] / max(r["examples_shown"], 1) for r in runs],
            "never_learned_fraction": [r["never_learned_examples"] / max(r["examples_shown"], 1) for r in runs],
            "dead_first20": [_tail(r["dead_units_per_task"], head=True) for r in runs],
            "dead_last20": [_tail(r["dead_units_per_task"]) for r in runs],
            "dead_last20_postupdate": [_tail([v for v in r["upgd_dead_units_per_task"] if v is not None]) for r in runs],
            "events_last20": [_tail(r["events_per_task"]) for r in runs],
        }
        for key, vals in per_run.items():
            out[f"{short}_{key}"] = float(np.mean(vals))
    out["seeds"] = float(len(values) // len(LEARNERS))
    out["presentations"] = float(np.mean([v["presentations"] for v in values.values()]))
    return out


def summary_events(m: dict) -> str:
    return (f"forgetting events per revisit SGD {m['sgd_events_per_revisit']:.3f} vs UPGD "
            f"{m['upgd_events_per_revisit']:.3f} (examples forgotten at least once {m['sgd_forgotten_fraction']:.3f} vs "
            f"{m['upgd_forgotten_fraction']:.3f}); dead units last 20 % of tasks SGD {m['sgd_dead_last20']:.3f} vs "
            f"UPGD {m['upgd_dead_last20']:.3f} ({m['seeds']:.0f} seed(s), {m['presentations']:,.0f} samples)")


def _mean_curve(runs: list[list[float]]) -> np.ndarray:
    n = min(len(r) for r in runs)
    return np.nanmean(np.asarray([r[:n] for r in runs], dtype=float), axis=0)


def figure_events(values: dict, measured: dict, path: Path) -> None:
    """Forgetting events per task and the dead-unit fraction per task, both learners (mean of seeds)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for learner, _, label, color in LEARNERS:
        runs = [v for v in values.values() if v["_labels"]["learner"] == learner]
        events = _mean_curve([r["events_per_task"] for r in runs])
        dead = _mean_curve([r["dead_units_per_task"] for r in runs])
        tasks = np.arange(1, len(events) + 1)
        left.plot(tasks, events, color=color, marker="o", markersize=3, label=label)
        right.plot(np.arange(1, len(dead) + 1), dead, color=color, marker="o", markersize=3, label=label)
    cf = next(iter(values.values()))["change_freq"]
    left.set(xlabel="task", ylabel="forgetting events in the task",
             title=f"forgetting events ({cf:,} samples a task)")
    right.set(xlabel="task", ylabel="fraction of hidden units with zero output",
              title="dead units (training pass, mean over the task)", ylim=(0, None))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle("input-permuted MNIST: SGD vs UPGD (--track forgetting,dead_units)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
