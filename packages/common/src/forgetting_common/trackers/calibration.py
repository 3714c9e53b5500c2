"""Expected calibration error, as lure computes it: 15 equal-width bins of the max-softmax
confidence, bin ``b`` holding ``(b/15, (b+1)/15]`` (the first also 0), and
``ECE = Σ_b |B_b|/n · |acc(B_b) − conf(B_b)|``. Accumulated as per-bin sums over every call of
the epoch, so an evaluation split into batches gives the ECE of the whole set.
"""

from __future__ import annotations

from typing import Any

import torch

from forgetting_common.trackers.base import Tracker, accumulator_dtype

N_BINS = 15


class BinnedCalibration:
    """Per-bin example counts, correct counts and confidence sums (device tensors)."""

    def __init__(self, device: torch.device, n_bins: int = N_BINS) -> None:
        self.n_bins = n_bins
        dtype = accumulator_dtype(device)
        self.sums = torch.zeros(3, n_bins, dtype=dtype, device=device)  # count, correct, confidence

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        probs = torch.softmax(logits.detach(), dim=1)
        conf, predicted = probs.max(dim=1)
        conf = conf.to(self.sums.device, self.sums.dtype)
        correct = (predicted == targets).to(self.sums.device, self.sums.dtype)
        bins = torch.clamp(torch.ceil(conf * self.n_bins).long() - 1, 0, self.n_bins - 1)
        self.sums[0].index_add_(0, bins, torch.ones_like(conf))
        self.sums[1].index_add_(0, bins, correct)
        self.sums[2].index_add_(0, bins, conf)

    def ece(self) -> float | None:
        count, correct, confidence = self.sums
        n = float(count.sum())
        if n == 0:
            return None
        filled = count > 0
        gap = (correct[filled] - confidence[filled]).abs()  # |acc − conf| · |B|
        return float(gap.sum()) / n


class ECETracker(Tracker):
    """Epoch scalars ``ece`` (evaluations) and ``train_ece`` (the training batches' logits)."""

    name = "ece"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.train = BinnedCalibration(self.device)
        self.eval = BinnedCalibration(self.device)

    def on_batch(self, indices, logits, targets, model=None, inputs=None) -> None:
        self.train.add(logits, targets)

    def on_eval(self, logits, targets, model=None) -> None:
        self.eval.add(logits, targets)

    def scalars(self, epoch: int) -> dict[str, float]:
        values = {key: value for key, value in (("ece", self.eval.ece()), ("train_ece", self.train.ece()))
                  if value is not None}
        self.train.sums.zero_()
        self.eval.sums.zero_()
        return values

    def tensors(self) -> dict[str, Any]:
        return {"train": self.train.sums.cpu(), "eval": self.eval.sums.cpu()}

    def load_tensors(self, state: dict[str, Any]) -> None:
        self.train.sums.copy_(state["train"])
        self.eval.sums.copy_(state["eval"])
