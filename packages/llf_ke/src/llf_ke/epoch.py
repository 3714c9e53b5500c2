"""One pass over a loader: a training epoch (plain or CS-KD) or an evaluation; top-1/top-5."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """CS-KD's consistency term: T^2 * KL(softmax(teacher/T) || softmax(student/T)), per sample."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="sum") * temperature**2 / student.shape[0]


#: CS-KD's weight of the consistency term and its temperature (fixed in the original).
CSKD_LAMBDA = 3.0
CSKD_TEMPERATURE = 4.0


def make_criterion(label_smoothing: float) -> nn.Module:
    """Cross-entropy with label smoothing: PyTorch's equals the original's hand-written
    ``(1-eps)·NLL + eps·mean_k(-log p_k)`` (tested against a hand-computed case)."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Iterable[int] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k logits, for each k.

    Hand-written (no torchmetrics in this workspace's dependencies): k is capped at the class
    count, so a set with fewer than 5 classes does not crash the top-5 count as the original did.
    """
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred.eq(target[:, None])
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


class Meter:
    """Sums on the device; one synchronisation at the end of a pass."""

    def __init__(self, device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.loss = torch.zeros((), device=device, dtype=dtype)
        self.top1 = torch.zeros((), device=device, dtype=dtype)
        self.top5 = torch.zeros((), device=device, dtype=dtype)
        self.n = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        b = target.shape[0]
        c1, c5 = topk_correct(logits.detach(), target)
        self.loss += loss.detach().to(self.loss.dtype) * b
        self.top1 += c1
        self.top5 += c5
        self.n += b

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"loss": float(self.loss) / n, "top1": 100.0 * float(self.top1) / n, "top5": 100.0 * float(self.top5) / n}


def train_epoch(model: nn.Module, loader, criterion, optimizer, device: torch.device, bar=None,
                log_batch=None, cs_kd: bool = False) -> dict[str, float]:
    """One pass over ``loader`` in train mode (every BN updates its statistics, frozen ones too).

    ``cs_kd``: each batch is anchors then same-class partners (:class:`llf_ke.data.PairBatchSampler`);
    the loss is the criterion on the anchors plus 3 x the KD term towards the partners'
    (no-gradient) predictions at temperature 4; accuracy is counted on the anchors.
    """
    model.train()
    meter = Meter(device)
    nb = len(loader)
    for i, (images, target) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if cs_kd:
            half = images.shape[0] // 2
            target = target[:half]
            logits = model(images[:half])
            loss = criterion(logits, target)
            with torch.no_grad():
                partner = model(images[half:])
            loss = loss + CSKD_LAMBDA * kd_loss(logits, partner.detach(), CSKD_TEMPERATURE)
        else:
            logits = model(images)
            loss = criterion(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        meter.add(loss, logits, target)
        if log_batch is not None and (i == 0 or i == nb - 1):
            log_batch(i, nb, float(loss.detach()))
        if bar is not None:
            bar.update(1)
    return meter.result()


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion, device: torch.device) -> dict[str, float]:
    model.eval()
    meter = Meter(device)
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        logits = model(images)
        meter.add(criterion(logits, target), logits, target)
    return meter.result()
