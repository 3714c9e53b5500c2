"""Counting forgetting events, summing them over runs and sorting examples (spec section 8).

Part of the paper's method (:mod:`example_forgetting.stats` re-exports it); kept apart from the
recorder so that ``order_examples_by_forgetting.py`` runs without importing torch (about 600 MB
of memory and 2 s of start-up). Works on statistics written by this package *and* by the
original scripts (ids as numpy int64 or Python int, accuracy lists of Python ints,
'train'/'test' string keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from forgetting_common.errors import UserError


@dataclass
class RunForgetting:
    """One run's per-example results for the first ``epochs`` presentations."""

    ids: np.ndarray  # original ids, in the pickle's insertion order
    events: np.ndarray  # number of 1 -> 0 transitions
    learned: np.ndarray  # bool: correct at least once
    first_learned: np.ndarray  # float: first presentation index with acc 1, NaN if never
    source: str = ""

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
