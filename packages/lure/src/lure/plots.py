"""The paper's figure: test accuracy after every state, warm start beside LURE, error bars over seeds.

Each run's ``results.json`` holds the test accuracy of its best-validation model after every
state (``test_acc_per_state``) and the flags it ran with (``config``). Runs with the same method
(and dataset, architecture, number of states) are one curve: the mean over their seeds, with
error bars of one standard deviation where more than one seed ran. Where LURE (or another
intervention) ran, the accuracy right after unlearning, before relearning, is drawn as open
markers under its curve.

Drawn at the end of every ``LURE_main.py`` / ``ALMA.py`` run (its own curve, into its log
folder; with ``--log-dir``, also every run under that folder together) and by ``plot_runs.py``
over any set of run folders.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from forgetting_common.errors import UserError
from forgetting_common.figures import save_figure

FIGURE_NAME = "accuracy_per_state.png"
#: Curves in this order where present: the baselines first, then LURE.
_ORDER = ("ALMA.py warm start", "warm start", "from scratch", "LURE")


def method_label(config: dict) -> str:
    """What a run did, from its configuration (original flag names)."""
    if config.get("script") == "ALMA.py":
        label = "ALMA.py warm start"
    else:
        parts = []
        if config.get("use_snip"):
            parts.append(f"LURE (SNIP {100 * float(config.get('snip_size', 0.2)):g}%)")
        if config.get("use_llf"):
            parts.append("LLF")
        if config.get("use_fc"):
            parts.append("classifier reset")
        if config.get("use_shrink_perturb"):
            parts.append("shrink & perturb")
        if config.get("use_randinit"):
            parts.append("from scratch")
        label = " + ".join(parts) or "warm start"
    gamma = config.get("gamma", 1.0)
    return label if gamma in (None, 1, 1.0) else f"{label}, gamma {gamma:g}"


def _setting(config: dict) -> tuple:
    return (config.get("dataset"), config.get("arch"), config.get("meta_batch_number"), config.get("meta_batch_size"))


def load_runs(folders: Iterable[str | Path]) -> list[dict]:
    """The results of every run in or under ``folders`` (each run once, however many copies it left)."""
    runs, seen = [], set()
    for folder in folders:
        root = Path(folder)
        if not root.exists():
            raise UserError(f"{root} does not exist: give run folders (--save_dir or --log-dir of a run) or folders holding them")
        files = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for path in files:
            try:
                results = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise UserError(f"{path} is not a readable results file ({err})") from err
            if not isinstance(results, dict) or "states" not in results or "config" not in results:
                continue  # another program's results.json
            key = json.dumps(results["config"], sort_keys=True)  # the save_dir and the log copies are one run
            if key not in seen and results["states"]:
                seen.add(key)
                runs.append(results)
    return runs


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _groups(runs: Sequence[dict]) -> dict[str, list[dict]]:
    settings = {_setting(r["config"]) for r in runs}
    groups: dict[str, list[dict]] = {}
    for r in runs:
        label = method_label(r["config"])
        if len(settings) > 1:
            dataset, arch, k, m = _setting(r["config"])
            label = f"{label} [{dataset} {arch}, K={k}, M={m}]"
        groups.setdefault(label, []).append(r)

    def rank(label: str) -> tuple[int, str]:
        hits = [i for i, name in enumerate(_ORDER) if label.startswith(name)]
        return (hits[0] if hits else len(_ORDER), label)

    return {label: groups[label] for label in sorted(groups, key=rank)}


@dataclass(frozen=True)
class Curve:
    """One method's test accuracy per state: mean and standard deviation over its runs (seeds)."""

    label: str
    runs: int
    states: list[int]
    mean: list[float]
    sd: list[float]  # 0 where only one run reached the state
    after_unlearn_states: list[int]
    after_unlearn_mean: list[float]


def curves(runs: Sequence[dict]) -> list[Curve]:
    """The curves of ``runs`` (results dicts), one per method, baselines first."""
    out = []
    for label, group in _groups(runs).items():
        states, means, sds, after_x, after_y = [], [], [], [], []
        for k in range(max(len(r["states"]) for r in group)):
            reached = [r["states"][k] for r in group if len(r["states"]) > k]
            mean, sd = _mean_sd([s["test_acc"] for s in reached])
            states.append(k + 1)
            means.append(mean)
            sds.append(sd)
            dips = [s["test_acc_after_unlearn"] for s in reached if s.get("test_acc_after_unlearn") is not None]
            if dips:
                after_x.append(k + 1)
                after_y.append(statistics.fmean(dips))
        out.append(Curve(label, len(group), states, means, sds, after_x, after_y))
    return out


def accuracy_per_state(runs: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Draw test accuracy per state of ``runs`` (results dicts) into ``path``; returns the path."""
    from matplotlib.figure import Figure

    if not runs:
        raise UserError("no finished state in the given runs: nothing to plot")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    drawn = curves(runs)
    handles = []
    for i, c in enumerate(drawn):
        color = f"C{i % 10}"
        shift = 0.04 * (i - (len(drawn) - 1) / 2)  # error bars of different curves side by side, not on top
        xs = [x + shift for x in c.states]
        name = f"{c.label} ({c.runs} seed{'s' if c.runs > 1 else ''})"
        if c.runs > 1:
            handles.append(ax.errorbar(xs, c.mean, yerr=c.sd, color=color, marker="o", capsize=3, label=name))
        else:
            handles.extend(ax.plot(xs, c.mean, color=color, marker="o", label=name))
        if c.after_unlearn_states:
            handles.extend(ax.plot([x + shift for x in c.after_unlearn_states], c.after_unlearn_mean, color=color,
                                   marker="o", markerfacecolor="none", linestyle="none",
                                   label=f"{c.label}: at the state's start, after unlearning"))
    ax.set_xlabel("state (chunks seen)")
    ax.set_ylabel("test accuracy of the best-validation model (%)")
    ax.set_xticks(range(1, max(len(r["states"]) for r in runs) + 1))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7)
    ax.set_title(title or _title(runs), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _title(runs: Sequence[dict]) -> str:
    settings = {_setting(r["config"]) for r in runs}
    if len(settings) != 1:
        return "test accuracy per state"
    dataset, arch, k, m = settings.pop()
    epochs = {r["config"].get("epochs") for r in runs}
    per_state = f", {epochs.pop()} epochs/state" if len(epochs) == 1 else ""
    return f"{dataset}, {arch}: K={k} states of M={m}{per_state}"



def main(argv: Sequence[str] | None = None) -> Path:
    """``plot_runs.py``: the figure over any set of run folders."""
    from forgetting_common.cli import OneLineErrorParser

    p = OneLineErrorParser(prog="plot_runs.py", description="Test accuracy per state of LURE_main.py / ALMA.py "
                           "runs: one curve per method, mean over seeds with error bars (one standard deviation)")
    p.add_argument("folders", nargs="+", help="run folders (--save_dir or <log-dir>/<run>) or folders holding them")
    p.add_argument("--out", required=True, help=f"the figure to write (.png, .pdf or .svg), e.g. {FIGURE_NAME}")
    p.add_argument("--title", default=None, help="figure title (default: the runs' dataset, architecture, K and M)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it")
    runs = load_runs(args.folders)
    if not runs:
        raise UserError(f"no LURE_main.py / ALMA.py results.json under {', '.join(args.folders)}")
    path = accuracy_per_state(runs, out, title=args.title)
    print(f"{path}: " + "; ".join(f"{c.label} ({c.runs} run{'s' if c.runs > 1 else ''})" for c in curves(runs)))
    return path
