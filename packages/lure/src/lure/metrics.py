"""Evaluating a model: predictions over a source, accuracy, calibration (ECE, NLL, Brier), the cumulative error."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from forgetting_common.distributed import Dist, all_reduce_sum
from torch import nn

from lure.ddp import batch_share


@torch.no_grad()
def predict(model: nn.Module, source, ids: torch.Tensor | None, batch_size: int,
            augment=None, generator: torch.Generator | None = None,
            dist: Dist | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of ``ids`` of ``source`` (all of it when ``ids`` is None), in eval mode.

    Several ranks (``dist``): every rank augments each whole batch (the generator's draws stay
    one process's) and runs the model on its share; the logits of all ranks are summed into
    one table, so every rank returns the whole result.
    """
    model.eval()
    n = len(source) if ids is None else len(ids)
    outs, labels, rows = [], [], []
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size)) if ids is None else ids[start:start + batch_size]
        x, y = source.fetch(idx)
        if augment is not None:
            x = augment(x, generator)
        share = batch_share(len(idx), dist)
        outs.append(model(x[share]).float())
        labels.append(y)
        rows.append(torch.arange(start, start + len(idx))[share])
    if not outs:
        return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64)
    logits = torch.cat(outs)
    if dist is not None and dist.enabled:
        table = logits.new_zeros((n, logits.shape[1]))
        table[torch.cat(rows).to(logits.device)] = logits
        logits = all_reduce_sum(table, dist)  # each row is one rank's, the others add zeros: exact
    return logits, torch.cat(labels)


def accuracy_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Accuracy (%) and mean cross-entropy; ``(0, 0)`` for an empty set."""
    if len(labels) == 0:
        return 0.0, 0.0
    acc = 100.0 * float((logits.argmax(1) == labels).float().mean())
    return acc, float(F.cross_entropy(logits, labels))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """``Σ_b |B_b|/n · |acc(B_b) − conf(B_b)|`` over equal-width bins of the max-softmax confidence.

    Bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]`` (the first bin also holds 0).
    Hand-written: torchmetrics (the original's pinned but unused dependency) is not in this
    workspace, and neither scipy nor scikit-learn has an ECE.
    """
    if probs.numel() == 0:
        return 0.0
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(torch.float64)
    conf = conf.to(torch.float64)
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    n = float(len(labels))
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        inside = bins == b
        count = int(inside.sum())
        if count:
            ece += count / n * (correct[inside].mean() - conf[inside].mean()).abs()
    return float(ece)


def calibration_metrics(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, float]:
    """Accuracy (%), misclassified count, ECE, NLL and Brier score of a set of logits."""
    logits = logits.detach().to(torch.float64).cpu()
    labels = labels.detach().cpu()
    probs = F.softmax(logits, dim=1)
    onehot = F.one_hot(labels, probs.shape[1]).to(torch.float64)
    wrong = int((probs.argmax(1) != labels).sum())
    n = max(1, len(labels))
    return {
        "acc": 100.0 * (len(labels) - wrong) / n,
        "errors": wrong,
        "ece": expected_calibration_error(probs, labels, n_bins),
        "nll": float(F.cross_entropy(logits, labels)) if len(labels) else 0.0,
        "brier": float(((probs - onehot) ** 2).sum(1).mean()) if len(labels) else 0.0,
    }


def anytime_relative_errors(cer_counts: list[int], n_test: int) -> list[float]:
    """The original's "Anytime Relative Error": consecutive differences of error counts / test size."""
    return [(cer_counts[i] - cer_counts[i - 1]) / n_test for i in range(1, len(cer_counts))]
