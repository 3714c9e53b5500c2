"""The paper's figures: the histogram of forgetting counts (Fig. 1) and the removal curves (Fig. 5/6).

``order_examples_by_forgetting.py`` draws the histogram beside its sorted output. The removal
curve is drawn from a folder of ``run_mnist.py`` / ``run_cifar.py`` runs::

    python -m example_forgetting.plots removal --input_dir mnist_results
    python -m example_forgetting.plots histogram --sorting_file mnist_results/mnist_sorted.pkl

Every figure is saved with :func:`forgetting_common.figures.save_figure` (atomic, then closed).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from forgetting_common import run_main
from forgetting_common.atomic import atomic_write_json
from forgetting_common.cli import OneLineErrorParser
from forgetting_common.errors import UserError
from forgetting_common.figures import save_figure

from example_forgetting.counting import Ordering
from example_forgetting.naming import matches, parse_fname

SELECTED, RANDOM = "selected", "random"
# What a removal run's name pins down besides the removal itself; runs of one curve share these.
REMOVAL_KEYS = ("seed", "sorting_file", "remove_n", "keep_lowest_n")


def _figure(figsize: tuple[float, float]):
    """A figure outside pyplot: no display and no backend switch (callers may be in a notebook)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


# ---------------------------------------------------------------------------------------------
# Fig. 1: histogram of forgetting counts


def forgetting_histogram(counts: Sequence[int] | np.ndarray, never_learned: Sequence[bool] | np.ndarray | None = None,
                         *, title: str = "", runs: int = 1):
    """Fraction of examples per forgetting count, as the paper's Fig. 1; returns the figure.

    ``counts``: one total per example. ``never_learned``: examples some run never classified
    correctly (their totals hold the original's penalty of ``--epochs``, not events); they get
    their own bar at the right instead of a bar at the penalty. The inset zooms the y axis past
    the unforgettable bar, as the paper's insets do.
    """
    counts = np.asarray(counts, dtype=np.int64)
    never = np.zeros(len(counts), dtype=bool) if never_learned is None else np.asarray(never_learned, dtype=bool)
    if len(counts) == 0:
        raise UserError("no examples to draw a histogram of")
    learned = counts[~never]
    top = int(learned.max()) if len(learned) else 0
    share = np.bincount(learned, minlength=top + 1) / len(counts)
    x = np.arange(top + 1)
    fig, ax = _figure((6.4, 4.0))
    ax.bar(x, share, width=0.9, color="tab:blue", label="learned")
    if never.any():
        from matplotlib.ticker import MaxNLocator

        ax.bar([top + 2], [never.mean()], width=0.9, color="tab:gray", hatch="//",
               label=f"never learned in a run ({int(never.sum())})")
        ticks = [int(t) for t in MaxNLocator(nbins=8, integer=True).tick_values(0, top) if 0 <= t <= top]
        ax.set_xticks([*ticks, top + 2], [*map(str, ticks), "never"])
    unforgettable = int((counts == 0).sum())
    ax.set(xlabel="forgetting events" + (f" (summed over {runs} runs)" if runs > 1 else ""),
           ylabel="fraction of examples",
           title=(title + ": " if title else "") + f"{unforgettable:,} of {len(counts):,} unforgettable "
                 f"({100 * unforgettable / len(counts):.1f}%)")
    rest = share[1:].max(initial=0.0)
    if never.any():
        rest = max(rest, float(never.mean()))
    if 0 < rest < 0.5 * share[0]:
        inset = ax.inset_axes([0.42, 0.45, 0.55, 0.42])
        inset.bar(x, share, width=0.9, color="tab:blue")
        if never.any():
            inset.bar([top + 2], [never.mean()], width=0.9, color="tab:gray", hatch="//")
        inset.set_xticks(ax.get_xticks(), [t.get_text() for t in ax.get_xticklabels()])
        inset.set_xlim(ax.get_xlim())
        inset.set_ylim(0, 1.15 * rest)
        inset.set_title("zoomed y axis", fontsize=8)
        inset.tick_params(labelsize=7)
    if never.any():
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.18), fontsize=8)
    fig.tight_layout()
    return fig


def never_learned_mask(ordering: Ordering) -> np.ndarray:
    """Per example of ``ordering.indices``: whether some run never classified it correctly."""
    unlearned = [run.ids[~run.learned] for run in ordering.runs]
    if not unlearned:
        return np.zeros(len(ordering.indices), dtype=bool)
    return np.isin(ordering.indices, np.concatenate(unlearned))


def save_ordering_histogram(ordering: Ordering, epochs: int, path: str | Path, *, title: str = "") -> Path:
    """The order script's histogram of its totals, written to ``path``."""
    fig = forgetting_histogram(ordering.counts, never_learned_mask(ordering), title=title, runs=len(ordering.runs))
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Fig. 5 / 6: test accuracy against the number of removed examples


@dataclass(frozen=True)
class RemovalRun:
    """One training run seen as a point of a removal curve."""

    arm: str  # "selected" (keep_lowest_n 0), "random" (keep_lowest_n < 0) or "window" (> 0)
    removed: int  # examples removed (0 for a full-data run)
    start: int  # first removed rank of a window (keep_lowest_n)
    seed: int
    accuracy: float  # test accuracy (%): the best over epochs, or the last epoch's
    group: tuple[tuple[str, str], ...]  # the name's other fields (dataset, dropout, cutout ...)
    sorting_file: str
    source: str


def removal_runs(folder: str | Path, pairs: Sequence[str] | None = None, metric: str = "best") -> list[RemovalRun]:
    """Every statistics file under ``folder`` (recursive) whose name matches ``pairs``."""
    from example_forgetting.order import load_stats

    runs = []
    for path in sorted(Path(folder).rglob("*stats_dict.pkl")):
        fields = parse_fname(path.name)
        if fields is None or not matches(path.name, pairs):
            continue
        test = load_stats(path).get("test", [[], []])[1]
        if not test:
            continue  # a run interrupted before its first epoch ended
        keep, n = int(fields["keep_lowest_n"]), int(fields["remove_n"])
        sorted_removal = fields["sorting_file"] != "none"
        if keep < 0:
            arm, removed = RANDOM, n
        elif keep == 0 or not sorted_removal:  # without a sorting file nothing is removed
            arm, removed = SELECTED, n if sorted_removal else 0
        else:
            arm, removed = "window", n
        runs.append(RemovalRun(
            arm=arm, removed=removed, start=max(keep, 0), seed=int(fields["seed"]),
            accuracy=float(max(test) if metric == "best" else test[-1]),
            group=tuple((k, v) for k, v in fields.items() if k not in REMOVAL_KEYS),
            sorting_file=fields["sorting_file"], source=str(path),
        ))
    return runs


def removal_table(runs: Sequence[RemovalRun]) -> dict[str, dict[int, list[float]]]:
    """``{arm: {removed: [accuracy per seed]}}``; full-data runs are the point 0 of both arms.

    The runs must form one experiment: those sharing the fields of a removal run (the dataset,
    dropout, augmentation ...); full-data runs of other settings (the statistics runs
    trained without dropout, say) are left out.
    """
    removal = [r for r in runs if r.removed > 0 and r.arm in (SELECTED, RANDOM)]
    if not removal:
        raise UserError("no removal runs (remove_n > 0 with keep_lowest_n 0 or negative) among the statistics files")
    groups = {r.group for r in removal}
    if len(groups) > 1:
        a, b = sorted(groups)[:2]
        differ = [f"{k} {va} / {vb}" for (k, va), (_, vb) in zip(a, b) if va != vb]
        raise UserError(f"the removal runs belong to {len(groups)} settings (they differ in {', '.join(differ)}); "
                        "choose one with --input_fname_args, e.g. --input_fname_args " + " ".join(differ[0].split()[:2]))
    (group,) = groups
    table: dict[str, dict[int, list[float]]] = {SELECTED: defaultdict(list), RANDOM: defaultdict(list)}
    for r in runs:
        if r.group != group:
            continue
        if r.removed == 0:
            for arm in (SELECTED, RANDOM):
                table[arm][0].append(r.accuracy)
        elif r.arm in table:
            table[r.arm][r.removed].append(r.accuracy)
    return {arm: dict(sorted(points.items())) for arm, points in table.items()}


def removal_curve(table: Mapping[str, Mapping[int, Sequence[float]]], *, unforgettable: int | None = None,
                  train_size: int | None = None, title: str = "", ylabel: str = "test accuracy (%)"):
    """Test accuracy against the number of removed examples, least forgotten first vs random
    (paper Fig. 5 left / Fig. 6); returns the figure.

    ``table``: ``{"selected": {removed: [accuracy per seed]}, "random": {...}}``; the mean is
    drawn, with the standard deviation as error bars where seeds repeat. ``unforgettable``: a
    vertical line where every unforgettable example is gone (the paper's line).
    ``train_size``: a second x axis in percent of the training set.
    """
    fig, ax = _figure((6.4, 4.0))
    styles = {SELECTED: ("tab:blue", "o", "selected (least forgotten removed first)"),
              RANDOM: ("tab:red", "s", "random")}
    for arm, points in table.items():
        if not points:
            continue
        color, marker, label = styles.get(arm, ("tab:green", "^", arm))
        x = np.array(sorted(points))
        values = [np.asarray(points[k], dtype=float) for k in x]
        mean = np.array([v.mean() for v in values])
        err = np.array([v.std() if len(v) > 1 else 0.0 for v in values])
        seeds = max(len(v) for v in values)
        ax.errorbar(x, mean, yerr=err if err.any() else None, color=color, marker=marker, capsize=3,
                    label=label + (f", {seeds} seeds" if seeds > 1 else ""))
    if unforgettable is not None:
        ax.axvline(unforgettable, color="black", linestyle="--", linewidth=1,
                   label=f"all {unforgettable:,} unforgettable removed")
    ax.set(xlabel="number of removed examples", ylabel=ylabel, title=title)
    if train_size:
        top = ax.secondary_xaxis("top", functions=(lambda n: 100 * n / train_size, lambda p: p * train_size / 100))
        top.set_xlabel("% of the training set removed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def window_curve(runs: Sequence[RemovalRun], *, title: str = ""):
    """Paper Fig. 5 right: removing a fixed-size window of the sorted order, by its start rank."""
    windows = [r for r in runs if r.arm != RANDOM and (r.arm == "window" or r.removed > 0)]
    by_start: dict[int, list[float]] = defaultdict(list)
    for r in windows:
        by_start[r.start].append(r.accuracy)
    if not by_start:
        raise UserError("no window removal runs (keep_lowest_n >= 0 with remove_n > 0)")
    x = np.array(sorted(by_start))
    mean = np.array([np.mean(by_start[k]) for k in x])
    err = np.array([np.std(by_start[k]) for k in x])
    fig, ax = _figure((6.4, 4.0))
    ax.errorbar(x, mean, yerr=err if err.any() else None, marker="o", capsize=3, color="tab:blue",
                label=f"window of {windows[0].removed:,} removed")
    rand = [r.accuracy for r in runs if r.arm == RANDOM and r.removed == windows[0].removed]
    if rand:
        ax.axhline(float(np.mean(rand)), color="tab:red", linestyle="--", label="random removal of as many")
    ax.set(xlabel="start of the removed window in the sorted order", ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _unforgettable(folder: Path, sorting_file: str) -> int | None:
    """Unforgettable examples in the sorting file the removal runs used, if it is in ``folder``."""
    from example_forgetting.order import load_sorting

    for path in (folder / (sorting_file + ".pkl"), folder / sorting_file):
        if path.is_file():
            _, counts = load_sorting(path)
            return None if counts is None else int((counts == 0).sum())
    return None


def draw_removal(folder: Path, output: Path, pairs: Sequence[str] | None = None, metric: str = "best",
                 sorting_dir: Path | None = None) -> dict[str, Any]:
    """Draw the removal curve (and, where window runs exist, Fig. 5 right) of a folder of runs;
    writes ``output`` (PNG) and its points beside it as JSON; returns the points."""
    runs = removal_runs(folder, pairs, metric)
    table = removal_table(runs)
    chosen = [r for r in runs if r.removed > 0 and r.arm in (SELECTED, RANDOM)]
    group = dict(chosen[0].group)
    sorting_files = sorted({r.sorting_file for r in chosen if r.sorting_file != "none"})
    unforgettable = _unforgettable(sorting_dir or folder, sorting_files[0]) if len(sorting_files) == 1 else None
    title = f"{group.get('dataset', '')}: removal ({metric} test accuracy)"
    save_figure(removal_curve(table, unforgettable=unforgettable, title=title), output)
    points = {"metric": metric, "setting": group, "unforgettable": unforgettable,
              "curves": {arm: {str(k): v for k, v in pts.items()} for arm, pts in table.items()}}
    windows = [r for r in runs if r.arm == "window" and r.group == chosen[0].group]
    if windows:
        same = [r for r in runs if r.group == chosen[0].group]
        window_png = output.with_name(output.stem + "_window" + output.suffix)
        save_figure(window_curve(same, title=f"{group.get('dataset', '')}: window removal"), window_png)
        points["windows"] = {str(r.start): r.accuracy for r in windows}
    atomic_write_json(output.with_suffix(".json"), points)
    return points


# ---------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="python -m example_forgetting.plots", description="the paper's figures from runs")
    sub = p.add_subparsers(dest="figure", required=True)
    r = sub.add_parser("removal", help="Fig. 5/6: test accuracy against removed examples, from a folder of runs")
    r.add_argument("--input_dir", required=True, help="folder of run_mnist.py / run_cifar.py outputs (recursive)")
    r.add_argument("--input_fname_args", nargs="+", help="name value pairs the file names must hold (as the order script)")
    r.add_argument("--metric", choices=("best", "final"), default="best",
                   help="test accuracy per run: best over epochs (the original's best_acc) or the last epoch's")
    r.add_argument("--sorting_dir", default=None, help="where the sorting file is (default: --input_dir)")
    r.add_argument("--output", default=None, help="PNG path (default INPUT_DIR/removal_curve.png)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    h = sub.add_parser("histogram", help="Fig. 1: forgetting counts of a sorted-order file")
    h.add_argument("--sorting_file", required=True, help="a pickle written by order_examples_by_forgetting.py")
    h.add_argument("--output", default=None, help="PNG path (default: beside the file, NAME_histogram.png)")
    h.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    return p


def main(argv: Sequence[str] | None = None) -> Path:
    args = _parser().parse_args(argv)
    if args.figure == "removal":
        folder = Path(args.input_dir)
        if not folder.is_dir():
            raise UserError(f"--input_dir {folder} is not a folder")
        output = Path(args.output) if args.output else folder / "removal_curve.png"
    else:
        source = Path(args.sorting_file)
        if not source.is_file():
            raise UserError(f"--sorting_file {source} is not a file")
        output = Path(args.output) if args.output else source.with_name(source.stem + "_histogram.png")
    if output.suffix.lower() != ".png":
        raise UserError(f"--output {output} must end in .png")
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it or choose another --output")
    if args.figure == "removal":
        draw_removal(folder, output, args.input_fname_args, args.metric,
                     Path(args.sorting_dir) if args.sorting_dir else None)
    else:
        from example_forgetting.order import load_sorting

        _, counts = load_sorting(source)
        if counts is None:
            raise UserError(f"sorting file {source} holds no 'forgetting counts'")
        # Only totals are stored: a never-learned example shows at its penalty (--epochs per run).
        save_figure(forgetting_histogram(counts, title=source.stem), output)
    print(f"wrote {output}", file=sys.stderr)
    return output


if __name__ == "__main__":
    run_main(main, prog="python -m example_forgetting.plots")
