"""TensorBoard tags in the house namespaces while metrics.jsonl and W&B keep the original keys.

The probe records carry the original script's W&B key names ("True Label Accuracy", "Copy
Train loss" …), which metrics.jsonl and W&B must keep. The run's
``forgetting_common.runlog.RunLog`` takes :func:`tensorboard_tag` as its TensorBoard tag mapping.
"""

from __future__ import annotations

from forgetting_common.runlog import is_counter

#: Per-batch statistics that are neither a training nor a test measurement.
STATS_KEYS = frozenset({"Random Group Size"})
#: The prefix of the ``--track`` values in metrics.jsonl (``track/forgetting_events`` …).
TRACK_PREFIX = "track/"


def tensorboard_tag(key: str) -> str | None:
    """``train/<key>`` for the probe's scores (all on the training batch), ``stats/<key>`` for
    group sizes and the ``--track`` values, spaces as underscores (TensorBoard's own spelling);
    None for counters (Iter, Epoch), which are the x axis, not a curve."""
    if is_counter(key):
        return None
    if key.startswith(TRACK_PREFIX):  # --track values: stats/forgetting_events …
        return "stats/" + key[len(TRACK_PREFIX):]
    return ("stats/" if key in STATS_KEYS else "train/") + key.replace(" ", "_")
