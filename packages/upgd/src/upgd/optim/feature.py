"""Feature-wise UPGD: a hidden unit's utility is that of its gate weight (``*_gates`` networks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from upgd.optim.base import NamedOptimizer


class FeatureUPGD(NamedOptimizer):
    """Parameters are visited in reverse order. A gate sets the current unit utilities; the
    bias and then the weight of the layer feeding it are updated with the per-unit scaling
    (rows of the weight); parameters visited with no gate utility set (the output layer, or
    every parameter of a network without gates) get plain SGD with weight decay."""

    skip_gates = False

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0, beta_utility: float = 0.0,
                 sigma: float = 1.0, *, generator=None, second_order: bool = False,
                 scaling: str = "global", protect: bool = True, utility_max: str = "raw",
                 guard: bool = False):
        super().__init__(params, generator)
        self.lr, self.weight_decay, self.beta_utility, self.sigma = lr, weight_decay, beta_utility, sigma
        self.second_order, self.scaling, self.protect = second_order, scaling, protect
        self.utility_max, self.guard = utility_max, guard

    def _utility(self, p: torch.Tensor) -> torch.Tensor:
        u = -p.grad * p
        if self.second_order:
            h = getattr(p, "hesscale", None)
            if h is None:
                raise RuntimeError("second-order feature UPGD needs p.hesscale on the gates")
            u = u + 0.5 * h * p * p
        return u

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta = self.beta_utility
        bc = 1.0 - beta**self.t
        items = list(self.active())
        maxima = []
        for i, name, p in items:
            if "gate" in name:
                st = self.state[i]
                if "avg_utility" not in st:
                    st["avg_utility"] = torch.zeros_like(p)
                st["avg_utility"].mul_(beta).add_(self._utility(p), alpha=1.0 - beta)
                maxima.append(st["avg_utility"].max())
        eta = torch.stack(maxima).max() if maxima else None
        if eta is not None and self.guard:
            eta = torch.clamp(eta, min=1e-12)
        current = None
        for i, name, p in reversed(items):
            if "gate" in name:
                ū = self.state[i]["avg_utility"]
                if self.scaling == "global":
                    z = ū / eta if self.utility_max == "corrected" else (ū / bc) / eta
                else:
                    z = F.normalize(ū / bc, dim=-1, eps=1e-12)
                current = torch.sigmoid(z).reshape(-1)
                continue
            p.mul_(1.0 - self.lr * self.weight_decay)
            if current is None:
                p.add_(p.grad, alpha=-self.lr)
                continue
            s = current.view(-1, *([1] * (p.dim() - 1)))
            xi = self.noise(p, self.sigma)
            gate = 1.0 - s
            if self.protect:
                p.add_((p.grad + xi) * gate, alpha=-self.lr)
            else:
                p.add_(p.grad + xi * gate, alpha=-self.lr)
            if p.dim() >= 2:
                current = None
