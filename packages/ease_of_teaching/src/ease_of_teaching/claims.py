"""Emergent-communication claims (Zhou et al., 2022) for `forgetting reproduce`, as plain data.

Two sweeps of original scripts: ``forget_train.py`` in three regimes (no reset, reset receiver,
PBF) x seeds, each also teaching its final language to fresh receivers (ease of teaching), and
``mixed_language_forget_samebatch.py`` with the README's two forgetting variants (C6 random
re-init, C7 init-magnitude zero mask) x seeds. ``read`` uses the per-run analysis in
``ease_of_teaching.analysis``; each claim measures its numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from forgetting_common.figures import save_figure

PACKAGE_DIR = Path(__file__).resolve().parents[2]
TITLE = "Fortuitous forgetting: emergent communication (Zhou et al., 2022)"
GROUP = ["--group_vars", "same_mask", "weight_mask", "reset_to_zero", "keep_perc", "seed", "trainIters",
         "train_with_reset", "reset_every"]
MIXED = {"C6": ["--fname", "new_rand_reinit"],
         "C7": ["--fname", "same_weight_zero", "--same_mask", "--weight_mask", "--reset_to_zero"]}
REGIMES = ("no reset", "reset receiver", "PBF")


def _game_grid(T: int, seeds: list[int], receivers: int, iters: int):
    def grid() -> list[dict]:
        from ease_of_teaching.analysis import regimes

        return [{"name": f"{label.replace(' ', '_')}_seed{s}", "script": "forget_train.py",
                 "args": ["--fname", "run", "--seed", str(s), "--no_wandb", "--trainIters", str(T), "--out_dir", "{out}",
                          "--device", "cpu", "--eot_every", "0", "--eot_receivers", str(receivers),
                          "--eot_iters", str(iters), "--quiet", *flags],
                 "labels": {"regime": label, "seed": s}}
                for label, flags in regimes(T).items() for s in seeds]
    return grid


def _mixed_grid(iters: int, seeds: list[int]):
    return lambda: [{"name": f"{c}_seed{s}", "script": "mixed_language_forget_samebatch.py",
                     "args": [*GROUP, "--seed", str(s), "--keep_perc", "0.5", "--trainIters", str(iters),
                              "--out_dir", "{out}", "--device", "cpu", "--no_wandb", "--quiet", *flags],
                     "labels": {"variant": c, "seed": s}} for c, flags in MIXED.items() for s in seeds]


def _clean(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    x = float(x)
    return None if math.isnan(x) else x


def read_game(run: dict, out: Path) -> dict:
    from ease_of_teaching.analysis import analyse_game, game_run_record

    rec = game_run_record(out / "run")
    analysis = analyse_game(run["labels"]["regime"], rec)
    return {k: _clean(v) for k, v in analysis.items()}


def read_mixed(run: dict, out: Path) -> dict:
    (path,) = sorted(out.rglob("summary.json"))
    s = json.loads(path.read_text())
    perfect = next(k for k in s if k.startswith("mean Copy Exact Match Perfect (iters"))
    permuted = next(k for k in s if k.startswith("mean Copy Exact Match Permuted (iters"))
    first_perfect = s["first iteration Exact Match Perfect = 100"] or 10**9
    first_permuted = s["first iteration Exact Match Permuted = 100"] or 10**9
    return {"copy_em_perfect": s[perfect], "copy_em_permuted": s[permuted], "gap": s["copy gap (Perfect - Permuted)"],
            "perfect_first": first_perfect < first_permuted}


def _mean(values: dict, key: str, **labels) -> float:
    xs = [v[key] for v in values.values()
          if all(v["_labels"].get(k) == want for k, want in labels.items()) and v.get(key) is not None]
    return float(np.mean(xs)) if xs else float("nan")


def measure_learnt(values: dict) -> dict:
    return {"acc_4k_6k": _mean(values, "acc 4000-6000", regime="no reset"),
            "acc_last_1000": _mean(values, "acc last 1000", regime="no reset")}


def measure_reset(values: dict) -> dict:
    return {"acc_before_reset": _mean(values, "acc 100 before event (mean)", regime="reset receiver"),
            "acc_after_reset": _mean(values, "acc 100 after event (mean)", regime="reset receiver"),
            "acc_1k_after": _mean(values, "acc 900-1000 after event (min)", regime="reset receiver")}


def _by_regime(key: str):
    return lambda values: {"pbf": _mean(values, key, regime="PBF"), "reset": _mean(values, key, regime="reset receiver"),
                           "no_reset": _mean(values, key, regime="no reset")}


def _mixed_measure(variant: str):
    def measure(values: dict) -> dict:
        runs = [v for v in values.values() if v["_labels"]["variant"] == variant]
        return {"copy_em_perfect": float(np.mean([r["copy_em_perfect"] for r in runs])),
                "copy_em_permuted": float(np.mean([r["copy_em_permuted"] for r in runs])),
                "seeds_positive": float(sum(r["gap"] > 0 for r in runs)), "seeds": float(len(runs))}
    return measure


def measure_compositional(values: dict) -> dict:
    runs = [v for v in values.values() if v["_labels"]["variant"] == "C6"]
    return {"seeds_perfect_first": float(sum(r["perfect_first"] for r in runs)), "half_of_seeds": len(runs) / 2}


def figure_game(key: str, ylabel: str):
    def figure(values: dict, measured: dict, path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for i, regime in enumerate(REGIMES):
            xs = [v[key] for v in values.values() if v["_labels"]["regime"] == regime and v.get(key) is not None]
            ax.scatter([i] * len(xs), xs, color="grey", zorder=3)
            ax.bar(i, float(np.mean(xs)) if xs else 0.0, 0.6, alpha=0.6)
        ax.set_xticks(range(len(REGIMES)), REGIMES)
        ax.set(ylabel=ylabel, title=f"{ylabel} per regime (bars: mean; dots: seeds)")
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
    return figure


def figure_mixed(values: dict, measured: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for i, variant in enumerate(MIXED):
        runs = [v for v in values.values() if v["_labels"]["variant"] == variant]
        ax.bar(i - 0.2, np.mean([r["copy_em_perfect"] for r in runs]), 0.4, color="tab:blue",
               label="compositional half" if i == 0 else None)
        ax.bar(i + 0.2, np.mean([r["copy_em_permuted"] for r in runs]), 0.4, color="tab:orange",
               label="permuted half" if i == 0 else None)
    ax.set_xticks(range(len(MIXED)), ["C6 random re-init", "C7 init-magnitude zero"])
    ax.set(ylabel="copy exact match after forgetting (%)", title="mixed language: which half survives forgetting")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


GAME_DATA = {"smoke": "none (game), 12k its (one receiver reset), seed 0, 2 fresh receivers x 100 its",
             "cpu": "none (game), 30k its, seeds 0-2, 30 fresh receivers x 1 000 its",
             "paper": "none (game), 300k its, seeds 0-4, 30 fresh receivers x 1 000 its"}
MIXED_DATA = {"smoke": "none (mixed language), 200 its, seeds 0-1", "cpu": "none (mixed language), 700 its, seeds 0-4",
              "paper": "none (mixed language), the script's default 700 its, seeds 0-4"}


BENCHMARKS = [  # `forgetting bench`: game training and ease-of-teaching iterations/s beside straightforward code
    {"name": "game", "script": "benchmarks/bench_game.py", "args": [],
     "quick_args": ["--iters", "60", "--eot_receivers", "10", "--eot_iters", "10"]},
]


def paper() -> dict:
    return {
        "name": "ease_of_teaching",
        "title": TITLE,
        "package_dir": PACKAGE_DIR,
        "benchmarks": BENCHMARKS,
        "commands": {
            "no_reset": ["forget_train.py", "--fname", "baseline_no_reset", "--seed", "0", "--no_wandb"],
            "reset_receiver": ["forget_train.py", "--resetNum", "50", "--fname", "baseline_reset_receiver", "--seed", "0",
                               "--reset_receiver", "--no_wandb"],
            "pbf": ["forget_train.py", "--resetNum", "100", "--fname", "same_weight_reinit_sender10_receiver10_reset100",
                    "--seed", "0", "--forget_sender", "--sender_keep_perc", "0.1", "--forget_receiver",
                    "--receiver_keep_perc", "0.1", "--weight_mask", "--same_mask", "--no_wandb"],
            "mixed_rand_reinit": ["mixed_language_forget_samebatch.py", *GROUP, "--seed", "0", "--keep_perc", "0.5",
                                  *MIXED["C6"]],
            "mixed_same_weight_zero": ["mixed_language_forget_samebatch.py", *GROUP, "--seed", "0", "--keep_perc", "0.5",
                                       *MIXED["C7"]],
        },
        "sweeps": {
            "game": {"grids": {"smoke": _game_grid(12000, [0], 2, 100), "cpu": _game_grid(30000, [0, 1, 2], 30, 1000),
                               "paper": _game_grid(300000, [0, 1, 2, 3, 4], 30, 1000)},
                     "read": read_game, "resume_args": ["--resume"]},
            "mixed": {"grids": {"smoke": _mixed_grid(200, [0, 1]), "cpu": _mixed_grid(700, [0, 1, 2, 3, 4]),
                                "paper": _mixed_grid(700, [0, 1, 2, 3, 4])},
                      "read": read_mixed, "resume_args": ["--resume"]},
        },
        "claims": [
            {"name": "game_learnt", "sweep": "game", "statement": "the referential game is learnt (Li & Bowling calibration)",
             "source": "L&B code, seed 0", "paper_value": "≈90 % by 5k its, 92.8 % late",
             "verdict": ("within", "acc_last_1000", 92.8, 3.0), "measure": measure_learnt,
             "summary": lambda m: f"no reset: {m['acc_4k_6k']:.1f} % at 4–6k, {m['acc_last_1000']:.1f} % last 1k",
             "figure": figure_game("acc last 1000", "accuracy, last 1k its (%)"), "data": GAME_DATA},
            {"name": "reset_recovers", "sweep": "game", "statement": "a receiver reset drops accuracy to ≈chance and it recovers",
             "source": "L&B code", "paper_value": "93 → 31.6 %, 90.8 % after 1k",
             "verdict": ("all", ("within", "acc_after_reset", 31.6, 5.0), ("within", "acc_1k_after", 90.8, 5.0)),
             "measure": measure_reset,
             "summary": lambda m: (f"{m['acc_before_reset']:.1f} → {m['acc_after_reset']:.1f} %, "
                                   f"{m['acc_1k_after']:.1f} % after 1k (worst reset)"),
             "figure": figure_game("acc 100 after event (mean)", "accuracy right after a reset (%)"), "data": GAME_DATA},
            {"name": "pbf_topsim", "sweep": "game",
             "statement": "PBF reaches higher topographic similarity than reset-receiver and no-reset (P5)",
             "source": "spec §3.1", "paper_value": "direction only (values not recorded)",
             "verdict": ("all", ("greater", "pbf", "reset"), ("greater", "reset", "no_reset")),
             "measure": _by_regime("topo mean second half"),
             "summary": lambda m: (f"second-half mean topographic similarity {m['pbf']:.3f} (PBF) vs {m['reset']:.3f} "
                                   f"(reset) vs {m['no_reset']:.3f} (no reset)"),
             "figure": figure_game("topo mean second half", "topographic similarity, 2nd half"), "data": GAME_DATA},
            {"name": "ease_of_teaching", "sweep": "game", "statement": "languages from resets/PBF are easier to teach",
             "source": "paper", "paper_value": "direction only",
             "verdict": ("all", ("greater", "pbf", "no_reset"), ("greater", "reset", "no_reset")),
             "measure": _by_regime("eot mean first 200"),
             "summary": lambda m: (f"fresh receivers' first-200 accuracy {m['pbf']:.1f} (PBF) / {m['reset']:.1f} (reset) / "
                                   f"{m['no_reset']:.1f} (no reset)"),
             "figure": figure_game("eot mean first 200", "fresh receiver accuracy, first 200 its"), "data": GAME_DATA},
            {"name": "mixed_c6", "sweep": "mixed",
             "statement": "forgetting hurts the permuted half of a mixed language more (C6, random re-init) (P3)",
             "source": "paper", "paper_value": "direction only", "verdict": ("greater", "copy_em_perfect", "copy_em_permuted"),
             "measure": _mixed_measure("C6"), "figure": figure_mixed, "data": MIXED_DATA,
             "summary": lambda m: (f"copy EM {m['copy_em_perfect']:.1f} vs {m['copy_em_permuted']:.1f} %, gap "
                                   f"{m['copy_em_perfect'] - m['copy_em_permuted']:.1f} ({m['seeds_positive']:.0f}/"
                                   f"{m['seeds']:.0f} seeds > 0)")},
            {"name": "mixed_c7", "sweep": "mixed", "statement": "same with the fixed init-magnitude zero mask (C7) (P3)",
             "source": "paper", "paper_value": "direction only", "verdict": ("greater", "copy_em_perfect", "copy_em_permuted"),
             "measure": _mixed_measure("C7"), "figure": figure_mixed, "data": MIXED_DATA,
             "summary": lambda m: (f"copy EM {m['copy_em_perfect']:.1f} vs {m['copy_em_permuted']:.1f} %, gap "
                                   f"{m['copy_em_perfect'] - m['copy_em_permuted']:.1f} ({m['seeds_positive']:.0f}/"
                                   f"{m['seeds']:.0f} seeds > 0)")},
            {"name": "compositional_faster", "sweep": "mixed", "statement": "compositional mappings are learnt faster (P3)",
             "source": "paper", "paper_value": "direction only",
             "verdict": ("greater", "seeds_perfect_first", "half_of_seeds"), "measure": measure_compositional,
             "figure": figure_mixed, "data": MIXED_DATA,
             "summary": lambda m: (f"compositional half at 100 % first in {m['seeds_perfect_first']:.0f}/"
                                   f"{2 * m['half_of_seeds']:.0f} C6 seeds")},
        ],
    }
