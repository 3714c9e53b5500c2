"""Straightforward per-example versions of the hot paths, for the benchmark and the tests.

They follow the original scripts' way of working: one Python iteration per example, a full sort
of the outputs for the margin, ``.item()`` per value, and a dictionary of growing lists; and, for
the inputs, one dataset item at a time through a torchvision transform. The package's own code
(:mod:`example_forgetting.stats`, :mod:`example_forgetting.train`) must give the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def loop_record(stats: dict[Any, Any], orig_ids: np.ndarray, outputs: torch.Tensor,
                targets: torch.Tensor, losses: torch.Tensor) -> None:
    """Append loss, 0/1 accuracy and margin of each example of a batch, one example at a time."""
    import torch

    _, predicted = torch.max(outputs.data, 1)
    acc = predicted == targets
    for j, orig in enumerate(np.asarray(orig_ids).tolist()):
        true_out = outputs.data[j, targets[j].item()]
        ordered, _ = torch.sort(outputs.data[j, :])
        other = ordered[-2] if acc[j] else ordered[-1]
        entry = stats.get(orig, [[], [], []])
        entry[0].append(losses[j].item())
        entry[1].append(int(acc[j].item()))
        entry[2].append(true_out.item() - other.item())
        stats[orig] = entry


def loop_batch_inputs(images_uint8: np.ndarray, positions: np.ndarray, transform) -> torch.Tensor:
    """Build a batch one example at a time through a per-image transform (the original's path)."""
    import torch
    from PIL import Image

    items = []
    for p in positions.tolist():
        img = images_uint8[p]
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        items.append(transform(pil))
    return torch.stack(items)


def loop_forgetting_totals(stats_paths: list, epochs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The order script's counting as the original wrote it: unpickle each statistics file, then
    one NumPy array, one transition search and one first-learned search per example; totals per
    example summed over the runs in a Python loop over the first run's ids.

    Returns ``(ids, totals, unforgettable)`` with ids in the first run's order; sorting them
    with :func:`example_forgetting.stats.sort_by_forgetting` gives the order script's output.
    Imports neither torch nor the package's scripts, so that a benchmark can measure it as the
    original script ran: NumPy and the (restricted) unpickler only.
    """
    from forgetting_common.safeload import load_pickle

    forgotten_all, first_learned_all = [], []
    for path in stats_paths:
        stats = load_pickle(path, what="statistics file")
        forgotten, first_learned = {}, {}
        for example_id, (_, accs, *_rest) in ((k, v) for k, v in stats.items() if not isinstance(k, str)):
            acc = np.array(accs[:epochs])
            forgotten[example_id] = len(np.where(acc[1:] - acc[:-1] == -1)[0])
            learned = np.where(acc == 1)[0]
            first_learned[example_id] = learned[0] if len(learned) else np.nan
        del stats
        forgotten_all.append(forgotten)
        first_learned_all.append(first_learned)
    ids, totals = [], []
    for example_id in forgotten_all[0]:
        total = 0
        for forgotten, first_learned in zip(forgotten_all, first_learned_all):
            total += epochs if np.isnan(first_learned[example_id]) else forgotten[example_id]
        ids.append(int(example_id))
        totals.append(total)
    totals_arr = np.array(totals, dtype=np.int64)
    return np.array(ids, dtype=np.int64), totals_arr, int((totals_arr == 0).sum())
