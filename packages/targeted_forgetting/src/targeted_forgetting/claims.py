"""Targeted forgetting's claims (Zhou et al., 2022, P1/P2) for `forgetting reproduce`, as plain data.

Each run is the original ``mixed_group_training.py`` with a seed command line's flags (C1: KE-style
random re-init on a split with random labels; C2: IMP-style rewind with margin groups) and a
shorter ``--train_iters`` below paper scale; ``read`` averages the per-group accuracy before and
after forgetting over the second half of the run's probes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from forgetting_common.figures import save_figure

PACKAGE_DIR = Path(__file__).resolve().parents[2]
TITLE = "Fortuitous forgetting: targeted forgetting (Zhou et al., 2022)"

C1 = ["--train_perc", "0.1", "--random_perc", "0.1", "--keep_perc", "0.5"]
C2 = ["--train_perc", "1", "--random_perc", "0.0", "--keep_perc", "0.3", "--weight_mask", "--reset_to_zero",
      "--rewind_to_init", "--margin_groups"]


def _grid(flags: list[str], iters: int, seeds: list[int], extra: tuple[str, ...] = ()):
    return lambda: [{"name": f"seed{s}", "script": "mixed_group_training.py",
                     "args": ["--seed", str(s), *flags, "--train_iters", str(iters), "--fname", "run",
                              "--save_path", "{out}", "--data_dir", "{data}", "--no_wandb", "--no_plot", "--quiet",
                              *extra],
                     "labels": {"seed": s}} for s in seeds]


def read_groups(run: dict, out: Path) -> dict:
    from targeted_forgetting.plots import load_run, summarize

    records, _ = load_run(str(out / "run"))
    s = summarize(records, records[-1]["Iter"] / 2)
    return {k: float(s[k]) for k in ("group0_before", "group0_after", "group1_before", "group1_after",
                                     "group0_drop", "group1_drop", "drop_gap")}


def measure_groups(values: dict) -> dict:
    keys = ("group0_before", "group0_after", "group1_before", "group1_after", "group0_drop", "group1_drop", "drop_gap")
    out = {k: float(np.mean([v[k] for v in values.values()])) for k in keys}
    out["seeds_with_positive_gap"] = float(sum(v["drop_gap"] > 0 for v in values.values()))
    out["seeds"] = float(len(values))
    return out


def _summary(names: tuple[str, str]):
    def summary(m: dict) -> str:
        return (f"after forgetting: {names[0]} {m['group0_after']:.1f} %, {names[1]} {m['group1_after']:.1f} % "
                f"(before {m['group0_before']:.1f} / {m['group1_before']:.1f}); drop gap {m['drop_gap']:.1f} points "
                f"({m['seeds_with_positive_gap']:.0f} of {m['seeds']:.0f} seeds > 0)")
    return summary


def _figure(names: tuple[str, str]):
    def figure(values: dict, measured: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        x = np.arange(2)
        ax.bar(x - 0.2, [measured["group0_before"], measured["group1_before"]], 0.4, label="before forgetting")
        ax.bar(x + 0.2, [measured["group0_after"], measured["group1_after"]], 0.4, label="after forgetting")
        ax.set_xticks(x, names)
        ax.set(ylabel="training accuracy (%)", title=f"drop gap {measured['drop_gap']:.1f} points")
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
    return figure


BENCHMARKS = [  # `forgetting bench`: training it/s and forgetting probes/s beside the plain PIL/deepcopy way
    {"name": "probe", "script": "benchmarks/bench_probe.py", "args": [],
     "quick_args": ["--iters", "50", "--probes", "5"]},
]


def paper() -> dict:
    seeds3 = [1, 2, 3]
    return {
        "name": "targeted_forgetting",
        "title": TITLE,
        "package_dir": PACKAGE_DIR,
        "benchmarks": BENCHMARKS,
        "commands": {
            "ke_mislabelled": ["mixed_group_training.py", "--seed", "1", *C1, "--train_iters", "50000",
                               "--fname", "new_rand_reinit_train0.1_mislabel0.1", "--no_wandb"],
            "imp_margin": ["mixed_group_training.py", "--seed", "1", *C2, "--train_iters", "50000",
                           "--fname", "new_weight_rewind_zero_train1_margin0.1", "--no_wandb"],
        },
        "sweeps": {
            "ke": {"grids": {"smoke": _grid(C1, 1000, [1]), "cpu": _grid(C1, 20000, seeds3),
                             "paper": _grid(C1, 50000, [1, 2, 3, 4, 5])},
                   "read": read_groups, "resume_args": ["--resume"], "needs_data": True},
            "imp": {"grids": {"smoke": _grid(C2, 300, [1]), "cpu": _grid(C2, 10000, seeds3),
                              "paper": _grid(C2, 50000, [1, 2, 3, 4, 5])},
                    "read": read_groups, "resume_args": ["--resume"], "needs_data": True},
        },
        "claims": [
            {"name": "ke_hits_mislabelled", "sweep": "ke",
             "statement": "KE-style forgetting (random re-init, keep 50 %) hits mislabelled examples harder than clean ones (P1)",
             "source": "Fig. 2 (curves)", "paper_value": "direction only (values not available offline)",
             "verdict": ("greater", "group1_drop", "group0_drop"),
             "measure": measure_groups, "summary": _summary(("clean", "mislabelled")),
             "figure": _figure(("clean", "mislabelled")),
             "data": {"smoke": "real MNIST, 6 000-example split, ~10 % random labels, 1k its, seed 1",
                      "cpu": "real MNIST, 6 000-example split, ~10 % random labels, 20k its, seeds 1-3",
                      "paper": "real MNIST, the seed command (50k its), seeds 1-5"}},
            {"name": "imp_hits_hard", "sweep": "imp",
             "statement": "IMP-style forgetting (rewind to init, keep 30 % largest, zero rest) hits hard (low-margin) examples harder (P2)",
             "source": "Fig. 3 (curves)", "paper_value": "direction only (values not available offline)",
             "verdict": ("greater", "group1_drop", "group0_drop"),
             "measure": measure_groups, "summary": _summary(("easy", "hard")), "figure": _figure(("easy", "hard")),
             "data": {"smoke": "real MNIST, 60 000 clean examples, 300 its, seed 1",
                      "cpu": "real MNIST, 60 000 clean examples, 10k its, seeds 1-3",
                      "paper": "real MNIST, the seed command (50k its), seeds 1-5"}},
        ],
    }
