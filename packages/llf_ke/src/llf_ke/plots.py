"""The paper's figure: test accuracy per generation (LLF, KE, the long baseline) from run folders.

    python -m llf_ke.plots --run LLF=<exp_dir> --run KE=<exp_dir> --run long=<exp_dir> --out fig.png

A run with several generations gives its end-of-generation test top-1; a single-generation
run with ``--eval_intermediate_tst`` gives its intermediate tests at the equivalent generations.
Every ``train_KE_cls.py`` run also draws its own curve (``test_acc_per_generation.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from forgetting_common.cli import OneLineErrorParser
from forgetting_common.errors import UserError, run_main
from forgetting_common.figures import save_figure
from forgetting_common.runlog import read_metrics

#: The figure every run draws into its own folder.
RUN_FIGURE = "test_acc_per_generation.png"


def test_curve(exp_dir: str | Path) -> list[tuple[float, float]]:
    """(generation or equivalent generation, test top-1) points of one run folder."""
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{exp_dir}: no metrics.jsonl (not a train_KE_cls.py run folder)")
    points = []
    for r in read_metrics(path):
        if "test/top1" in r:
            top1 = r["test/top1"]
        elif r.get("split") == "test":  # run folders written before one row per epoch
            top1 = r["top1"]
        else:
            continue
        # test/generation: the (equivalent) generation of the point; older folders wrote
        # equivalent_generation for the long baseline only
        x = r.get("test/generation", r.get("equivalent_generation", r["generation"]))
        points.append((float(x), float(top1)))
    return points


def plot_runs(runs: dict[str, list[str | Path]], out: str | Path, title: str = "") -> Path:
    """One line per label; several folders under one label are averaged point by point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, dirs in runs.items():
        curves = [dict(test_curve(d)) for d in dirs]
        xs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        ys = [float(np.mean([c[x] for c in curves])) for x in xs]
        if len(curves) > 1:  # repeated seeds: the spread as error bars (standard deviation)
            ax.errorbar(xs, ys, yerr=[float(np.std([c[x] for c in curves])) for x in xs], marker="o", capsize=3,
                        label=f"{label} (n={len(dirs)}, mean ± sd)")
        else:
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("generation (long baseline: equivalent generation)")
    ax.set_ylabel("test top-1 (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, out, dpi=120)


def plot_run(exp_dir: str | Path, label: str) -> Path | None:
    """Draw one run's curve into ``<exp_dir>/test_acc_per_generation.png`` (None: no test point yet)."""
    if not test_curve(exp_dir):
        return None
    return plot_runs({label: [exp_dir]}, Path(exp_dir) / RUN_FIGURE, title=Path(exp_dir).name[:60])


def main(argv: list[str] | None = None) -> None:
    p = OneLineErrorParser(prog="llf_ke.plots", description="plot test top-1 per generation")
    p.add_argument("--run", action="append", required=True, help="LABEL=EXP_DIR (repeat; same label = averaged)")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    runs: dict[str, list[str]] = {}
    for item in a.run:
        if "=" not in item:
            raise UserError(f"--run {item!r}: expected LABEL=EXP_DIR")
        label, path = item.split("=", 1)
        runs.setdefault(label, []).append(path)
    print(plot_runs(runs, a.out, a.title))


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="llf_ke.plots")
