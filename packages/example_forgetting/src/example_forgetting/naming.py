"""The original output-file-name scheme: ``<arg>_<value>`` pieces joined by double underscores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MNIST_NAME_ARGS = ("dataset", "no_dropout", "seed", "sorting_file", "remove_n", "keep_lowest_n")
CIFAR_NAME_ARGS = (
    "dataset",
    "data_augmentation",
    "cutout",
    "seed",
    "sorting_file",
    "remove_n",
    "keep_lowest_n",
    "remove_subsample",
    "noise_percent_labels",
    "noise_percent_pixels",
    "noise_std_pixels",
)

STATS_SUFFIX = "__stats_dict.pkl"
BEST_ACC_SUFFIX = "__best_acc.txt"
CHANGED_LABELS_SUFFIX = "_changed_labels.txt"  # single underscore, as in the original


def save_fname(values: Mapping[str, Any], ordered: Sequence[str]) -> str:
    """``dataset_mnist__no_dropout_True__seed_1__...``: values printed with ``str()``."""
    return "__".join(f"{name}_{values[name]}" for name in ordered)


def matches(fname: str, pairs: Sequence[str] | None) -> bool:
    """The original's filter: every ``name value`` pair must occur as ``name_value__`` in ``fname``."""
    if not pairs:
        return True
    return all(f"{pairs[i]}_{pairs[i + 1]}__" in fname for i in range(0, len(pairs) - 1, 2))


def parse_fname(fname: str) -> dict[str, str] | None:
    """The ``name -> value`` pieces of a statistics file name of either script (values as
    written), or None for another file. Values may hold underscores (``permuted_mnist``)."""
    if not fname.endswith(STATS_SUFFIX):
        return None
    stem = fname[: -len(STATS_SUFFIX)]
    for names in (CIFAR_NAME_ARGS, MNIST_NAME_ARGS):
        pieces = stem.split("__")
        if len(pieces) != len(names):
            continue
        if all(p.startswith(n + "_") for p, n in zip(pieces, names)):
            return {n: p[len(n) + 1 :] for p, n in zip(pieces, names)}
    return None
