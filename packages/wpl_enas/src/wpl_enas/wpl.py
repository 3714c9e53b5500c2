"""Weight Plasticity Loss (spec §3): stored Fisher F̃ (α folded in), anchor weights w*, schedules.

State per protected parameter tensor P: ``F̃_P`` and ``w*_P``, held as non-persistent buffers of
the shared model (they move with ``.to(device)`` and stay out of ``state_dict``, as in the
original, which kept them out of checkpoints). F̃ starts at zero and w* at a copy of P.

Penalty for an architecture with parameters K(a) (one entry per key occurrence)::

    WPL(a) = 1/2 · Σ_{P ∈ K(a)} Σ F̃_P ⊙ (P − w*_P)²

Fisher update for each P of K(a), from its current ``.grad`` G::

    G missing  →  F̃_P := 0
    M := ((1 − λ)·F̃_P if momentum else F̃_P) + λ·G⊙G
    if c > 0 and ‖M‖_F > c:  M := c·M/‖M‖_F
    F̃_P := α(e)·M

α is multiplied in at every update on top of an F̃ that already holds it (a quirk of the released
code that changes the numbers, so it is kept); after each update w* := P for *all* protected P.

:func:`diagonal_fisher` is the Fisher of the two-model example (spec §4), taken once after model A.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def alpha_schedule(epoch: int, alpha: float, decay: float, after: float, mode: int = 1) -> float:
    """α(e): ``alpha`` while ``e < after``, then ``max(alpha − (e − after + 1)·decay, 0)`` (mode 1).

    The original passes no epoch on the CNN path and for the train-batch update, so there its
    default ``e = 0`` applies: α decays already at the first update when ``after <= 0``.
    """
    if mode == 0 or epoch < after:
        return float(alpha)
    steps = epoch - after + 1
    if mode == 2:
        return float(alpha * decay ** steps)
    return float(max(alpha - steps * decay, 0.0))


def _buf(name: str, kind: str) -> str:
    return f"_wpl_{kind}__" + name.replace(".", "__")


class WPL:
    """WPL state attached to a shared model exposing ``wpl_named_params`` / ``protected_named_params``."""

    def __init__(self, model: nn.Module, *, lambda_fisher: float = 0.9, clip_by_norm: float = 0.0,
                 momentum: bool = True, alpha: float = 1.0, alpha_decay: float = 2.0,
                 alpha_decay_after: float = 15.0, alpha_decay_mode: int = 1) -> None:
        self.model = model
        self.lambda_fisher = lambda_fisher
        self.clip = clip_by_norm
        self.momentum = momentum
        self.alpha, self.alpha_decay, self.alpha_decay_after = alpha, alpha_decay, alpha_decay_after
        self.alpha_decay_mode = alpha_decay_mode
        self.last_alpha = float(alpha)
        for name, p in model.protected_named_params():
            model.register_buffer(_buf(name, "fisher"), torch.zeros_like(p, memory_format=torch.contiguous_format),
                                  persistent=False)
            model.register_buffer(_buf(name, "optimal"), p.detach().clone(), persistent=False)

    def fisher(self, name: str) -> torch.Tensor:
        return getattr(self.model, _buf(name, "fisher"))

    def optimal(self, name: str) -> torch.Tensor:
        return getattr(self.model, _buf(name, "optimal"))

    def alpha_at(self, epoch: int) -> float:
        return alpha_schedule(epoch, self.alpha, self.alpha_decay, self.alpha_decay_after, self.alpha_decay_mode)

    def penalty(self, arch) -> torch.Tensor:
        """½·Σ F̃ ⊙ (P − w*)² over the architecture's protected tensors (duplicates count twice)."""
        terms = [(self.fisher(n) * (p - self.optimal(n)).pow(2)).sum() for n, p in self.model.wpl_named_params(arch)]
        if not terms:
            return next(self.model.parameters()).new_zeros(())
        return 0.5 * torch.stack(terms).sum()

    @torch.no_grad()
    def update_fisher(self, arch, epoch: int = 0, grads: list | None = None) -> float:
        """Fold the current gradients of the architecture's tensors into F̃; returns α used.

        ``epoch`` defaults to 0 as in the original, whose CNN path and train-batch update pass none.

        ``grads``: gradients to use instead of ``.grad``, one per entry of ``wpl_named_params(arch)``
        (a snapshot taken before further backward passes, None for a missing gradient).
        """
        alpha = self.alpha_at(epoch)
        self.last_alpha = alpha
        lam = self.lambda_fisher
        for i, (name, p) in enumerate(self.model.wpl_named_params(arch)):
            fisher = self.fisher(name)
            grad = p.grad if grads is None else grads[i]
            if grad is None:
                fisher.zero_()
                continue
            m = fisher * (1.0 - lam) if self.momentum else fisher.clone()
            m.addcmul_(grad, grad, value=lam)
            if self.clip > 0:
                norm = torch.linalg.vector_norm(m)
                if norm > self.clip:
                    m.mul_(self.clip / norm)
            fisher.copy_(m.mul_(alpha))
        return alpha

    def grad_snapshot(self, arch) -> list:
        return [None if p.grad is None else p.grad.detach().clone() for _, p in self.model.wpl_named_params(arch)]

    @torch.no_grad()
    def update_optimal(self) -> None:
        """w* := a copy of the current weights, for every protected tensor."""
        for name, p in self.model.protected_named_params():
            self.optimal(name).copy_(p)

    @torch.no_grad()
    def reset_fisher(self) -> None:
        for name, _ in self.model.protected_named_params():
            self.fisher(name).zero_()

    @torch.no_grad()
    def fisher_norm_stats(self) -> dict[str, float]:
        norms = torch.stack([torch.linalg.vector_norm(self.fisher(n)) for n, _ in self.model.protected_named_params()])
        return {"mean": float(norms.mean()), "max": float(norms.max()), "nonzero": int((norms > 0).sum())}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, _ in self.model.protected_named_params():
            out[f"fisher.{name}"] = self.fisher(name).clone()
            out[f"optimal.{name}"] = self.optimal(name).clone()
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, _ in self.model.protected_named_params():
            self.fisher(name).copy_(state[f"fisher.{name}"])
            self.optimal(name).copy_(state[f"optimal.{name}"])


def diagonal_fisher(model: nn.Module, prefix: str, x: torch.Tensor, y: torch.Tensor, *forward_args,
                    kind: str = "empirical", batch_size: int = 32, chunk: int = 512) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of the parameters of ``model`` named ``prefix…`` (keys without the prefix) on
    ``(x, y)``, the model run as ``model(inputs, *forward_args)``.

    ``empirical``: the mean over samples of the squared per-sample gradient of the cross-entropy;
    ``minibatch``: the mean over minibatches of the squared gradient of the minibatch loss.
    """
    from torch.func import functional_call, grad, vmap

    named = {n[len(prefix):]: p for n, p in model.named_parameters() if n.startswith(prefix)}
    fisher = {n: torch.zeros_like(p) for n, p in named.items()}
    if kind == "minibatch":
        nb = 0
        for start in range(0, len(x), batch_size):
            model.zero_grad()
            F.cross_entropy(model(x[start:start + batch_size], *forward_args), y[start:start + batch_size]).backward()
            for n, p in named.items():
                fisher[n] += p.grad.detach() ** 2
            nb += 1
        return {n: f / nb for n, f in fisher.items()}

    def loss_one(params, xi, yi):
        full = {prefix + n: p for n, p in params.items()}
        out = functional_call(model, full, (xi.unsqueeze(0), *forward_args))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    detached = {n: p.detach() for n, p in named.items()}
    for start in range(0, len(x), chunk):
        grads = per_sample(detached, x[start:start + chunk], y[start:start + chunk])
        for n in fisher:
            fisher[n] += grads[n].detach().pow(2).sum(0)
    return {n: f / len(x) for n, f in fisher.items()}
