"""TensorBoard tags in the house namespaces while metrics.jsonl and W&B keep the original keys.

The records carry the original scripts' W&B key names ("Training accuracy", "Topographic
Similarity", "Copy Exact Match Perfect" …), which metrics.jsonl and W&B must keep.
``forgetting_common.runlog.RunLog`` takes :func:`tensorboard_tag` as its TensorBoard tag mapping.
"""

from __future__ import annotations

import re

from forgetting_common.runlog import is_counter

#: Measurements of the language, neither a training nor a test score.
STATS_KEYS = frozenset({"Topographic Similarity", "New Topographic Similarity", "Deterministic Entropy"})
#: Row labels, not curves.
LABEL_KEYS = frozenset({"Eval generation"})


def tensorboard_tag(key: str) -> str | None:
    """``stats/`` for the language measurements, ``eval/`` for the ease-of-teaching evaluation
    (fresh receivers), ``train/`` for the rest (scores on the training games or batch); runs of
    characters TensorBoard does not keep (spaces, brackets) as one underscore. None for counters
    such as ``Iter``."""
    if is_counter(key) or key in LABEL_KEYS:
        return None
    if key in STATS_KEYS:
        space = "stats"
    elif key.startswith("Eval "):
        space, key = "eval", key[len("Eval "):]
    else:
        space = "train"
    return f"{space}/" + re.sub(r"[^\w.\-]+", "_", key).strip("_")
