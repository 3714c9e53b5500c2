"""Paper-style figures from any set of ``run_stats`` JSON files (ours or the original's):
average online accuracy per task, plasticity per task and dead-unit fraction per task,
mean over seeds ± standard error, one figure per task."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from forgetting_common.errors import UserError
from forgetting_common.figures import save_figure

from upgd.metrics import APPROACH_ORDER, grouped_curves

PANELS = (
    ("accuracies", "Average online accuracy"),
    ("plasticity_per_task", "Plasticity"),
    ("n_dead_units_per_task", "Fraction of dead units"),
)


def plot_results(paths: Iterable[str | Path], out_dir: str | Path, keys: Sequence[str] | None = None,
                 fmt: str = "png", overwrite: bool = False, smooth: int = 1) -> list[Path]:
    """Draw one figure per task under ``out_dir`` (``<task>.<fmt>``); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in PANELS if keys is None or p[0] in keys]
    if not panels:
        raise UserError(f"no known statistic among {keys}; choose from {', '.join(k for k, _ in PANELS)}")
    paths = list(paths)
    curves = {key: grouped_curves(paths, key) for key, _ in panels}
    tasks = sorted({task for c in curves.values() for task, _ in c})
    out_dir = Path(out_dir)
    written = []
    order = {name: i for i, name in enumerate(APPROACH_ORDER)}
    for task in tasks:
        target = out_dir / f"{task}.{fmt}"
        if target.exists() and not overwrite:
            raise UserError(f"{target} exists; pass --overwrite to replace it")
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        for ax, (key, title) in zip(axes[0], panels):
            names = sorted((a for t, a in curves[key] if t == task), key=lambda a: (order.get(a, 99), a))
            for name in names:
                data = curves[key][(task, name)]
                if smooth > 1:
                    kernel = np.ones(smooth) / smooth
                    data = np.stack([np.convolve(row, kernel, mode="valid") for row in data])
                mean = np.nanmean(data, axis=0)
                x = np.arange(len(mean)) + (smooth - 1) / 2
                ax.plot(x, mean, label=f"{name} (n={data.shape[0]})", linewidth=1.2)
                if data.shape[0] > 1:
                    se = np.nanstd(data, axis=0) / np.sqrt(data.shape[0])
                    ax.fill_between(x, mean - se, mean + se, alpha=0.25)
            ax.set_xlabel("Number of tasks")
            ax.set_title(title)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(task)
        fig.tight_layout()
        written.append(save_figure(fig, target, dpi=120))
    return written
