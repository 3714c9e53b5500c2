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


def weight_rank(net: nn.Module) -> torch.Tensor:
    """Σ rank / Σ max-rank over the ``weight`` tensors (conv kernels: mean rank of the k×k slices)."""
    rank_sum = 0.0
    max_sum = 0
    for name, p in net.named_parameters():
        if "weight" not in name:
            continue
        w = p.detach()
        if "conv" in name:
            rank_sum = rank_sum + torch.linalg.matrix_rank(w).float().mean()
            max_sum += min(w.shape[-2], w.shape[-1])
        else:
            w2 = w if w.dim() == 2 else w.reshape(w.shape[0], -1)
            rank_sum = rank_sum + matrix_rank(w2).float()
            max_sum += min(w2.shape)
    return rank_sum / max(max_sum, 1)


def weight_and_grad_stats(net: nn.Module) -> torch.Tensor:
    """``[rank, ‖W‖₂, ‖W‖₁, ‖∇W‖₂, nonzero fraction of ∇W, ‖∇W‖₁]`` over ``weight`` tensors."""
    w_sq = w_abs = g_sq = g_abs = g_nz = 0.0
    count = 0
    for name, p in net.named_parameters():
        if "weight" not in name:
            continue
        w = p.detach()
        w_sq = w_sq + (w * w).sum()
        w_abs = w_abs + w.abs().sum()
        count += w.numel()
        if p.grad is not None:
            g = p.grad
            g_sq = g_sq + (g * g).sum()
            g_abs = g_abs + g.abs().sum()
            g_nz = g_nz + (g != 0).sum()
    values = [weight_rank(net), torch.as_tensor(w_sq).sqrt(), w_abs, torch.as_tensor(g_sq).sqrt(),
              torch.as_tensor(g_nz) / max(count, 1), g_abs]
    device = next(net.parameters()).device
    return torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device) for v in values])


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
