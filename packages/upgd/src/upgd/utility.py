"""The utility-approximation experiment (``run_utility.py``, the paper's Figure 2).

Each step, after the optimizer's update, every weight's approximate utility (first order −g⊙w,
second order −g⊙w + ½·h⊙w², random, weight magnitude |w|, squared gradient g²) is compared with
the *oracle* utility — the change of the loss when that single weight is set to zero — by a rank
correlation over all weights (global) and per tensor (layer-wise, averaged). Faithful quirks: the
oracle uses the updated network but subtracts the pre-update loss, and the original's "Spearman"
is computed on ``argsort`` outputs (the inverse permutations), not on ranks. A true Spearman ρ is
logged beside it (``*_true`` keys).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, vmap

MEASURES = ("first_order", "second_order", "weight", "g2", "random")


FEATURE_MEASURES = ("first_order", "second_order", "g2", "random")


def _selected(net: torch.nn.Module, features: bool):
    """All parameters, or (feature-wise) only the gates, whose utility is that of their unit."""
    return [(n, p) for n, p in net.named_parameters() if not features or "gate" in n]


def approximate_utilities(net: torch.nn.Module, generator: torch.Generator | None = None,
                          features: bool = False) -> dict[str, list]:
    selected = [p for _, p in _selected(net, features)]
    out: dict[str, list] = {m: [] for m in MEASURES}
    for p in selected:
        w, g = p.detach(), p.grad
        out["first_order"].append(-g * w)
        h = getattr(p, "hesscale", None)
        if h is not None:
            out["second_order"].append(-g * w + 0.5 * h * w * w)
        out["weight"].append(w.abs())
        out["g2"].append(g * g)
        out["random"].append(torch.rand(w.shape, generator=generator, device=w.device))
    if features:
        out.pop("weight")  # every gate is 1
    return {k: v for k, v in out.items() if v and len(v) == len(selected)}


def oracle_utilities(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_before: torch.Tensor,
                     criterion, features: bool = False) -> list[torch.Tensor]:
    """``L(w with w_i = 0) − loss_before`` for every weight (or every gate, i.e. unit, with
    ``features``), batched with ``vmap`` per tensor."""
    params = {n: p.detach() for n, p in net.named_parameters()}
    out = []
    for name, _ in _selected(net, features):
        w = params[name]
        k = w.numel()
        eye = torch.eye(k, dtype=w.dtype, device=w.device)
        batch = (w.reshape(1, k) * (1 - eye)).reshape(k, *w.shape)  # copy i has weight i zeroed

        def loss_with(wi, name=name):
            local = dict(params)
            local[name] = wi
            return criterion(functional_call(net, local, (x,)), y)

        with torch.no_grad():
            losses = vmap(loss_with)(batch)
        out.append((losses - loss_before).reshape(w.shape))
    return out


def argsort_spearman(approx: list[torch.Tensor], oracle: list[torch.Tensor]) -> float:
    """The original's coefficient: 1 − 6·Σ(argsort(a) − argsort(o))² / (n(n²−1))."""
    # Hand-written on purpose: it reproduces the original's quirk (argsorts, not ranks); scipy's
    # spearmanr gives the true coefficient (true_spearman).
    a = np.argsort(torch.cat([t.reshape(-1) for t in approx]).cpu().numpy())
    o = np.argsort(torch.cat([t.reshape(-1) for t in oracle]).cpu().numpy())
    n = len(a)
    return float(1 - 6.0 * np.sum((a - o).astype(np.float64) ** 2) / (n * (n * n - 1)))


def true_spearman(approx: list[torch.Tensor], oracle: list[torch.Tensor]) -> float:
    from scipy.stats import spearmanr

    a = torch.cat([t.reshape(-1) for t in approx]).cpu().numpy()
    o = torch.cat([t.reshape(-1) for t in oracle]).cpu().numpy()
    rho = spearmanr(a, o).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def layerwise(fn, approx: list[torch.Tensor], oracle: list[torch.Tensor]) -> float:
    """Mean over tensors with more than one element of the per-tensor coefficient."""
    coeffs = [fn([a], [o]) for a, o in zip(approx, oracle) if o.numel() > 1]
    return float(np.mean(coeffs)) if coeffs else float("nan")
