"""``order_examples_by_forgetting.py``: statistics files in, the sorted order (and its histogram) out.

Also the reader of sorted-order files that ``--sorting_file`` names. The counting itself is in
:mod:`example_forgetting.counting` (part of the method, :mod:`example_forgetting.stats`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from forgetting_common.atomic import atomic_pickle_dump
from forgetting_common.errors import UserError
from forgetting_common.runlog import progress
from forgetting_common.safeload import load_pickle

from example_forgetting.cli import OrderConfig
from example_forgetting.counting import (
    Ordering,
    RunForgetting,
    example_keys,
    forgetting_from_acc,
    order_examples,
    run_forgetting,
)
from example_forgetting.naming import matches
from example_forgetting.stats_scan import AccuracyScanner

HISTOGRAM_SUFFIX = "_histogram.png"


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


def read_run(path: str | os.PathLike[str], epochs: int, scanner: AccuracyScanner | None = None) -> RunForgetting:
    """One run's forgetting counts: the accuracies read straight from the file's bytes where it
    has the statistics layout (:mod:`example_forgetting.stats_scan`: tens of times faster than
    unpickling it, in a quarter of the memory), else from the unpickled dict; the same numbers."""
    scanned = (scanner or AccuracyScanner())(path, epochs)
    if scanned is None:
        return run_forgetting(load_stats(path), epochs, source=str(path))
    ids, acc = scanned
    events, learned, first = forgetting_from_acc(acc)
    return RunForgetting(ids=ids, events=events, learned=learned, first_learned=first, source=str(path))


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


def histogram_path(target: Path) -> Path:
    """``<output_dir>/<output_name>_histogram.png`` beside ``<output_name>.pkl``."""
    return target.with_name(target.name[: -len(".pkl")] + HISTOGRAM_SUFFIX)


def order(config: OrderConfig) -> Ordering:
    """Count, sum and sort as the original script; write the pickle and (unless ``--no_plot``)
    the histogram of the totals (paper Fig. 1)."""
    pairs = config.input_fname_args
    if pairs is not None and len(pairs) % 2:
        raise UserError(
            f"--input_fname_args takes name value pairs, got an odd number of tokens: {' '.join(pairs)}"
        )
    if "/" in config.output_file:
        raise UserError(f"--output_name {config.output_name!r} must be a file name, not a path (use --output_dir)")
    target = Path(config.output_dir) / config.output_file
    figure = None if config.no_plot else histogram_path(target)
    for path in (target, figure):
        if path is not None and path.exists() and not config.overwrite:
            raise UserError(f"{path} already exists; pass --overwrite to replace it or choose another --output_name")
    if not Path(config.input_dir).is_dir():
        raise UserError(f"--input_dir {config.input_dir} is not a folder")
    print(f"output: {target}", flush=True)
    print(config.to_dict())
    included, skipped = find_stats_files(config.input_dir, pairs)
    if not config.quiet:
        for path in skipped:
            print(f"skipping file: {path.name}")
    for path in included:
        print(f"including file: {path.name}")
    scanner = AccuracyScanner()
    runs = [read_run(path, config.epochs, scanner)
            for path in progress(included, quiet=config.quiet, desc="counting", unit="file")]
    if not runs:
        raise UserError(f"No input files found in {config.input_dir} that match {pairs}")
    ordering = order_examples(runs, config.epochs, config.tie_seed)
    print(f"Number of unforgettable examples: {ordering.unforgettable}")
    atomic_pickle_dump(ordering.as_pickle_dict(), target)
    print(f"wrote {target} ({len(ordering.indices)} examples from {len(runs)} runs)", file=sys.stderr)
    if figure is not None:
        from example_forgetting.plots import save_ordering_histogram

        save_ordering_histogram(ordering, config.epochs, figure, title=config.output_file[: -len(".pkl")])
        print(f"wrote {figure}", file=sys.stderr)
    return ordering
