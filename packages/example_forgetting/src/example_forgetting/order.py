"""Counting forgetting events, summing them over runs and sorting examples (spec section 8).

Works on statistics pickles written by this package *and* by the original scripts (ids as
numpy int64 or Python int, accuracy lists of Python ints, ``'train'``/``'test'`` string keys).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_pickle

from example_forgetting.naming import matches


@dataclass
class RunForgetting:
    """One run's per-example results for the first ``epochs`` presentations."""

    ids: np.ndarray  # original ids, in the pickle's insertion order
    events: np.ndarray  # number of 1 -> 0 transitions
    learned: np.ndarray  # bool: correct at least once
    first_learned: np.ndarray  # float: first presentation index with acc 1, NaN if never
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self, penalty: int) -> np.ndarray:
        """Forgetting events, with ``penalty`` for never-learned examples (the original's rule)."""
        return np.where(self.learned, self.events, penalty).astype(np.int64)

    def as_mapping(self, penalty: int) -> dict[int, int]:
        return dict(zip(self.ids.tolist(), self.counts(penalty).tolist()))


def example_keys(stats: dict[Any, Any]) -> list[Any]:
    """The example ids of a stats dict (every key that is not a string)."""
    return [k for k in stats if not isinstance(k, str)]


def acc_matrix(stats: dict[Any, Any], epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, acc, valid)``: accuracy histories cut to ``epochs`` columns, padded where short."""
    keys = example_keys(stats)
    ids = np.array([int(k) for k in keys], dtype=np.int64)
    rows = [stats[k][1][:epochs] for k in keys]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    if len(rows) and np.all(lengths == width):
        acc = np.asarray(rows, dtype=np.int8).reshape(len(rows), width)
        valid = np.ones_like(acc, dtype=bool)
    else:
        acc = np.zeros((len(rows), width), dtype=np.int8)
        valid = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            acc[i, : len(r)] = r
            valid[i, : len(r)] = True
    return ids, acc, valid


def forgetting_from_acc(acc: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised ``(events, learned, first_learned)`` from an ``[N, E]`` 0/1 accuracy matrix."""
    acc = np.asarray(acc).astype(np.int8)
    if valid is None:
        valid = np.ones(acc.shape, dtype=bool)
    if acc.shape[1] >= 2:
        drops = (acc[:, :-1] == 1) & (acc[:, 1:] == 0) & valid[:, 1:]
        events = drops.sum(axis=1)
    else:
        events = np.zeros(acc.shape[0], dtype=np.int64)
    hit = (acc == 1) & valid
    learned = hit.any(axis=1)
    first = np.where(learned, hit.argmax(axis=1), 0).astype(np.float64)
    first[~learned] = np.nan
    return events.astype(np.int64), learned, first


def run_forgetting(stats: dict[Any, Any], epochs: int, source: str = "") -> RunForgetting:
    ids, acc, valid = acc_matrix(stats, epochs)
    events, learned, first = forgetting_from_acc(acc, valid)
    return RunForgetting(ids=ids, events=events, learned=learned, first_learned=first, source=source)


def find_stats_files(input_dir: str | os.PathLike[str], pairs: list[str] | None) -> tuple[list[Path], list[Path]]:
    """``(included, skipped)`` stats files under ``input_dir`` (recursive), in sorted path order."""
    root = Path(input_dir)
    found = sorted(p for p in root.rglob("*stats_dict.pkl") if p.is_file())
    included = [p for p in found if matches(p.name, pairs)]
    skipped = [p for p in found if not matches(p.name, pairs)]
    return included, skipped


def load_stats(path: str | os.PathLike[str]) -> dict[Any, Any]:
    """Load one stats pickle (plain data only: a file asking for anything else is refused)."""
    stats = load_pickle(path, what="statistics file")
    if not isinstance(stats, dict) or not example_keys(stats):
        raise UserError(f"{path} is not a statistics file (expected a dict of per-example lists)")
    try:
        first = stats[example_keys(stats)[0]]
        if len(first) < 2:
            raise TypeError
    except TypeError as err:
        raise UserError(f"{path} is not a statistics file (entries must be [losses, accs, margins])") from err
    return stats


@dataclass
class Ordering:
    indices: np.ndarray  # original ids, least-forgotten first
    counts: np.ndarray  # matching totals
    unforgettable: int
    runs: list[RunForgetting]

    def as_pickle_dict(self) -> dict[str, np.ndarray]:
        return {"indices": self.indices, "forgetting counts": self.counts}


def total_counts(runs: list[RunForgetting], epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, totals)`` over runs; every run must hold the same example ids."""
    if not runs:
        raise ValueError("no runs")
    base = runs[0]
    ids = np.sort(base.ids)
    totals = np.zeros(len(ids), dtype=np.int64)
    for run in runs:
        order = np.argsort(run.ids, kind="stable")
        if len(run.ids) != len(ids) or not np.array_equal(run.ids[order], ids):
            raise UserError(
                f"{run.source or 'a run'} holds a different set of examples than {base.source or 'the first run'} "
                f"({len(run.ids)} vs {len(ids)}); only runs on the same training set can be combined"
            )
        totals += run.counts(epochs)[order]
    return ids, totals


def sort_by_forgetting(ids: np.ndarray, totals: np.ndarray, tie_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort by (total, rank in a seeded random permutation): ties broken at random."""
    ids = np.asarray(ids, dtype=np.int64)
    canonical = np.argsort(ids, kind="stable")
    rank = np.empty(len(ids), dtype=np.int64)
    rank[canonical] = np.random.RandomState(tie_seed).permutation(len(ids))
    order = np.lexsort((rank, totals))
    return ids[order], np.asarray(totals, dtype=np.int64)[order]


def order_examples(runs: list[RunForgetting], epochs: int, tie_seed: int = 0) -> Ordering:
    ids, totals = total_counts(runs, epochs)
    sorted_ids, sorted_counts = sort_by_forgetting(ids, totals, tie_seed)
    return Ordering(sorted_ids, sorted_counts, int((totals == 0).sum()), runs)


def load_sorting(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``indices`` (and, when present, ``forgetting counts``) of a sorted-order pickle."""
    data = load_pickle(path, what="sorting file")
    if not isinstance(data, dict) or "indices" not in data:
        raise UserError(f"sorting file {path} is malformed: expected a dict with an 'indices' entry")
    raw = np.asarray(data["indices"]).reshape(-1)
    if raw.dtype.kind in "iu":
        indices = raw.astype(np.int64)
    elif raw.dtype.kind == "O" and all(isinstance(v, int | np.integer) for v in raw.tolist()):
        indices = np.array([int(v) for v in raw.tolist()], dtype=np.int64)
    else:
        raise UserError(f"sorting file {path} is malformed: 'indices' is not an integer array")
    if len(np.unique(indices)) != len(indices):
        raise UserError(f"sorting file {path} is malformed: 'indices' holds repeated ids")
    counts = data.get("forgetting counts")
    return indices, None if counts is None else np.asarray(counts)
