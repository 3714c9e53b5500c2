"""Example forgetting's claims (Toneva et al., 2019) for `forgetting reproduce`, as plain data.

The statistics claims (unforgettable fractions, permuted vs plain, seed stability) are one sweep:
the original ``run_mnist.py --no_dropout`` per dataset and seed; ``read`` turns a run's statistics
pickle into per-example forgetting counts (never-learned examples count as ``epochs``, the
original's rule) and ``measure`` sums them over seeds as ``order_examples_by_forgetting.py`` does.
The removal claim is a three-stage sweep: statistics runs (stage 0) and the original sorting
script (stage 1) write into the sweep's shared folder, then ``run_mnist.py --sorting_file`` removal
runs (stage 2: sizes x selected/random x seeds, and full-data baselines) read the sorting file.
Every figure is the package's own (``example_forgetting.plots``). The label-noise claim is not a
sweep: the original MNIST script has no label-noise flag, so its recorded result comes from
``python -m example_forgetting.reproduce``, which builds a ``run_mnist.py`` configuration through
the script's parser and sets the library's label noise on it; its verdict is derived from the
recorded numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from forgetting_common.figures import save_figure
from forgetting_common.safeload import load_pickle

PACKAGE_DIR = Path(__file__).resolve().parents[2]
TITLE = "Example forgetting (Toneva et al., 2019)"
LEGACY = ("not a sweep yet: recorded from `cd packages/example_forgetting && uv run python -m "
          "example_forgetting.reproduce --data_root ../../../shared/data --output_dir /tmp/ef_repro`")


DATASETS = ("mnist", "permuted_mnist")


def _stats_grid(train_limit: int | None, test_limit: int | None, epochs: int, seeds: list[int]):
    limits = ([] if train_limit is None else ["--train_limit", str(train_limit)]) + \
             ([] if test_limit is None else ["--test_limit", str(test_limit)])
    return lambda: [{"name": f"{d}_seed{s}", "script": "run_mnist.py",
                     "args": ["--dataset", d, "--no_dropout", "--seed", str(s), "--epochs", str(epochs), *limits,
                              "--output_dir", "{out}", "--data_root", "{data}", "--no_download", "--quiet",
                              "--no_tensorboard"],
                     "labels": {"dataset": d, "seed": s, "epochs": epochs}} for d in DATASETS for s in seeds]


def read_counts(run: dict, out: Path) -> dict:
    """Per-example forgetting counts of one statistics run, ordered by example id."""
    from example_forgetting.naming import STATS_SUFFIX
    from example_forgetting.stats import run_forgetting

    (path,) = sorted(out.glob(f"*{STATS_SUFFIX}"))
    stats = load_pickle(path, what="statistics file")
    epochs = int(run["labels"]["epochs"])
    if len(stats["test"][1]) != epochs:
        raise ValueError(f"{path} holds {len(stats['test'][1])} epochs, not {epochs}")
    r = run_forgetting(stats, epochs)
    order = np.argsort(r.ids, kind="stable")
    first = r.first_learned[order]
    test_acc = [float(a) for a in stats["test"][1]]
    # the run's compact record: per-example counts and first-learned presentation (-1: never), and the
    # test accuracy of every epoch; the statistics pickle itself stays in the sweep folder
    return {"ids": r.ids[order].tolist(), "counts": r.counts(epochs)[order].tolist(),
            "never_learned": (~r.learned[order]).tolist(),
            "first_learned": np.where(np.isnan(first), -1, first).astype(np.int64).tolist(),
            "test_acc": test_acc, "best_test_acc": max(test_acc), "final_test_acc": test_acc[-1]}


def measure_counts(values: dict) -> dict:
    out = {}
    for d in DATASETS:
        runs = [v for v in values.values() if v["_labels"]["dataset"] == d]
        if any(r["ids"] != runs[0]["ids"] for r in runs):
            raise ValueError(f"{d}: the seeds saw different examples")
        counts = np.array([r["counts"] for r in runs])
        totals = counts.sum(axis=0)
        pairs = [float(np.corrcoef(counts[i], counts[j])[0, 1])
                 for i in range(len(counts)) for j in range(i + 1, len(counts))]
        out[f"{d}_unforgettable"] = float((totals == 0).sum())
        out[f"{d}_examples"] = float(len(totals))
        out[d] = float((totals == 0).mean())
        out[f"{d}_pearson"] = float(np.mean(pairs)) if pairs else float("nan")
        out[f"{d}_best_test_acc"] = float(np.mean([r["best_test_acc"] for r in runs]))
        if all("final_test_acc" in r for r in runs):  # runs recorded before it was read lack it
            out[f"{d}_final_test_acc"] = float(np.mean([r["final_test_acc"] for r in runs]))
        out["seeds"] = float(len(runs))
    out["unforgettable_fraction"] = out["mnist"]
    out["pearson"] = out["mnist_pearson"]
    return out


def summary_counts(m: dict) -> str:
    return (f"unforgettable: MNIST {100 * m['mnist']:.1f}% ({m['mnist_unforgettable']:,.0f} / {m['mnist_examples']:,.0f}), "
            f"permuted {100 * m['permuted_mnist']:.1f}%; seed-pair Pearson {m['mnist_pearson']:.3f} / "
            f"{m['permuted_mnist_pearson']:.3f} ({m['seeds']:.0f} seeds)"
            + (f"; final test accuracy {m['mnist_final_test_acc']:.2f}% / {m['permuted_mnist_final_test_acc']:.2f}%"
               if "mnist_final_test_acc" in m and "permuted_mnist_final_test_acc" in m else ""))


def _histogram(values: dict, dataset: str):
    """The package's Fig. 1 histogram (``example_forgetting.plots``) of one dataset's totals over seeds."""
    from example_forgetting.plots import forgetting_histogram

    runs = [v for v in values.values() if v["_labels"]["dataset"] == dataset]
    totals = np.array([r["counts"] for r in runs]).sum(axis=0)
    # a never-learned example holds the penalty, not events: the histogram gives it its own bar
    never = np.array([r.get("never_learned", [False] * len(totals)) for r in runs]).any(axis=0)
    return forgetting_histogram(totals, never, title=dataset.replace("_", " ").replace("mnist", "MNIST"),
                                runs=len(runs))


def _pixels(fig) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def figure_counts(datasets: tuple[str, ...]):
    """Fig. 1: the histogram of each dataset, side by side."""
    def figure(values: dict, measured: dict, path: Path) -> None:
        if len(datasets) == 1:
            save_figure(_histogram(values, datasets[0]), path, dpi=120)
            return
        from matplotlib.figure import Figure

        panels = [_pixels(_histogram(values, d)) for d in datasets]
        height, width = panels[0].shape[:2]
        fig = Figure(figsize=(len(panels) * width / 100, height / 100))
        for k, image in enumerate(panels):
            ax = fig.add_axes((k / len(panels), 0, 1 / len(panels), 1))
            ax.imshow(image)
            ax.set_axis_off()
        save_figure(fig, path, dpi=100)
    return figure


def _limits(train_limit: int | None, test_limit: int | None) -> list[str]:
    return ([] if train_limit is None else ["--train_limit", str(train_limit)]) + \
           ([] if test_limit is None else ["--test_limit", str(test_limit)])


def _removal_grid(train_limit: int | None, test_limit: int | None, epochs: int, stats_seeds: list[int],
                  removal_seeds: list[int], sizes: list[int]):
    """Stage 0: statistics runs; 1: the sorting; 2: removal runs (selected = keep_lowest_n 0, random = -1)."""
    common = ["--epochs", str(epochs), *_limits(train_limit, test_limit), "--data_root", "{data}", "--no_download",
              "--quiet", "--no_tensorboard"]
    stats_dir = "{shared}/mnist_results"

    def grid() -> list[dict]:
        runs = [{"name": f"stats_seed{s}", "script": "run_mnist.py", "stage": 0,
                 "args": ["--dataset", "mnist", "--no_dropout", "--seed", str(s), *common, "--output_dir", stats_dir],
                 "labels": {"role": "stats", "seed": s}} for s in stats_seeds]
        runs.append({"name": "order", "script": "order_examples_by_forgetting.py", "stage": 1,
                     "args": ["--output_dir", stats_dir, "--output_name", "mnist_sorted", "--input_dir", stats_dir,
                              "--input_fname_args", "dataset", "mnist", "no_dropout", "True", "sorting_file", "none",
                              "remove_n", "0", "keep_lowest_n", "0", "--epochs", str(epochs), "--overwrite", "--quiet"],
                     "labels": {"role": "order"}, "resume": False})  # seconds long, no resume flag
        for s in removal_seeds:  # the README's removal commands train with dropout
            runs.append({"name": f"full_seed{s}", "script": "run_mnist.py", "stage": 2,
                         "args": ["--dataset", "mnist", "--seed", str(s), *common, "--output_dir", "{out}"],
                         "labels": {"role": "full", "seed": s, "epochs": epochs}})
            for n in sizes:
                for keep, arm in ((0, "selected"), (-1, "random")):
                    runs.append({"name": f"{arm}_{n}_seed{s}", "script": "run_mnist.py", "stage": 2,
                                 "args": ["--dataset", "mnist", "--seed", str(s), *common, "--sorting_file", "mnist_sorted",
                                          "--input_dir", stats_dir, "--remove_n", str(n), "--keep_lowest_n", str(keep),
                                          "--output_dir", "{out}"],
                                 "labels": {"role": arm, "seed": s, "remove_n": n, "epochs": epochs,
                                            "train_size": train_limit or 60000}})
        return runs
    return grid


def read_removal(run: dict, out: Path) -> dict:
    if run["labels"]["role"] in ("stats", "order"):  # their outputs are read by the next stage, not measured
        return {}
    from example_forgetting.naming import STATS_SUFFIX

    (path,) = sorted(out.glob(f"*{STATS_SUFFIX}"))
    stats = load_pickle(path, what="statistics file")
    return {"best_test_acc": float(max(stats["test"][1]))}


def measure_removal(values: dict) -> dict:
    out: dict[str, float] = {}
    full = [v["best_test_acc"] for v in values.values() if v["_labels"]["role"] == "full"]
    out["full"] = float(np.mean(full))
    gaps = []
    sized = [v for v in values.values() if v["_labels"]["role"] in ("selected", "random")]
    for n in sorted({v["_labels"]["remove_n"] for v in sized}):
        pct = round(100 * n / sized[0]["_labels"]["train_size"])
        for arm in ("selected", "random"):
            out[f"{arm}_{pct}"] = float(np.mean([v["best_test_acc"] for v in sized
                                                 if v["_labels"]["role"] == arm and v["_labels"]["remove_n"] == n]))
        gaps.append(out[f"selected_{pct}"] - out[f"random_{pct}"])
    out["selected_minus_random_min"] = float(min(gaps))
    out["zero"] = 0.0
    return out


def summary_removal(m: dict) -> str:
    pcts = sorted(int(k.split("_")[1]) for k in m if k.startswith("selected_") and k[9:].isdigit())
    parts = [f"{p}%: {m[f'selected_{p}']:.2f} vs {m[f'random_{p}']:.2f}%" for p in pcts]
    return "removed (least forgotten vs random), best test acc: " + "; ".join(parts) + f" (full {m['full']:.2f}%)"


def figure_removal(values: dict, measured: dict, path: Path) -> None:
    """Fig. 6: the package's removal curve (``example_forgetting.plots``), mean ± sd over the removal seeds."""
    from example_forgetting.plots import RANDOM, SELECTED, removal_curve

    table: dict[str, dict[int, list[float]]] = {SELECTED: {}, RANDOM: {}}
    for v in values.values():
        role = v["_labels"]["role"]
        if role == "full":  # the full-data runs are the point 0 of both curves
            for arm in table:
                table[arm].setdefault(0, []).append(v["best_test_acc"])
        elif role in table:
            table[role].setdefault(int(v["_labels"]["remove_n"]), []).append(v["best_test_acc"])
    sized = [v for v in values.values() if v["_labels"]["role"] in table]
    fig = removal_curve({arm: dict(sorted(points.items())) for arm, points in table.items()},
                        train_size=sized[0]["_labels"]["train_size"] if sized else None,
                        title="Fig. 6 (MNIST): removal", ylabel="best test accuracy (%)")
    save_figure(fig, path, dpi=120)


STATS = {"sweep": "statistics", "measure": measure_counts, "summary": summary_counts, "figure": figure_counts(("mnist",)),
         "data": {"smoke": "real MNIST, first 1k train / 300 test, 3 epochs, seeds 1-2",
                  "cpu": "real MNIST, first 4k train / 1k test, 20 epochs, seeds 1-3 (permuted per seed)",
                  "paper": "real MNIST, 60k train, 200 epochs, seeds 1-5"}}


def example_forgetting_scale_rows(doc: dict) -> list[dict]:
    """``bench_scale.py --json``: ``{"<kind>_ours": {examples, seconds, peak_mib, ...}, "<kind>_baseline": ...}``."""
    rows = []
    names = {"mnist": "run_mnist.py epoch, full MNIST", "order": "order_examples_by_forgetting.py"}
    for kind, label in names.items():
        ours, base = doc.get(f"{kind}_ours"), doc.get(f"{kind}_baseline")
        if ours and base:
            rows.append({"case": label, "ours": ours["examples"] / ours["seconds"],
                         "baseline": base["examples"] / base["seconds"], "unit": "examples/s",
                         "peak_mib": ours["peak_mib"], "baseline_peak_mib": base["peak_mib"]})
    return rows


EPOCH_LINE = re.compile(r"^(\w+)_(ours|baseline)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$")


def example_forgetting_epoch_rows(stdout: str) -> list[dict]:
    """``bench_epoch.py`` prints ``case examples/s seconds peak-MiB`` per case (it has no JSON option)."""
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for line in stdout.splitlines():
        m = EPOCH_LINE.match(line)
        if m:
            found.setdefault(m[1], {})[m[2]] = (float(m[3]), float(m[5]))
    labels = {"mnist": "run_mnist.py epoch (subset)", "cifar": "run_cifar.py epoch (subset)",
              "stats": "statistics bookkeeping"}
    return [{"case": labels.get(kind, kind), "ours": v["ours"][0], "baseline": v["baseline"][0], "unit": "examples/s",
             "peak_mib": v["ours"][1], "baseline_peak_mib": v["baseline"][1]}
            for kind, v in found.items() if "ours" in v and "baseline" in v]


def example_forgetting_pickle_rows(stdout: str) -> list[dict]:
    """``bench_pickle_write.py`` prints one JSON object per case (``case``, ``seconds``, ``peak_mib``),
    then a summary whose ``examples`` and ``epochs`` name the size."""
    objects = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    cases = {o["case"]: o for o in objects if "case" in o}
    size = next((o for o in objects if "examples" in o), None)
    if size is None or not {"ours", "baseline"} <= set(cases):
        return []
    n = size["examples"]
    ours, base = cases["ours"], cases["baseline"]
    return [{"case": f"statistics pickle write, {n:,} x {size['epochs']} epochs", "unit": "examples/s",
             "ours": n / max(ours["seconds"], 1e-9), "baseline": n / max(base["seconds"], 1e-9),
             "peak_mib": ours["peak_mib"], "baseline_peak_mib": base["peak_mib"]}]


BENCHMARKS = [  # `forgetting bench`: epochs beside the original-style pipeline, and the sorting script
    {"name": "epoch", "script": "benchmarks/bench_epoch.py",
     "args": ["--data_root", "{data}"],  # quick: $FORGETTING_DATA if set, else synthetic data
     "quick_args": ["--mnist_n", "2000", "--cifar_n", "64", "--test_n", "200", "--stats_n", "5000"],
     "json_flag": None, "rows": example_forgetting_epoch_rows},
    {"name": "scale", "script": "benchmarks/bench_scale.py",
     "args": ["--data_root", "{data}"],
     "quick_args": ["--skip", "mnist", "--runs", "2", "--n", "5000", "--epochs", "20"],
     "json_flag": "--json", "rows": example_forgetting_scale_rows},
    {"name": "pickle_write", "script": "benchmarks/bench_pickle_write.py", "args": [],
     "quick_args": ["--examples", "5000", "--epochs", "20"], "json_flag": None, "rows": example_forgetting_pickle_rows},
]


def paper() -> dict:
    return {
        "name": "example_forgetting",
        "title": TITLE,
        "package_dir": PACKAGE_DIR,
        "benchmarks": BENCHMARKS,
        "commands": {
            "mnist": ["run_mnist.py", "--dataset", "mnist", "--no_dropout", "--output_dir", "mnist_results", "--seed", "1"],
            "permuted_mnist": ["run_mnist.py", "--dataset", "permuted_mnist", "--no_dropout", "--output_dir",
                               "permuted_mnist_results", "--seed", "1"],
            "order_mnist": ["order_examples_by_forgetting.py", "--output_dir", "mnist_results", "--output_name",
                            "mnist_sorted", "--input_dir", "mnist_results", "--input_fname_args", "dataset", "mnist",
                            "no_dropout", "True", "sorting_file", "none", "remove_n", "0", "keep_lowest_n", "0"],
            "remove_mnist": ["run_mnist.py", "--dataset", "mnist", "--sorting_file", "mnist_sorted", "--input_dir",
                             "mnist_results", "--output_dir", "mnist_results", "--seed", "1", "--remove_n", "1000",
                             "--keep_lowest_n", "0"],
            "cifar10": ["run_cifar.py", "--dataset", "cifar10", "--data_augmentation", "--output_dir", "cifar10_results",
                        "--seed", "1"],
            "cifar100": ["run_cifar.py", "--dataset", "cifar100", "--data_augmentation", "--output_dir",
                         "cifar100_results", "--seed", "1"],
            "cifar10_label_noise": ["run_cifar.py", "--dataset", "cifar10", "--data_augmentation", "--output_dir",
                                    "cifar10_results", "--noise_percent_labels", "20"],
        },
        "sweeps": {
            "statistics": {"grids": {"smoke": _stats_grid(1000, 300, 3, [1, 2]), "cpu": _stats_grid(4000, 1000, 20, [1, 2, 3]),
                                     "paper": _stats_grid(None, None, 200, [1, 2, 3, 4, 5])},
                           "read": read_counts, "resume_args": ["--resume"], "needs_data": True},
            "removal": {"grids": {"smoke": _removal_grid(1000, 300, 3, [1, 2], [1], [250, 500]),
                                  "cpu": _removal_grid(4000, 1000, 20, [1, 2, 3], [1, 2], [1000, 2000, 3000]),
                                  "paper": _removal_grid(None, None, 200, [1, 2, 3, 4, 5], [1, 2, 3, 4, 5],
                                                         list(range(5000, 60000, 5000)))},
                        "read": read_removal, "resume_args": ["--resume"], "needs_data": True},
        },
        "claims": [
            {**STATS, "name": "unforgettable_mnist", "statement": "Many MNIST examples are unforgettable", "source": "Fig. 1",
             "paper_value": "91.7% (55,012 / 60k, 5 seeds, 200 ep.)",
             "verdict": ("within", "unforgettable_fraction", 0.917, 0.05)},
            {**STATS, "name": "permuted_fewer", "statement": "Permuted MNIST has fewer unforgettable examples than MNIST",
             "source": "Fig. 1", "paper_value": "75.3% vs 91.7%",
             "verdict": ("greater", "mnist", "permuted_mnist"), "figure": figure_counts(DATASETS)},
            {"name": "removal_mnist", "sweep": "removal",
             "statement": "Removing the least-forgotten examples keeps accuracy better than random removal (MNIST)",
             "source": "Fig. 6", "paper_value": "accuracy kept up to 80% removed",
             "verdict": ("greater", "selected_minus_random_min", "zero"), "measure": measure_removal,
             "summary": summary_removal, "figure": figure_removal,
             "data": {"smoke": "real MNIST, first 1k train / 300 test, 3 epochs, stats seeds 1-2, removal seed 1",
                      "cpu": "real MNIST, first 4k train / 1k test, 20 epochs, stats seeds 1-3, removal with dropout, seeds 1-2",
                      "paper": "real MNIST, 60k, 200 epochs, 5 seeds, 5k to 55k removed"}},
            {"name": "noisy_most_forgotten", "statement": "Noisy labels are the most forgotten; none is unforgettable",
             "source": "Fig. 3 (CIFAR-10)", "paper_value": "no noisy example unforgettable",
             "verdict": ("within", "noisy_unforgettable_fraction", 0.0, 0.01), "not_run": LEGACY},
            {**STATS, "name": "seed_stability", "statement": "Forgetting counts are stable across seeds",
             "source": "section 6", "paper_value": "Pearson 0.892 (CIFAR-10)", "verdict": ("within", "pearson", 0.892, 0.1)},
            {"name": "unforgettable_cifar10", "statement": "CIFAR-10: 31.3% unforgettable; 30% removable",
             "source": "Fig. 1, 5", "paper_value": "31.3%", "verdict": ("within", "unforgettable_fraction", 0.313, 0.05),
             "not_run": "needs a GPU (ResNet18, 50k images, 200 epochs, 5 seeds)"},
        ],
    }
