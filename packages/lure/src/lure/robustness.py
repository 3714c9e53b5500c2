"""Accuracy under common corruptions (the paper's robustness claim; the released code had none).

Five of Hendrycks & Dietterich's CIFAR-10-C corruptions, computed on batches of images in [0, 1]
with the CIFAR-10-C severity constants (checked against the public ``make_cifar_c`` definitions):

* gaussian_noise: ``x + N(0, c²)``, c = 0.04, 0.06, 0.08, 0.09, 0.10
* shot_noise: ``Poisson(x·c) / c``, c = 500, 250, 100, 75, 50
* impulse_noise: salt and pepper on a fraction c of the entries, c = 0.01, 0.02, 0.03, 0.05, 0.07
* contrast: ``(x − mean)·c + mean`` (mean per image and channel), c = 0.75, 0.5, 0.4, 0.3, 0.15
* brightness: HSV value + c, c = 0.05, 0.1, 0.15, 0.2, 0.3 (done without the HSV round trip:
  adding to V while keeping H and S scales the RGB triple by V'/V)

Every result is clipped to [0, 1]. Randomness comes from the given generator (on the CPU).
"""

from __future__ import annotations

import torch
from forgetting_common.distributed import Dist, all_reduce_sum

from lure.ddp import batch_share

SEVERITIES = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt a batch ``[B, C, H, W]`` in [0, 1] with ``name`` at ``severity`` 1..5."""
    if name not in SEVERITIES:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(SEVERITIES)}")
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    c = SEVERITIES[name][severity - 1]
    if name == "gaussian_noise":
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        out = x + c * noise
    elif name == "shot_noise":
        out = torch.poisson((x * c).cpu(), generator=generator).to(x.device) / c
    elif name == "impulse_noise":
        u = torch.rand(x.shape, generator=generator).to(x.device)
        salt = torch.rand(x.shape, generator=generator).to(x.device) < 0.5
        hit = u < c
        out = torch.where(hit, salt.to(x.dtype), x)
    elif name == "contrast":
        means = x.mean(dim=(2, 3), keepdim=True)
        out = (x - means) * c + means
    else:  # brightness
        value = x.max(dim=1, keepdim=True).values
        new_value = torch.clamp(value + c, 0, 1)
        scaled = x * (new_value / value.clamp_min(1e-12))
        out = torch.where(value > 0, scaled, new_value.expand_as(x))
    return out.clamp(0, 1)


@torch.no_grad()
def corruption_accuracy(model: torch.nn.Module, source, batch_size: int, seed: int = 0,
                        dist: Dist | None = None) -> dict[str, list[float]]:
    """Test accuracy (%) per corruption and severity over the whole ``source``.

    Several ranks (``dist``): each corrupts every whole batch (the same draws as one process)
    and classifies its share; the counts are summed over ranks.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n = len(source)
    out: dict[str, list[float]] = {}
    for name in SEVERITIES:
        accs = []
        for severity in range(1, 6):
            correct = 0
            for start in range(0, n, batch_size):
                x, y = source.fetch(torch.arange(start, min(n, start + batch_size)))
                x = corrupt(x, name, severity, gen)
                share = batch_share(len(y), dist)
                pred = model(x[share]).argmax(1)
                correct += int((pred == y[share]).sum())
            if dist is not None and dist.enabled:
                correct = int(all_reduce_sum(torch.tensor([correct], dtype=torch.int64, device=dist.device), dist))
            accs.append(100.0 * correct / max(1, n))
        out[name] = accs
    return out


def mean_corruption_accuracy(table: dict[str, list[float]]) -> float:
    values = [a for accs in table.values() for a in accs]
    return sum(values) / len(values) if values else float("nan")
