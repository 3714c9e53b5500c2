"""Plasticity, as upgd defines it: ``clamp(1 − L_after / max(L_before, 1e-8), 0, 1)`` per step,
``L_before`` the step's cross-entropy (from the training logits), ``L_after`` the cross-entropy
of the updated network on the same inputs. Both are batch means (upgd's steps are batches of
one). The extra forward pass runs in the network's current mode without gradients; it must not
change training, so the global RNG states (dropout) and the buffers (batch-norm running
statistics) are restored after it, and the dead-unit hooks do not see it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgetting_common.trackers.base import Tracker, accumulator_dtype
from forgetting_common.trackers.units import untracked_forward


def _fork_rng(device: torch.device):
    if device.type == "cuda":
        return torch.random.fork_rng(devices=[device.index if device.index is not None else torch.cuda.current_device()])
    if device.type == "mps":
        return torch.random.fork_rng(devices=[0], device_type="mps")
    return torch.random.fork_rng(devices=[])


def loss_after_step(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on ``inputs``, leaving the RNGs and buffers as they were."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        with torch.no_grad(), _fork_rng(inputs.device), untracked_forward():
            return F.cross_entropy(model(inputs), targets)
    finally:
        with torch.no_grad():
            for live, saved in buffers:
                live.copy_(saved)


class PlasticityTracker(Tracker):
    """Epoch scalar ``plasticity``: the mean of the per-step values over the epoch's steps.
    Needs ``model`` and ``inputs`` in ``on_batch``, called after the optimizer step."""

    name = "plasticity"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.total = torch.zeros((), dtype=accumulator_dtype(self.device), device=self.device)
        self.steps = 0

    def on_batch(self, indices, logits, targets, model=None, inputs=None) -> None:
        if model is None or inputs is None:
            raise ValueError("the plasticity tracker needs on_batch(..., model=, inputs=) after the optimizer step")
        before = F.cross_entropy(logits.detach(), targets)
        after = loss_after_step(model, inputs, targets)
        value = torch.clamp(1 - after / torch.clamp(before, min=1e-8), 0.0, 1.0)
        self.total += value.to(self.device, self.total.dtype)
        self.steps += 1

    def scalars(self, epoch: int) -> dict[str, float]:
        values = {"plasticity": float(self.total) / self.steps} if self.steps else {}
        self.total.zero_()
        self.steps = 0
        return values

    def tensors(self) -> dict[str, Any]:
        return {"total": self.total.cpu(), "steps": int(self.steps)}

    def load_tensors(self, state: dict[str, Any]) -> None:
        self.total.copy_(state["total"])
        self.steps = int(state["steps"])
