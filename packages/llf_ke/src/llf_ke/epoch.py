"""One pass over a loader: a training epoch (plain or CS-KD) or an evaluation; top-1/top-5."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from forgetting_common.distributed import Dist, all_reduce_sum, share_weight
from forgetting_common.errors import UserError
from torch import nn

from llf_ke.ddp import RankShareBatchSampler


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

    def result(self, dist: Dist | None = None) -> dict[str, float]:
        """The pass's means; with ``dist``, over every rank's examples."""
        sums = [self.loss, self.top1, self.top5]
        n = self.n
        if dist is not None and dist.enabled:
            total = all_reduce_sum(torch.stack([*sums, torch.tensor(float(n), dtype=self.loss.dtype,
                                                                     device=self.loss.device)]), dist)
            sums, n = list(total[:3]), int(round(float(total[3])))
        n = max(n, 1)
        loss, top1, top5 = (float(v) for v in sums)
        return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


def train_epoch(model: nn.Module, loader, criterion, optimizer, device: torch.device, bar=None,
                log_batch=None, cs_kd: bool = False, dist: Dist | None = None, on_step=None) -> dict[str, float]:
    """One pass over ``loader`` in train mode (every BN updates its statistics, frozen ones too).

    ``cs_kd``: each batch is anchors then same-class partners (:class:`llf_ke.data.PairBatchSampler`);
    the loss is the criterion on the anchors plus 3 x the KD term towards the partners'
    (no-gradient) predictions at temperature 4; accuracy is counted on the anchors.

    Several ranks (``loader`` draws through a :class:`~llf_ke.ddp.RankShareBatchSampler`,
    ``model`` is DDP-wrapped): each rank's mean loss is weighted by its share of the global
    batch, so the averaged gradient is the global batch's; the metrics cover every rank.

    ``on_step(positions, logits, targets, inputs)`` (``--track``; the loader then yields each
    example's position third): after every ``optimizer.step()``, on every rank, with the examples
    the gradient came from (CS-KD: the anchors; an empty share: none).
    """
    model.train()
    meter = Meter(device)
    nb = len(loader)
    shares = loader.batch_sampler if isinstance(loader.batch_sampler, RankShareBatchSampler) else None
    for i, (images, target, *positions) in enumerate(loader):
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        weight = 1.0
        if shares is not None:
            local_n, global_n = shares.sizes[i]
            weight = share_weight(local_n, global_n, shares.dist)
            if local_n == 0:  # a placeholder example: the forward pass only joins the reductions
                images, target = images[:0], target[:0]
        try:
            if cs_kd:
                half = images.shape[0] // 2
                target = target[:half]
                logits = model(images[:half])
                loss = criterion(logits, target) if half else logits.sum() * 0.0
                with torch.no_grad():
                    partner = model(images[half:])
                if half:
                    loss = loss + CSKD_LAMBDA * kd_loss(logits, partner.detach(), CSKD_TEMPERATURE)
            else:
                logits = model(images)
                loss = criterion(logits, target) if len(target) else logits.sum() * 0.0
        except ValueError as err:
            if shares is None or "more than 1 value per channel" not in str(err):
                raise
            raise UserError(f"rank {shares.dist.rank}: its share ({shares.sizes[i][0]} of a batch of "
                            f"{shares.sizes[i][1]}) is too small for BatchNorm to train on; pass --sync_bn "
                            "(statistics over the whole batch) or start fewer processes") from err
        optimizer.zero_grad(set_to_none=True)
        (loss * weight if weight != 1.0 else loss).backward()
        optimizer.step()
        if on_step is not None:
            on_step(positions[0][: len(target)], logits, target, images[: len(target)])
        if len(target):
            meter.add(loss, logits, target)
        if log_batch is not None and (i == 0 or i == nb - 1):
            log_batch(i, nb, float(loss.detach()))
        if bar is not None:
            bar.update(1)
    return meter.result(dist)


@torch.no_grad()
def evaluate(model: nn.Module, loader, criterion, device: torch.device, dist: Dist | None = None,
             on_logits=None) -> dict[str, float]:
    """Top-1/top-5 and mean loss over ``loader``; with ``dist``, over every rank's share."""
    model.eval()
    meter = Meter(device)
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        logits = model(images)
        meter.add(criterion(logits, target), logits, target)
        if on_logits is not None:  # --track: the trackers' evaluation values
            on_logits(logits, target)
    return meter.result(dist)
