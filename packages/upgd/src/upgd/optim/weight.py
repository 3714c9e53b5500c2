"""Weight-wise UPGD (first and second order, global and local scaling, protecting or not)
and the student project's adaptive-noise and kernel-utility variants.

One class covers them all; the learner registry (:mod:`upgd.learners`) fixes the options per
CLI name. The update per non-gate tensor ``w`` with gradient ``g`` (notation of the paper):

    ū ← β·ū + (1−β)·u,   u = −g⊙w  (first order)  or  −g⊙w + ½·h⊙w²  (second order)
    global: s = sigmoid(ū / ((1−β^t)·η)),  η = max over all tensors of the *raw* ū
    local:  s = sigmoid(normalize_lastdim(ū / (1−β^t)))
    protecting:      w ← (1−lr·λ)·w − k·lr·(g + ξ)⊙(1−s)
    non-protecting:  w ← (1−lr·λ)·w − k·lr·(g + ξ⊙(1−s))

with ξ ~ N(0, σ²) (times a per-tensor scale for the adaptive-noise variants) and k = 1, or 2 for
the kernel variants.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from upgd.optim.base import NamedOptimizer

NOISE_SCALES = (None, "weight", "grad", "ratio")
KERNELS = (None, "entire", "column", "convex")
CONVEX_ALPHA = 0.2


class WeightUPGD(NamedOptimizer):
    """Weight-wise UPGD.

    Options (fixed per learner, never from the command line): ``second_order``, ``scaling``
    (``global``/``local``), ``protect``, ``noise_scale`` (``weight``/``grad``/``ratio``),
    ``ungated_noise`` (usgd), ``kernel`` (``entire``/``column``/``convex``), ``step_factor``,
    ``clipped_grad_bug`` (the student's dynamic-clipping learner). Runner extensions, off by
    default: ``utility_max='corrected'`` (η over bias-corrected traces) and ``guard`` (η ≥ 1e-12).
    """

    def __init__(self, params, lr: float = 1e-5, weight_decay: float = 0.0, beta_utility: float = 0.0,
                 sigma: float = 1.0, *, generator=None, second_order: bool = False,
                 scaling: str = "global", protect: bool = True, noise_scale: str | None = None,
                 ungated_noise: bool = False, kernel: str | None = None, step_factor: float = 1.0,
                 clipped_grad_bug: bool = False, utility_max: str = "raw", guard: bool = False):
        super().__init__(params, generator)
        self.lr, self.weight_decay, self.beta_utility, self.sigma = lr, weight_decay, beta_utility, sigma
        assert scaling in ("global", "local") and noise_scale in NOISE_SCALES and kernel in KERNELS
        assert utility_max in ("raw", "corrected")
        self.second_order, self.scaling, self.protect = second_order, scaling, protect
        self.noise_scale, self.ungated_noise, self.kernel = noise_scale, ungated_noise, kernel
        self.step_factor, self.clipped_grad_bug = step_factor, clipped_grad_bug
        self.utility_max, self.guard = utility_max, guard
        self.last_scaled: dict[str, torch.Tensor] = {}  # for inspection/tests (kept only if asked)
        self.keep_scaled = False

    def _accumulate_utility(self, avg: torch.Tensor, p: torch.Tensor) -> None:
        """``ū ← β·ū + (1−β)·u`` in place, with ``u = −g⊙w (+ ½·h⊙w²)``."""
        beta = self.beta_utility
        u = torch.mul(p.grad, p)  # = −u for first order
        if self.second_order:
            h = getattr(p, "hesscale", None)
            if h is None:
                raise RuntimeError("second-order UPGD needs p.hesscale; run backward through upgd.hesscale")
            u.sub_(0.5 * h * p * p)
        avg.mul_(beta).add_(u, alpha=-(1.0 - beta))

    def _scale_noise(self, xi: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if self.noise_scale == "weight":
            xi.mul_(p.norm() + 1e-8)
        elif self.noise_scale == "grad":
            xi.mul_(p.grad.norm() + 1e-8)
        elif self.noise_scale == "ratio":
            xi.mul_((p.grad.norm() + 1e-8) / (p.norm() + 1e-8))
        return xi

    def _kernelise(self, s: torch.Tensor) -> torch.Tensor:
        if self.kernel is None or s.dim() != 4:
            return s
        if self.kernel == "entire":
            return s.mean(dim=(2, 3), keepdim=True).expand_as(s)
        if self.kernel == "column":
            return s.mean(dim=2, keepdim=True).expand_as(s)
        return (1.0 - CONVEX_ALPHA) * s + CONVEX_ALPHA * s.mean(dim=(2, 3), keepdim=True)

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta = self.beta_utility
        bc = 1.0 - beta**self.t
        active = list(self.active())
        if not active:
            return
        params = [p for _, _, p in active]
        grads = [p.grad for p in params]
        avgs = []
        for i, _, p in active:
            st = self.state[i]
            if "avg_utility" not in st:
                st["avg_utility"] = torch.zeros_like(p)
            avgs.append(st["avg_utility"])
        # The per-tensor operations of the update, batched with torch's _foreach_* functions: on
        # the CPU they run the same kernel on each tensor in turn (identical values), with one
        # Python call per operation instead of one per operation and tensor.
        if self.second_order:
            for avg, p in zip(avgs, params):
                self._accumulate_utility(avg, p)
        else:
            u = torch._foreach_mul(grads, params)  # = −u for first order
            torch._foreach_mul_(avgs, beta)
            torch._foreach_add_(avgs, u, alpha=-(1.0 - beta))
        if self.scaling == "global":
            eta = torch.stack(torch._foreach_max(avgs)).max()
            if self.guard:
                eta = torch.clamp(eta, min=1e-12)
            # Faithful default: the raw maximum η scales the bias-corrected trace ū/(1−β^t).
            scale = 1.0 / eta if self.utility_max == "corrected" else 1.0 / (eta * bc)
            scaled = torch._foreach_mul(avgs, scale)
            torch._foreach_sigmoid_(scaled)
        else:
            scaled = [torch.sigmoid(F.normalize(avg / bc, dim=-1, eps=1e-12)) for avg in avgs]
        scaled = [self._kernelise(s) for s in scaled]
        if self.keep_scaled:
            for (_, name, _), s in zip(active, scaled):
                self.last_scaled[name] = s.clone()
        noise = self.noises(params, self.sigma)  # drawn tensor by tensor, in parameter order
        if self.noise_scale is not None:
            noise = [self._scale_noise(xi, p) for xi, p in zip(noise, params)]
        if self.clipped_grad_bug:
            # The student's learner uses clip_grad_norm_'s return value (the norm) as gradient.
            grads = [torch.nn.utils.clip_grad_norm_(p, max_norm=2.0 * float(g.norm())) for p, g in zip(params, grads)]
        if self.weight_decay:
            torch._foreach_mul_(params, 1.0 - self.lr * self.weight_decay)
        owned = [s.is_contiguous() and s.data_ptr() != avg.data_ptr() for s, avg in zip(scaled, avgs)]
        if all(owned):  # 1 − s in place
            torch._foreach_neg_(scaled)
            torch._foreach_add_(scaled, 1.0)
            gates = scaled
        else:
            gates = [s.neg_().add_(1.0) if own else 1.0 - s for s, own in zip(scaled, owned)]
        step_lr = self.step_factor * self.lr
        if self.clipped_grad_bug:  # 0-d "gradients": per tensor, broadcasting
            for p, g, gate, xi in zip(params, grads, gates, noise):
                self._apply(p, g, gate, xi, step_lr)
        elif self.ungated_noise:
            torch._foreach_addcmul_(params, grads, gates, value=-step_lr)
            torch._foreach_add_(params, noise, alpha=step_lr)
        elif self.protect:
            torch._foreach_add_(noise, grads)
            torch._foreach_addcmul_(params, noise, gates, value=-step_lr)
        else:
            torch._foreach_add_(params, grads, alpha=-step_lr)
            torch._foreach_addcmul_(params, noise, gates, value=-step_lr)

    def _apply(self, p, g, gate, xi, step_lr: float) -> None:
        if self.ungated_noise:
            p.addcmul_(g, gate, value=-step_lr).add_(xi, alpha=step_lr)
        elif self.protect:
            p.addcmul_(xi.add_(g), gate, value=-step_lr)
        else:
            p.add_(g, alpha=-step_lr).addcmul_(xi, gate, value=-step_lr)
