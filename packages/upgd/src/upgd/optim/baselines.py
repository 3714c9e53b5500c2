"""SGD, PGD, Shrink & Perturb, Adam, online EWC, MAS, SI and RWalk as the original wrote them."""

from __future__ import annotations

import torch

from upgd.optim.base import NamedOptimizer


class SGD(NamedOptimizer):
    """``w ← w − lr·(g + wd·w)``; gates are skipped."""

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0, generator=None):
        super().__init__(params, generator)
        self.lr, self.weight_decay = lr, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for _, _, p in self.active():
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p
            p.add_(g, alpha=-self.lr)


class PGD(NamedOptimizer):
    """``w ← w − lr·(g + σ·ξ)``."""

    def __init__(self, params, lr: float = 1e-5, sigma: float = 1.0, generator=None):
        super().__init__(params, generator)
        self.lr, self.sigma = lr, sigma

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for _, _, p in self.active():
            p.add_(p.grad + self.noise(p, self.sigma), alpha=-self.lr)


class ShrinkAndPerturb(NamedOptimizer):
    """``w ← (1 − lr·decay)·w − lr·(g + σ·ξ)``."""

    def __init__(self, params, lr: float = 1e-5, decay: float = 0.01, sigma: float = 1.0, generator=None):
        super().__init__(params, generator)
        self.lr, self.decay, self.sigma = lr, decay, sigma

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for _, _, p in self.active():
            p.mul_(1.0 - self.lr * self.decay).add_(p.grad + self.noise(p, self.sigma), alpha=-self.lr)


class Adam(NamedOptimizer):
    """Adam with decoupled weight decay applied first, as the original's ``adam`` learner."""

    def __init__(self, params, lr: float = 0.15, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, generator=None):
        super().__init__(params, generator)
        self.lr, self.beta1, self.beta2, self.eps, self.weight_decay = lr, beta1, beta2, eps, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        bc1, bc2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        for i, _, p in self.active():
            st = self.state[i]
            if not st:
                st["m"] = torch.zeros_like(p)
                st["v"] = torch.zeros_like(p)
            g = p.grad
            p.mul_(1.0 - self.lr * self.weight_decay)
            st["m"].mul_(b1).add_(g, alpha=1.0 - b1)
            st["v"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = st["v"].sqrt() / (bc2**0.5) + self.eps
            p.addcdiv_(st["m"], denom, value=-self.lr / bc1)


class _Regularised(NamedOptimizer):
    """Base of EWC/MAS/SI/RWalk: they iterate tensors without names, so gates are updated too."""

    skip_gates = False

    def _anchor(self, st: dict, p: torch.Tensor, beta_weight: float) -> torch.Tensor:
        """Update the EMA of the weights and return it bias-corrected."""
        if "w_bar" not in st:
            st["w_bar"] = torch.zeros_like(p)
        st["w_bar"].mul_(beta_weight).add_(p, alpha=1.0 - beta_weight)
        return st["w_bar"] / (1.0 - beta_weight**self.t)


class EWC(_Regularised):
    """Online EWC: Fisher trace of ``g²``; ``w ← w − lr·(g + λ·F̂·(w − w̄̂))``."""

    def __init__(self, params, lr: float = 1e-5, lamda: float = 0.01, beta_weight: float = 0.999,
                 beta_fisher: float = 0.999, generator=None):
        super().__init__(params, generator)
        self.lr, self.lamda, self.beta_weight, self.beta_fisher = lr, lamda, beta_weight, beta_fisher

    def _importance(self, g: torch.Tensor) -> torch.Tensor:
        return g * g

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for i, _, p in self.active():
            st = self.state[i]
            anchor = self._anchor(st, p, self.beta_weight)
            if "fisher" not in st:
                st["fisher"] = torch.zeros_like(p)
            st["fisher"].mul_(self.beta_fisher).add_(self._importance(p.grad), alpha=1.0 - self.beta_fisher)
            fisher = st["fisher"] / (1.0 - self.beta_fisher**self.t)
            p.add_(p.grad + self.lamda * fisher * (p - anchor), alpha=-self.lr)


class MAS(EWC):
    """As EWC with ``|g|`` for the importance."""

    def _importance(self, g: torch.Tensor) -> torch.Tensor:
        return g.abs()


class SI(_Regularised):
    """Synaptic intelligence (online form of the original; previous weights start at zero)."""

    def __init__(self, params, lr: float = 1e-5, lamda: float = 0.01, beta_weight: float = 0.999,
                 beta_importance: float = 0.999, eps: float = 1e-3, generator=None):
        super().__init__(params, generator)
        self.lr, self.lamda, self.beta_weight = lr, lamda, beta_weight
        self.beta_importance, self.eps = beta_importance, eps

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        bi = self.beta_importance
        bc = 1.0 - bi**self.t
        for i, _, p in self.active():
            st = self.state[i]
            anchor = self._anchor(st, p, self.beta_weight)
            if "prev" not in st:
                st["prev"] = torch.zeros_like(p)
                st["A"] = torch.zeros_like(p)
                st["D"] = torch.zeros_like(p)
            d = st["prev"] - p
            st["A"].mul_(bi).add_(p.grad * d, alpha=1.0 - bi)
            st["D"].mul_(bi).add_(d, alpha=1.0 - bi)
            omega = (st["A"] / bc) / ((st["D"] / bc) ** 2 + self.eps)
            st["prev"].copy_(p)
            p.add_(p.grad + self.lamda * omega * (p - anchor), alpha=-self.lr)


class RWalk(_Regularised):
    """RWalk as the original coded it: the score trace is never stored (always ½·current score)
    and the importance trace averages the squared *weights*."""

    def __init__(self, params, lr: float = 1e-5, lamda: float = 0.01, beta_weight: float = 0.999,
                 beta_importance: float = 0.999, eps: float = 1e-3, generator=None):
        super().__init__(params, generator)
        self.lr, self.lamda, self.beta_weight = lr, lamda, beta_weight
        self.beta_importance, self.eps = beta_importance, eps

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        bi = self.beta_importance
        for i, _, p in self.active():
            st = self.state[i]
            anchor = self._anchor(st, p, self.beta_weight)
            if "prev" not in st:
                st["prev"] = torch.zeros_like(p)
                st["F"] = torch.zeros_like(p)
                st["S"] = torch.zeros_like(p)  # never updated, as in the original
            d = st["prev"] - p
            score = torch.clamp(p.grad * d / (0.5 * st["F"] * d * d + self.eps), min=0.0)
            trace = 0.5 * (score + st["S"])
            st["F"].mul_(bi).add_(p * p, alpha=1.0 - bi)
            fisher = st["F"] / (1.0 - bi**self.t)
            st["prev"].copy_(p)
            p.add_(p.grad + self.lamda * (fisher + trace) * (p - anchor), alpha=-self.lr)
