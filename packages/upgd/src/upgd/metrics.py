"""Reading ``run_stats`` JSON files (ours or the original's) and the student notebook's metrics."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from forgetting_common.errors import UserError

#: The student notebook's legend order.
APPROACH_ORDER = ("baseline", "weight_norm", "grad_norm", "ratio_norm", "entire_kernel", "column_kernel",
                  "usgd", "KernelConvexCombi")


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Result JSONs under ``paths`` (files or folders), skipping run folders (``_runs``)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.json"))
                         if "_runs" not in p.parts and p.name not in ("config.json", "summary.json"))
        else:
            raise UserError(f"{path}: no such file or folder")
    if not found:
        raise UserError(f"no result JSON files under {', '.join(map(str, paths))}")
    return found


def load_result(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read result {path}: {err}") from err
    if not isinstance(data, dict) or "losses" not in data:
        raise UserError(f"{path} is not a run_stats/run result (no 'losses')")
    return data


def approach_label(path: Path, data: dict, root: Path | None = None) -> str:
    """The folder right under the task folder (the CLI key), as the student notebook labels runs."""
    task = data.get("task")
    parts = path.parts
    if task in parts:
        i = parts.index(task)
        if i + 1 < len(parts) - 1:
            return parts[i + 1]
    return str(data.get("learner", path.stem))


def _series(data: dict, key: str) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in data.get(key, [])], dtype=float)


def notebook_metrics(data: dict) -> dict[str, float]:
    """The student's ``get_results`` numbers for one result.

    ``average_accuracy``/``average_plasticity``: means of the per-task lists (entry 0, a single
    sample, included); ``lipschitz_const``: max |Δ| of consecutive per-task losses;
    ``forgetting``: accuracies[0] − accuracies[-1]; ``diff_plasticity``: plasticity[0] − plasticity[-1].
    """
    acc = _series(data, "accuracies")
    plast = _series(data, "plasticity_per_task" if "plasticity_per_task" in data else "plasticity")
    loss = _series(data, "losses")
    out = {
        "average_accuracy": float(np.mean(acc)) if acc.size else float("nan"),
        "average_plasticity": float(np.mean(plast)) if plast.size else float("nan"),
        "lipschitz_const": float(np.max(np.abs(np.diff(loss)))) if loss.size > 1 else float("nan"),
        "forgetting": float(acc[0] - acc[-1]) if acc.size else float("nan"),
        "diff_plasticity": float(plast[0] - plast[-1]) if plast.size else float("nan"),
    }
    return out


def fraction_summary(data: dict, key: str = "accuracies", fraction: float = 0.2) -> tuple[float, float]:
    """Mean of the first and of the last ``fraction`` of a per-task list (entry 0 excluded)."""
    values = _series(data, key)[1:]
    k = max(1, int(round(len(values) * fraction)))
    return float(np.nanmean(values[:k])), float(np.nanmean(values[-k:]))


def results_table(paths: Iterable[str | Path]) -> list[dict]:
    """One row per result file: task, approach label, the notebook metrics and first/last-20 % figures."""
    rows = []
    for path in find_results(paths):
        data = load_result(path)
        row = {"task": data.get("task", "?"), "approach": approach_label(path, data),
               "seed": data.get("seed"), "file": str(path)}
        row.update(notebook_metrics(data))
        if "accuracies" in data and len(data["accuracies"]) > 2:
            row["acc_first20"], row["acc_last20"] = fraction_summary(data, "accuracies")
        if "n_dead_units_per_task" in data and len(data["n_dead_units_per_task"]) > 2:
            _, row["dead_last20"] = fraction_summary(data, "n_dead_units_per_task")
        rows.append(row)
    order = {name: i for i, name in enumerate(APPROACH_ORDER)}
    rows.sort(key=lambda r: (r["task"], order.get(r["approach"], len(order)), r["approach"], str(r["seed"])))
    return rows


def format_table(rows: list[dict], columns: Iterable[str] | None = None) -> str:
    cols = list(columns or ("task", "approach", "seed", "average_accuracy", "average_plasticity",
                            "lipschitz_const", "forgetting", "diff_plasticity"))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grouped_curves(paths: Iterable[str | Path], key: str = "accuracies") -> dict[tuple[str, str], np.ndarray]:
    """``(task, approach)`` → array ``[seeds, entries]`` of a per-task list (truncated to the shortest)."""
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for path in find_results(paths):
        data = load_result(path)
        if key not in data:
            continue
        groups.setdefault((data.get("task", "?"), approach_label(path, data)), []).append(_series(data, key))
    out = {}
    for name, series in groups.items():
        n = min(len(s) for s in series)
        out[name] = np.stack([s[:n] for s in series])
    return out
