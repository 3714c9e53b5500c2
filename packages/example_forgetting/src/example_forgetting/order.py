"""``order_examples_by_forgetting.py``: statistics files in, the sorted order (and its histogram) out.

The inputs are the original's statistics pickles and, new, the compact ``tracked.npz`` files of
runs trained with ``--track forgetting`` (of this package or any other): a run folder's
``config.json`` stands in for the file name in ``--input_fname_args`` matching, and a
``tracked.npz`` whose run also left its statistics pickle in the folder is counted once, from the
pickle (which the original rules can cut to ``--epochs``).

Also the reader of sorted-order files that ``--sorting_file`` names. The counting itself is in
:mod:`example_forgetting.counting` (part of the method, :mod:`example_forgetting.stats`).
"""

from __future__ import annotations

import json
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
from example_forgetting.naming import STATS_SUFFIX, matches
from example_forgetting.stats_scan import AccuracyScanner

HISTOGRAM_SUFFIX = "_histogram.png"
#: forgetting_common.trackers.COMPACT_FILE, spelled out: that module imports torch, which the
#: order script does without unless it reads one (tests/test_track.py checks they are equal).
TRACKED_FILE = "tracked.npz"


def find_stats_files(input_dir: str | os.PathLike[str], pairs: list[str] | None) -> tuple[list[Path], list[Path]]:
    """``(included, skipped)`` stats files under ``input_dir`` (recursive), in sorted path order."""
    root = Path(input_dir)
    found = sorted(p for p in root.rglob("*stats_dict.pkl") if p.is_file())
    included = [p for p in found if matches(p.name, pairs)]
    skipped = [p for p in found if not matches(p.name, pairs)]
    return included, skipped


def run_config(path: Path) -> dict[str, Any] | None:
    """The ``config.json`` beside a ``tracked.npz`` (None: there is none)."""
    config_path = path.parent / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{config_path} is not a readable JSON file ({err}); it names the run of {path}") from err
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is not a run configuration (expected a JSON object); it names the run of {path}")
    return config


def _printed(value: Any) -> str:
    """A configuration value as the original's file names print it (``str()``: True, 0, 30.0)."""
    return str(value)


def config_matches(config: dict[str, Any] | None, pairs: list[str] | None) -> bool:
    """The original's file-name filter applied to a run's configuration: every ``name value`` pair
    of ``--input_fname_args`` must be a flag of the run with that value as ``str()`` prints it
    (what the file name would hold)."""
    if not pairs:
        return True
    if config is None:
        return False
    return all(pairs[i] in config and _printed(config[pairs[i]]) == pairs[i + 1] for i in range(0, len(pairs) - 1, 2))


def same_run_stats(path: Path) -> Path:
    """The statistics pickle that the run of ``OUT/runs/<save_fname>/tracked.npz`` wrote beside it."""
    return path.parent.parent.parent / (path.parent.name + STATS_SUFFIX)


def find_tracked_files(input_dir: str | os.PathLike[str], pairs: list[str] | None,
                       stats_files: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``(included, skipped with the reason)`` ``tracked.npz`` files under ``input_dir``, in sorted
    path order. One whose run's statistics pickle is among ``stats_files`` is skipped (the same run)."""
    stats = {p.resolve() for p in stats_files}
    included, skipped = [], []
    for path in sorted(p for p in Path(input_dir).rglob(TRACKED_FILE) if p.is_file()):
        if same_run_stats(path).resolve() in stats:
            skipped.append((path, "the same run as its statistics file"))
        elif config_matches(run_config(path), pairs):
            included.append(path)
        else:
            skipped.append((path, "its config.json does not match"))
    return included, skipped


def read_tracked(path: Path, epochs: int) -> RunForgetting:
    """One run's forgetting counts from a ``tracked.npz`` (a file whose examples were presented
    more than ``epochs`` times is refused: counts cannot be cut to the first ``epochs``)."""
    from forgetting_common.trackers import load_forgetting_counts  # torch, only when needed

    counts = load_forgetting_counts(path, epochs)
    return RunForgetting(ids=counts.ids, events=counts.events, learned=counts.learned,
                         first_learned=counts.first_learned, source=str(path))


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
    found_stats = included + skipped
    tracked, tracked_skipped = find_tracked_files(config.input_dir, pairs, found_stats)
    root = Path(config.input_dir)
    if not config.quiet:
        for path in skipped:
            print(f"skipping file: {path.name}")
        for path, why in tracked_skipped:
            print(f"skipping file: {path.relative_to(root)} ({why})")
    for path in included:
        print(f"including file: {path.name}")
    for path in tracked:
        print(f"including file: {path.relative_to(root)}")
    scanner = AccuracyScanner()
    runs = [read_run(path, config.epochs, scanner) if path.name != TRACKED_FILE else read_tracked(path, config.epochs)
            for path in progress(included + tracked, quiet=config.quiet, desc="counting", unit="file")]
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
