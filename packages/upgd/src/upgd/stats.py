"""Per-step statistics of ``run_stats`` and the original's per-task bucketing."""

from __future__ import annotations

import torch
from torch import nn

#: Order of the columns :func:`weight_and_grad_stats` returns, with their JSON keys.
STAT_KEYS = (
    "weight_rank_per_task",
    "weight_l2_per_task",
    "weight_l1_per_task",
    "grad_l2_per_task",
    "grad_l0_per_task",
    "grad_l1_per_task",
)


def matrix_rank(w: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_rank(w)`` (default tolerance), computed faster on the CPU.

    On the CPU the singular values come from the eigenvalues of the float64 Gram matrix (2–3×
    cheaper than the float32 SVD). Its error (≈ 1e-14·σ_max) is far below the rank tolerance
    ``σ_max·max(m, n)·eps_float32``; whenever any singular value lies within a factor of two of
    that tolerance the exact ``matrix_rank`` decides instead, so the result is the same.
    """
    if w.device.type != "cpu" or w.dim() != 2 or w.dtype != torch.float32:
        return torch.linalg.matrix_rank(w)
    m, n = w.shape
    g = w.double()
    gram = g @ g.T if m <= n else g.T @ g
    sigma = torch.linalg.eigvalsh(gram).clamp_(min=0).sqrt_()
    tol = sigma.max() * max(m, n) * torch.finfo(torch.float32).eps
    if bool(((sigma > 0.5 * tol) & (sigma < 2.0 * tol)).any()) or float(tol) == 0.0:
        return torch.linalg.matrix_rank(w)
    return (sigma > tol).sum()


class RankCache:
    """Exact ``matrix_rank`` of weights that change a little per step, mostly without a factorisation.

    For each weight it keeps a reference copy ``R``, R's ranks and a radius ``r``. By Weyl's
    inequality every singular value of ``W`` lies within ``δ = ‖W − R‖_F`` of R's, and so does the
    largest, which sets ``matrix_rank``'s tolerance ``tol = σ_max·max(m, n)·eps_float32``. ``r`` is
    the largest δ for which every σ_i(R) ± δ still lies either above twice the largest possible
    tolerance or below half the smallest: while ``δ < r`` the rank is certified, the count of the
    former, which is the integer ``matrix_rank`` gives (the factor-two margin :func:`matrix_rank`
    leaves to the float32 SVD). Otherwise the reference is renewed from ``W`` (float64 SVD); a
    singular value within a factor two of the tolerance is decided by ``torch.linalg.matrix_rank``
    itself. Conv kernels are batches of k×k matrices, certified each on its own. The ranks never
    depend on what the cache holds; only the time does.
    """

    MARGIN = 2.0
    #: δ is computed from the float32 difference in float64: relative error < 1e-7; rounded up by 1e-6
    SLACK = 1.0 + 1e-6

    def __init__(self) -> None:
        # name -> (reference copy, its ranks, radius / SLACK: a float for a matrix, a tensor for a batch)
        self.refs: dict[str, tuple[torch.Tensor, torch.Tensor, float | torch.Tensor]] = {}

    def rank(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """``torch.linalg.matrix_rank(w)`` (int64, batch shape of ``w``) for a float32 CPU tensor.
        The tensor returned may be the cached one: read it, do not modify it."""
        if w.device.type != "cpu" or w.dtype != torch.float32 or w.dim() < 2:
            return torch.linalg.matrix_rank(w)
        ref = self.refs.get(name)
        if ref is not None and ref[0].shape == w.shape:
            reference, ranks, limit = ref
            delta = torch.linalg.vector_norm(torch.sub(w, reference), dim=(-2, -1), dtype=torch.float64)
            if w.dim() == 2:
                if float(delta) < limit:
                    return ranks
            else:
                stale = delta >= limit
                if not bool(stale.any()):
                    return ranks
                renewed = self._renew_slices(name, w, stale)
                if renewed is not None:
                    return renewed
        certified = self._renew(w)
        if certified is None:  # a singular value near the tolerance: the exact routine decides, nothing cached
            self.refs.pop(name, None)
            return torch.linalg.matrix_rank(w)
        ranks, radius = certified
        limit = radius / self.SLACK
        self.refs[name] = (w.clone(), ranks, float(limit) if w.dim() == 2 else limit)
        return ranks

    def _renew_slices(self, name: str, w: torch.Tensor, stale: torch.Tensor) -> torch.Tensor | None:
        """Renew only the slices of a batch whose certificate ran out (a conv kernel's 5×5 slices
        drift at different speeds: mostly one or two of them); None if one of them lies near the
        tolerance, which the whole batch's path then decides. Each slice's rank and tolerance are
        its own (``matrix_rank`` of a batch is per matrix), so the ranks are the same."""
        index = stale.nonzero(as_tuple=True)
        certified = self._renew(w[index])
        if certified is None:
            return None
        reference, ranks, limit = self.refs[name]
        sub_ranks, radius = certified
        ranks = ranks.clone()  # the old tensor may still be read by whoever it was returned to
        ranks[index] = sub_ranks
        reference[index] = w[index]
        limit[index] = radius / self.SLACK
        self.refs[name] = (reference, ranks, limit)
        return ranks

    def _renew(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(ranks, radius)`` of ``w`` from its float64 singular values, or None near the tolerance."""
        sigma = torch.linalg.svdvals(w.double())
        c = max(w.shape[-2], w.shape[-1]) * torch.finfo(torch.float32).eps
        top = sigma[..., :1]
        slack = 1e-10 * top  # the float64 SVD's own error (≈ 1e-15·σ_max), generously
        # σ_i counted: σ_i − δ > M·c·(σ_1 + δ)  ⇔  δ < (σ_i − M·c·σ_1)/(1 + M·c)
        up = (sigma - self.MARGIN * c * top - slack) / (1 + self.MARGIN * c)
        # σ_i not counted: σ_i + δ < c·(σ_1 − δ)/M  ⇔  δ < (c·σ_1/M − σ_i)/(1 + c/M)
        down = (c * top / self.MARGIN - sigma - slack) / (1 + c / self.MARGIN)
        if not bool(((up > 0) | (down > 0)).all()) or not bool((top > 0).all()):
            return None
        radius = torch.maximum(up, down).amin(dim=-1)
        return (up > 0).sum(dim=-1), radius

def weight_rank(net: nn.Module, cache: RankCache | None = None) -> torch.Tensor:
    """Σ rank / Σ max-rank over the ``weight`` tensors (conv kernels: mean rank of the k×k slices).

    ``cache`` (a :class:`RankCache` kept across steps) gives the same ranks faster.
    """
    rank_sum = 0.0
    max_sum = 0
    for name, p in net.named_parameters():
        if "weight" not in name:
            continue
        w = p.detach()
        if "conv" in name:
            ranks = cache.rank(name, w) if cache is not None else torch.linalg.matrix_rank(w)
            rank_sum = rank_sum + ranks.float().mean()
            max_sum += min(w.shape[-2], w.shape[-1])
        else:
            w2 = w if w.dim() == 2 else w.reshape(w.shape[0], -1)
            rank = cache.rank(name, w2) if cache is not None else matrix_rank(w2)
            rank_sum = rank_sum + rank.float()
            max_sum += min(w2.shape)
    return rank_sum / max(max_sum, 1)


def weight_and_grad_stats(net: nn.Module, cache: RankCache | None = None) -> torch.Tensor:
    """``[rank, ‖W‖₂, ‖W‖₁, ‖∇W‖₂, nonzero fraction of ∇W, ‖∇W‖₁]`` over ``weight`` tensors.

    Each tensor's ``(w*w).sum()``, ``w.abs().sum()`` … are summed in parameter order; the
    elementwise parts go through ``torch._foreach_*`` (the same kernel per tensor, fewer calls).
    The float32 running sums start at the first tensor's value (``0.0 + x`` is ``x``) and the
    nonzero count is an exact integer, so the values are those of the per-tensor formulas.
    """
    pairs = [(p.detach(), p.grad) for name, p in net.named_parameters() if "weight" in name]
    weights = [w for w, _ in pairs]
    grads = [g for _, g in pairs if g is not None]
    count = sum(w.numel() for w in weights)
    w_sq, w_abs = _running_sums(torch._foreach_mul(weights, weights), torch._foreach_abs(weights))
    device = weights[0].device
    if grads:
        g_sq, g_abs = _running_sums(torch._foreach_mul(grads, grads), torch._foreach_abs(grads))
        g_nz = torch.count_nonzero(grads[0])
        for g in grads[1:]:
            g_nz = g_nz + torch.count_nonzero(g)
    else:
        g_sq = g_abs = g_nz = torch.zeros((), device=device)
    values = [weight_rank(net, cache), w_sq.sqrt(), w_abs, g_sq.sqrt(), g_nz / max(count, 1), g_abs]
    return torch.stack([v.to(torch.float32) for v in values])


def _running_sums(squares: list[torch.Tensor], absolutes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    sq, ab = squares[0].sum(), absolutes[0].sum()
    for s, a in zip(squares[1:], absolutes[1:]):
        sq = sq + s.sum()
        ab = ab + a.sum()
    return sq, ab


def n_buckets(n_samples: int, change_freq: int) -> int:
    """Entries of a per-task list: ⌊(n − 1)/cf⌋ + 1 (the original's bucketing)."""
    return (n_samples - 1) // change_freq + 1 if n_samples > 0 else 0


def bucket_means(values: torch.Tensor, change_freq: int) -> torch.Tensor:
    """The original's per-task averages of per-step ``values`` (NaN = not sampled, ignored).

    Entry 0 is step 0 alone; entry k ≥ 1 averages steps (k−1)·cf+1 … k·cf (the last cf−1
    steps of task k−1 and the first step of task k); steps after the last multiple of cf
    are dropped.
    """
    n = values.shape[0]
    k = n_buckets(n, change_freq)
    if k == 0:
        return values[:0]
    head = values[:1]
    if k == 1:
        return torch.nanmean(head, dim=0, keepdim=True)
    body = values[1 : (k - 1) * change_freq + 1].reshape(k - 1, change_freq, *values.shape[1:])
    return torch.cat([head, torch.nanmean(body, dim=1)])


def aligned_task_means(values: torch.Tensor, change_freq: int) -> torch.Tensor:
    """Per-task averages over exactly the steps of each complete task (steps t·cf … (t+1)·cf − 1)."""
    n = values.shape[0] // change_freq
    return torch.nanmean(values[: n * change_freq].reshape(n, change_freq, *values.shape[1:]), dim=1)
