"""Trackers of the weights themselves, read at the end of each epoch: matrix rank (upgd's
``weight_rank``), effective rank, and the distance from the initial weights."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from forgetting_common.trackers.base import Tracker


def _f64(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64 (on the CPU for MPS, which has no float64)."""
    return t.detach().to("cpu" if t.device.type == "mps" else t.device, torch.float64)


def _weight_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The ``weight`` parameters of two or more dimensions (biases and norm scales excluded)."""
    return [(name, p.detach()) for name, p in model.named_parameters()
            if name.rsplit(".", 1)[-1] == "weight" and p.dim() >= 2]


def weight_rank(model: nn.Module) -> float:
    """upgd's rule: Σ rank / Σ max-rank over the weights; a kernel (``dim > 2``) counts the mean
    ``matrix_rank`` of its k×k slices against ``min(kh, kw)``, a matrix its ``matrix_rank``
    against ``min(shape)`` (``torch.linalg.matrix_rank``'s default tolerance). upgd picks the
    weights by name (``"weight" in name``, kernels by ``"conv" in name``); here by shape, which
    is the same on its networks and skips the 1-D scales of norm layers."""
    rank_sum, max_sum = 0.0, 0
    for _, w in _weight_matrices(model):
        w = w.float()
        if w.dim() > 2:
            rank_sum += float(torch.linalg.matrix_rank(w).float().mean())
            max_sum += min(w.shape[-2], w.shape[-1])
        else:
            rank_sum += float(torch.linalg.matrix_rank(w))
            max_sum += min(w.shape)
    return rank_sum / max(max_sum, 1)


def effective_rank(w: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank ``exp(−Σ p_i log p_i)``, ``p = σ / Σσ`` (0 log 0 = 0); 0 for a
    zero matrix. A kernel is read as the matrix ``[out, in·k·k]``."""
    sigma = torch.linalg.svdvals(_f64(w.reshape(w.shape[0], -1)))
    total = sigma.sum()
    if float(total) == 0.0:
        return 0.0
    p = sigma / total
    entropy = -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum()
    return float(torch.exp(entropy))


class WeightRankTracker(Tracker):
    """``weight_rank`` (see :func:`weight_rank`) of the network at each epoch's end."""

    name = "weight_rank"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def scalars(self, epoch: int) -> dict[str, float]:
        return {"weight_rank": weight_rank(self.model)}


class EffectiveRankTracker(Tracker):
    """``effective_rank`` = Σ effective rank / Σ ``min(out, in·k·k)`` over the weights (normalised
    as ``weight_rank``), at each epoch's end."""

    name = "effective_rank"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def scalars(self, epoch: int) -> dict[str, float]:
        ranks, most = 0.0, 0
        for _, w in _weight_matrices(self.model):
            ranks += effective_rank(w)
            most += min(w.shape[0], math.prod(w.shape[1:]))
        return {"effective_rank": ranks / max(most, 1)}


class InitDistanceTracker(Tracker):
    """Distance of all parameters from their values when the tracker was built (the start of
    training): ``init_distance`` = ‖θ − θ₀‖₂ over every parameter, and ``init_distance_relative``
    = that over ‖θ₀‖₂. θ₀ travels in the checkpoint, so a resumed run measures from the same start."""

    name = "init_distance"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.init = {name: p.detach().clone() for name, p in model.named_parameters()}

    def scalars(self, epoch: int) -> dict[str, float]:
        params = dict(self.model.named_parameters())
        diff = sum(float((_f64(params[k]) - _f64(v)).pow(2).sum()) for k, v in self.init.items())
        norm = sum(float(_f64(v).pow(2).sum()) for v in self.init.values())
        distance = math.sqrt(diff)
        return {"init_distance": distance,
                "init_distance_relative": distance / math.sqrt(norm) if norm > 0 else math.nan}

    def tensors(self) -> dict[str, Any]:
        return {"init": {k: v.cpu() for k, v in self.init.items()}}

    def load_tensors(self, state: dict[str, Any]) -> None:
        if set(state["init"]) != set(self.init):
            raise ValueError("init_distance state for a different network")
        self.init = {k: v.to(self.init[k].device) for k, v in state["init"].items()}
