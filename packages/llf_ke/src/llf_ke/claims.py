"""Later-layer forgetting / KE claims (Zhou et al., 2022) for `forgetting reproduce`, as plain data.

One two-stage sweep below paper scale: stage 0 exports a few-shot image folder from scikit-learn's
digits (``python -m llf_ke.prepare_folder``) into the sweep's shared folder; stage 1 runs the
original ``train_KE_cls.py`` once per arm (LLF, KE, the long baseline at equal compute) and seed
with the seed lines' flags. At paper scale the arms are the README's Flowers-102 command lines.
``read`` takes a run's test top-1 per (equivalent) generation from its ``metrics.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llf_ke.events_analysis import figure_events, measure_events, read_events, summary_events

PACKAGE_DIR = Path(__file__).resolve().parents[2]
TITLE = "Fortuitous forgetting: later-layer forgetting / KE (Zhou et al., 2022)"
FLOWER = ["--weight_decay", "0.0001", "--arch", "Split_ResNet18", "--set", "Flower102", "--data", "$DATA_DIR", "--no_wandb"]
ARMS = {"llf": ["--reset_layer_name", "layer4"], "ke": ["--split_rate", "0.8", "--split_mode", "kels"]}


def _arm_args(arm: str, generations: int, epochs: int) -> list[str]:
    if arm == "long":  # one run as long as all generations, evaluated at each generation's length
        return ["--epochs", str(epochs * generations), "--num_generations", "1", "--reset_layer_name", "layer4",
                "--eval_intermediate_tst", str(epochs)]
    return ["--epochs", str(epochs), "--num_generations", str(generations), *ARMS[arm]]


def _digits_grid(generations: int, epochs: int, image_size: int, seeds: list[int]):
    def grid() -> list[dict]:
        runs = [{"name": "export_digits", "script": "-m", "stage": 0,
                 "args": ["llf_ke.prepare_folder", "digits", "--dst", "{shared}/data", "--train_per_class", "15",
                          "--val_per_class", "30"], "labels": {"arm": "data"}, "resume": False}]  # no resume flag
        for arm in ("llf", "ke", "long"):
            for s in seeds:
                runs.append({"name": f"{arm}_seed{s}", "script": "train_KE_cls.py", "stage": 1,
                             "args": [*_arm_args(arm, generations, epochs), "--name", "run", "--weight_decay", "0.0001",
                                      "--arch", "Split_ResNet18", "--set", "Folder", "--data", "{shared}/data",
                                      "--no_wandb", "--device", "cpu", "--image_size", str(image_size), "-t", "0",
                                      "--no_flip", "--checkpoints_dir", "{out}", "--init_seed", str(s), "--quiet"],
                             "labels": {"arm": arm, "seed": s}})
        return runs
    return grid


def _paper_grid() -> list[dict]:
    return [{"name": f"{arm}_seed{s}", "script": "train_KE_cls.py",
             "args": [*_arm_args(arm, 11, 200), "--name", "run", "--weight_decay", "0.0001", "--arch", "Split_ResNet18",
                      "--set", "Flower102", "--data", "{data}", "--no_wandb", "--checkpoints_dir", "{out}",
                      "--init_seed", str(s), "--quiet"],
             "labels": {"arm": arm, "seed": s}} for arm in ("llf", "ke", "long") for s in (0, 1, 2)]


TRACK = ["--track", "forgetting,margin"]


def _events_digits_grid(generations: int, epochs: int, image_size: int, seeds: list[int]):
    """The arms sweep's digits runs of LLF and KE (no long baseline: it has no reset), with ``--track``."""
    arms = _digits_grid(generations, epochs, image_size, seeds)

    def grid() -> list[dict]:
        return [r if r["labels"]["arm"] == "data" else {**r, "args": [*r["args"], *TRACK]}
                for r in arms() if r["labels"]["arm"] != "long"]
    return grid


def _events_paper_grid() -> list[dict]:
    return [{**r, "args": [*r["args"], *TRACK]} for r in _paper_grid() if r["labels"]["arm"] != "long"]


def read_curve(run: dict, out: Path) -> dict:
    if run["labels"]["arm"] == "data":
        return {}
    from llf_ke.plots import test_curve

    (metrics,) = sorted(out.rglob("metrics.jsonl"))
    # the run folder too: llf_ke.plots draws the figure from run folders
    return {"curve": test_curve(metrics.parent), "run_dir": str(metrics.parent)}


def _curve(values: dict, arm: str) -> dict[float, float]:
    runs = [dict((float(x), y) for x, y in v["curve"]) for v in values.values() if v["_labels"]["arm"] == arm]
    xs = sorted(set.intersection(*(set(r) for r in runs)))
    return {x: float(np.mean([r[x] for r in runs])) for x in xs}


def measure(values: dict) -> dict:
    out = {}
    for arm in ("llf", "ke", "long"):
        c = _curve(values, arm)
        out[f"{arm}_gen0"] = c[min(c)]
        out[f"{arm}_last"] = c[max(c)]
        out[f"{arm}_last_generation"] = max(c)
    out["seeds"] = float(len([v for v in values.values() if v["_labels"]["arm"] == "llf"]))
    return out


def figure(values: dict, measured: dict, path: Path) -> None:
    """The package's figure (``llf_ke.plots``): test top-1 per generation, one line per arm, mean ± sd over seeds."""
    from llf_ke.plots import plot_runs

    plot_runs({label: [v["run_dir"] for v in values.values() if v["_labels"]["arm"] == arm]
               for arm, label in (("llf", "LLF (reset layer4)"), ("ke", "KE (KELS 0.8)"), ("long", "long baseline"))},
              path, title="test accuracy per generation")


DATA = {"smoke": "scikit-learn digits, 15 train/class, 16 px, 2 generations x 2 epochs, seed 0",
        "cpu": "scikit-learn digits, 15 train/class, 1,347 test, 16 px, 5 generations x 20 epochs, seeds 0-1",
        "paper": "Flowers-102 (--data), Split_ResNet18, 10 generations x 200 epochs, seeds 0-2"}
COMMON = {"sweep": "arms", "source": "Table 1 (spec, unverified)", "measure": measure, "figure": figure, "data": DATA}


BENCHMARKS = [  # `forgetting bench`: Split_ResNet18 training img/s beside torchvision's resnet18 (random batches)
    {"name": "split_resnet", "script": "benchmarks/bench_split_resnet.py",
     "args": ["--image_size", "32", "224", "--threads", "1"],
     "quick_args": ["--image_size", "16", "--steps", "3", "--threads", "1"]},
]


def paper() -> dict:
    return {
        "name": "llf_ke",
        "title": TITLE,
        "package_dir": PACKAGE_DIR,
        "benchmarks": BENCHMARKS,
        "commands": {
            "llf_flower": ["train_KE_cls.py", "--epochs", "200", "--num_generations", "11", "--name",
                           "resetlayer4_flower_resnet18", "--reset_layer_name", "layer4", *FLOWER],
            "ke_flower": ["train_KE_cls.py", "--epochs", "200", "--num_generations", "11", "--name",
                          "ke_kels_flower_resnet18", "--split_rate", "0.8", "--split_mode", "kels", *FLOWER],
            "long_flower": ["train_KE_cls.py", "--epochs", "2200", "--num_generations", "1", "--name",
                            "resetlayer4_flower_resnet18_long2200", "--reset_layer_name", "layer4",
                            "--eval_intermediate_tst", "200", *FLOWER],
        },
        "sweeps": {
            "arms": {"grids": {"smoke": _digits_grid(2, 2, 16, [0]), "cpu": _digits_grid(5, 20, 16, [0, 1]),
                               "paper": _paper_grid},
                     "read": read_curve, "resume_args": ["--resume"]},
            "events": {"grids": {"smoke": _events_digits_grid(2, 2, 16, [0]),
                                 "cpu": _events_digits_grid(4, 10, 16, [0]), "paper": _events_paper_grid},
                       "read": read_events, "resume_args": ["--resume"]},
        },
        "analyses": [
            {"name": "events_across_generations", "sweep": "events",
             "question": "which examples does each later-layer reset make the network forget, are they relearned, "
                         "and are they the ones Toneva would call forgettable?",
             "source": "issue 19: Toneva et al.'s forgetting events (example_forgetting) across LLF/KE generations",
             "measure": measure_events, "summary": summary_events, "figure": figure_events,
             "data": {"smoke": "scikit-learn digits, 15 train/class, 16 px, 2 generations x 2 epochs, seed 0",
                      "cpu": "scikit-learn digits, 15 train/class, 16 px, 4 generations x 10 epochs, seed 0",
                      "paper": "Flowers-102 (--data), Split_ResNet18, 11 generations x 200 epochs, seeds 0-2"}},
        ],
        "claims": [
            {**COMMON, "name": "llf_improves", "statement": "LLF: the last generation beats generation 0",
             "paper_value": "Flowers-102 ResNet18: 51.02 → 70.87 (N10)", "verdict": ("greater", "llf_last", "llf_gen0"),
             "summary": lambda m: (f"LLF {m['llf_gen0']:.2f} → {m['llf_last']:.2f} (gen 0 → gen "
                                   f"{m['llf_last_generation']:.0f}, mean of {m['seeds']:.0f} seeds)")},
            {**COMMON, "name": "llf_beats_long", "statement": "LLF beats the long baseline at equal compute",
             "paper_value": "70.87 vs 66.89 (Flowers-102, N10)", "verdict": ("greater", "llf_last", "long_last"),
             "summary": lambda m: f"LLF {m['llf_last']:.2f} vs long {m['long_last']:.2f} at equal epochs"},
            {**COMMON, "name": "llf_beats_ke", "statement": "LLF beats KE",
             "paper_value": "70.87 vs 63.25 (Flowers-102, N10)", "verdict": ("greater", "llf_last", "ke_last"),
             "summary": lambda m: f"LLF {m['llf_last']:.2f} vs KE {m['ke_last']:.2f}"},
            {"name": "mask_fractions",
             "statement": "LLF with `layer4` resets 75.236 % of the masked weights; KELS 0.8 resets 35.72 %",
             "source": "the original code (spec §4.3, §6.1)", "paper_value": "75.236 %, 35.72 %",
             "verdict": ("all", ("within", "llf_reset_percent", 75.236, 0.001), ("within", "kels_reset_percent", 35.72, 0.005)),
             "not_run": "a unit test, not a sweep: `cd packages/llf_ke && uv run pytest tests/test_units.py -k \"llf_masks or kels\"`"},
        ],
    }
