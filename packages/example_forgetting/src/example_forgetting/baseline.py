"""Straightforward per-example versions of the hot paths, for the benchmark and the tests.

They follow the original scripts' way of working: one Python iteration per example, a full sort
of the outputs for the margin, ``.item()`` per value, and a dictionary of growing lists; and, for
the inputs, one dataset item at a time through a torchvision transform. The package's own code
(:mod:`example_forgetting.stats`, :mod:`example_forgetting.train`) must give the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def loop_record(stats: dict[Any, Any], orig_ids: np.ndarray, outputs: torch.Tensor,
                targets: torch.Tensor, losses: torch.Tensor) -> None:
    """Append loss, 0/1 accuracy and margin of each example of a batch, one example at a time."""
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
    from PIL import Image

    items = []
    for p in positions.tolist():
        img = images_uint8[p]
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        items.append(transform(pil))
    return torch.stack(items)
