"""LURE's claims (Ramkumar et al., 2023) for `forgetting reproduce`, as plain data.

One sweep: four methods (LURE, warm start with the same schedule, ALMA.py's warm start, from
scratch) x seeds, each the original ``LURE_main.py`` / ``ALMA.py`` with its original flags on a
small real MNIST stream below paper scale, and the README's CIFAR-10 ResNet18 lines at paper
scale. Every claim compares two methods' means from the runs' ``results.json``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from lure.events_analysis import TRACK, figure_events, measure_events, read_events, summary_events

PACKAGE_DIR = Path(__file__).resolve().parents[2]
TITLE = "LURE (Ramkumar et al., 2023)"

# method -> (label, script, its flags beyond the common ones)
METHODS = {
    "lure": ("LURE", "LURE_main.py", ["--use_snip", "--snip_size", "0.2", "--gamma", "0.1"]),
    "warm": ("warm start (same schedule)", "LURE_main.py", ["--gamma", "0.1"]),
    "alma": ("ALMA.py warm start", "ALMA.py", []),
    "scratch": ("from scratch", "LURE_main.py", ["--use_randinit", "--gamma", "0.1"]),
}


def _small(epochs: int, lr_steps: str, chunk: int, chunks: int, seeds: list[int]):
    def grid() -> list[dict]:
        runs = []
        for seed in seeds:
            for method, (_, script, flags) in METHODS.items():
                extra = [] if script == "ALMA.py" else ["--no_epoch_test", "--save_start_weights"]
                runs.append({"name": f"{method}_seed{seed}", "script": script,
                             "args": ["--dataset", "mnist5k", "--arch", "mnistnet", "--epochs", str(epochs),
                                      "--decreasing_lr", lr_steps, "--batch_size", "64", "--meta_batch_size",
                                      str(chunk), "--meta_batch_number", str(chunks), "--seed", str(seed),
                                      "--save_dir", "{out}", "--data", "{data}", "--quiet", "--print_freq", "1000000",
                                      "--run", f"{method}-seed{seed}", "--corruption_eval", *extra, *flags],
                             "labels": {"method": method, "seed": seed}})
        return runs
    return grid


def _tracked(epochs: int, lr_steps: str, chunk: int, chunks: int, seeds: list[int]):
    """The cross-paper analysis's runs: LURE and warm start (same schedule) of the small grid, with --track."""
    def grid() -> list[dict]:
        return [{**run, "name": f"{run['name']}_tracked",
                 "args": [a for a in run["args"] if a not in ("--corruption_eval", "--save_start_weights")] + TRACK}
                for run in _small(epochs, lr_steps, chunk, chunks, seeds)() if run["labels"]["method"] in ("lure", "warm")]
    return grid


def _paper_tracked() -> list[dict]:
    return [{**run, "args": [*run["args"], *TRACK]} for run in _paper() if run["labels"]["method"] in ("lure", "warm")]


def _paper() -> list[dict]:
    runs = []
    for seed in (10, 11, 12):
        for method, (_, script, flags) in METHODS.items():
            if method == "lure":  # the README's spelling of the same flags
                flags = ["--snip_size", "0.20", "--sparsity_level", "1", "--gamma", "0.1", "--use_snip"]
            runs.append({"name": f"{method}_seed{seed}", "script": script,
                         "args": ["--data", "{data}", "--dataset", "cifar10", "--arch", "resnet18", "--seed", str(seed),
                                  "--epochs", "50", "--decreasing_lr", "20,40", "--batch_size", "64",
                                  "--weight_decay", "1e-4", "--meta_batch_size", "6250", "--meta_batch_number", "8",
                                  "--save_dir", "{out}", "--run", f"{method}-seed{seed}", *flags],
                         "labels": {"method": method, "seed": seed}})
    return runs


def read_results(run: dict, out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    if not r.get("finished"):
        raise ValueError(f"{out / 'results.json'} is not marked finished")
    drops = [s["test_acc_before_unlearn"] - s["test_acc_after_unlearn"] for s in r["states"]
             if "test_acc_after_unlearn" in s]
    return {"final_test_acc": r["final_test_acc"], "cer": r["cumulative_error_rate"], "ece": r["final_ece"],
            "unlearn_drop": statistics.fmean(drops) if drops else None,
            "corruption_acc": r.get("mean_corruption_acc"), "acc_per_state": r["test_acc_per_state"],
            # what lure.plots draws a run's curve from
            "config": r["config"], "states": r["states"]}


def _mean(values: dict, method: str, key: str) -> float:
    xs = [v[key] for v in values.values() if v["_labels"]["method"] == method and v[key] is not None]
    return statistics.fmean(xs) if xs else float("nan")


def measure(values: dict) -> dict:
    out = {}
    for method in METHODS:
        for key in ("final_test_acc", "cer", "ece", "corruption_acc"):
            out[f"{method}_{key}"] = _mean(values, method, key)
    out["lure_unlearn_drop"] = _mean(values, "lure", "unlearn_drop")
    out["zero"] = 0.0
    out["seeds"] = float(len({v["_labels"]["seed"] for v in values.values()}))
    return out


def figure(values: dict, measured: dict, path: Path) -> None:
    """The package's figure (``lure.plots``): accuracy per state, one curve per method, mean ± sd over seeds."""
    from lure.plots import accuracy_per_state

    accuracy_per_state([{"config": v["config"], "states": v["states"]} for v in values.values()], path)


def _s(text: str):
    return lambda m: text.format(**m)


DATA = {"smoke": "real MNIST-5k, K=3, M=300, 2 epochs/state, seed 1",
        "cpu": "real MNIST-5k, K=8, M=500, 10 epochs/state, seeds 1-3, 5 MNIST corruptions x 5 severities",
        "paper": "CIFAR-10, ResNet18, K=8, M=6,250, 50 epochs/state, seeds 10-12"}
COMMON = {"sweep": "methods", "source": "arXiv:2303.10455", "measure": measure, "figure": figure, "data": DATA}


BENCHMARKS = [  # `forgetting bench`: training img/s of a chunk held as tensors beside a DataLoader over PIL
    {"name": "throughput", "script": "benchmarks/bench_throughput.py",
     "args": ["--chunk", "1024", "--epochs", "1", "--threads", "1"],
     "quick_args": ["--chunk", "256", "--epochs", "1", "--threads", "1"]},
]


def paper() -> dict:
    common_readme = ["--data", "<data_dir>", "--dataset", "cifar10", "--arch", "resnet18", "--seed", "10",
                     "--epochs", "50", "--decreasing_lr", "20,40", "--batch_size", "64", "--weight_decay", "1e-4",
                     "--meta_batch_size", "6250", "--meta_batch_number", "8"]
    return {
        "name": "lure",
        "title": TITLE,
        "package_dir": PACKAGE_DIR,
        "benchmarks": BENCHMARKS,
        "commands": {
            "lure_cifar10": ["LURE_main.py", *common_readme, "--snip_size", "0.20", "--sparsity_level", "1", "-wb",
                             "--gamma", "0.1", "--use_snip"],
            "lure_cifar10_buffer_replay": ["LURE_main.py", *common_readme, "--snip_size", "0.20", "--sparsity_level",
                                           "1", "-wb", "--gamma", "0.1", "--use_snip", "-buffer_replay"],
            "lure_cifar10_no_replay": ["LURE_main.py", *common_readme, "--snip_size", "0.20", "--sparsity_level",
                                       "1", "-wb", "--gamma", "0.1", "--use_snip", "-no_replay"],
            "alma_cifar10": ["ALMA.py", *common_readme],
        },
        "sweeps": {
            "methods": {"grids": {"smoke": _small(2, "1", 300, 3, [1]), "cpu": _small(10, "4,8", 500, 8, [1, 2, 3]),
                                  "paper": _paper},
                        "read": read_results, "resume_args": ["--resume"], "needs_data": True},
            "events": {"grids": {"smoke": _tracked(2, "1", 300, 3, [1]), "cpu": _tracked(10, "4,8", 500, 8, [1, 2, 3]),
                                 "paper": _paper_tracked},
                       "read": read_events, "resume_args": ["--resume"], "needs_data": True},
        },
        "analyses": [
            {"name": "events_unlearn_relearn", "sweep": "events",
             "question": "does LURE's unlearning step hit the hard examples? forgetting events across LURE's learn / "
                         "unlearn / relearn states against warm start",
             "source": "issue 19: Toneva et al.'s forgetting events (example_forgetting) on LURE's anytime protocol",
             "measure": measure_events, "summary": summary_events, "figure": figure_events,
             "data": {"smoke": "real MNIST-5k, K=3, M=300, 2 epochs/state, seed 1, LURE and warm start",
                      "cpu": "real MNIST-5k, K=8, M=500, 10 epochs/state, seeds 1-3, LURE and warm start",
                      "paper": "CIFAR-10, ResNet18, K=8, M=6,250, 50 epochs/state, seeds 10-12, LURE and warm start"}},
        ],
        "claims": [
            {**COMMON, "name": "final_accuracy", "statement": "LURE improves final accuracy over warm start",
             "paper_value": "qualitative (tables not transcribed)",
             "verdict": ("greater", "lure_final_test_acc", "warm_final_test_acc"),
             "summary": _s("LURE {lure_final_test_acc:.2f} vs warm (same schedule) {warm_final_test_acc:.2f} % "
                           "({seeds:.0f} seeds)")},
            {**COMMON, "name": "cumulative_error", "statement": "LURE lowers the cumulative error vs warm start",
             "paper_value": "qualitative", "verdict": ("greater", "warm_cer", "lure_cer"),
             "summary": _s("CER rate {lure_cer:.3f} vs {warm_cer:.3f} (ALMA constant LR {alma_cer:.3f})")},
            {**COMMON, "name": "calibration", "statement": "LURE is better calibrated",
             "paper_value": "qualitative (ECE)", "verdict": ("greater", "warm_ece", "lure_ece"),
             "summary": _s("ECE {lure_ece:.4f} vs {warm_ece:.4f} (ALMA {alma_ece:.4f})")},
            {**COMMON, "name": "unlearning_drop", "statement": "unlearning removes information (acc drops before relearning)",
             "paper_value": "implied by the method", "verdict": ("greater", "lure_unlearn_drop", "zero"),
             "summary": _s("drop {lure_unlearn_drop:.2f} pp right after unlearning")},
            {**COMMON, "name": "robustness", "statement": "LURE models are more robust (by more than 1 pp)",
             "paper_value": "qualitative", "verdict": ("greater", "lure_corruption_acc", "warm_corruption_acc", 1.0),
             "summary": _s("mean corruption acc {lure_corruption_acc:.2f} vs warm {warm_corruption_acc:.2f} "
                           "(ALMA {alma_corruption_acc:.2f}, scratch {scratch_corruption_acc:.2f})")},
            {**COMMON, "name": "warm_start_gap", "statement": "warm start generalises worse than from scratch",
             "paper_value": "Ash & Adams gap, cited by the paper",
             "verdict": ("greater", "scratch_final_test_acc", "warm_final_test_acc"),
             "summary": _s("scratch {scratch_final_test_acc:.2f} vs warm {warm_final_test_acc:.2f} %")},
        ],
    }
