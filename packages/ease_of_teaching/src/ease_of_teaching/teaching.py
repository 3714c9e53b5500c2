"""Ease of teaching (Li & Bowling 2019): how fast fresh receivers learn a frozen sender's language.

The sender is frozen and speaks greedily, so its language is one message per object, computed
once. Each of ``n_receivers`` freshly initialised receivers (default initialisation, its own
Adam) is trained for ``iters`` iterations of ``batch`` games, acting greedily with the loss
``-R log p_max + 0.1 sum p log p``; the batch accuracy at every iteration is the curve.

Two implementations with the same semantics:

* :func:`teach_batched` stacks the receivers' parameters into ``(R, ...)`` tensors and trains
  them all at once (Adam is element-wise, so one Adam over the stack equals R independent
  Adams, and the gradient of the summed losses is each receiver's own gradient);
* :func:`teach_sequential` is the straightforward loop over separate ``Receiver`` modules
  (the baseline the benchmark compares against).

Both draw iteration ``j``'s games for all receivers at once from the same NumPy generator, so
with the same ``init_seed`` they see identical games and start from identical weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ease_of_teaching.game import (
    DISTRACT_NUM,
    GameSampler,
    Receiver,
    attribute_table,
)

PARAM_NAMES = (
    "attr2embed.weight", "attr2embed.bias",
    "listenlstm.weight_ih_l0", "listenlstm.weight_hh_l0", "listenlstm.bias_ih_l0", "listenlstm.bias_hh_l0",
    "hidden2embed.weight", "hidden2embed.bias",
)


def fresh_receivers(n: int, init_seed: int, device: torch.device) -> list[Receiver]:
    """``n`` receivers with default initialisation, drawn from their own seed (global RNG untouched)."""
    gen = torch.Generator().manual_seed(init_seed)
    seeds = torch.randint(0, 2**62, (n,), generator=gen).tolist()
    out = []
    with torch.random.fork_rng(devices=[]):
        for s in seeds:
            torch.manual_seed(int(s))
            out.append(Receiver().to(device))
    return out


def _draw(sampler: GameSampler, n: int, batch: int, device: torch.device):
    cands, tpos = sampler.sample(n * batch)
    cands = torch.from_numpy(cands).to(device).view(n, batch, DISTRACT_NUM)
    tpos = torch.from_numpy(tpos).to(device).view(n, batch)
    return cands, tpos


def teach_batched(language: torch.Tensor, *, n_receivers: int = 30, iters: int = 1000, batch: int = 100,
                  lr: float = 1e-3, weight_decay: float = 0.0, rng: np.random.Generator,
                  init_seed: int = 0, device: torch.device | str = "cpu", easy_limit: int = 5,
                  progress=None) -> np.ndarray:
    """Accuracy curves ``(n_receivers, iters)`` in percent, all receivers trained at once."""
    device = torch.device(device)
    language = language.to(device)
    attrs = attribute_table(device)
    receivers = fresh_receivers(n_receivers, init_seed, device)
    stacked = {}
    for name in PARAM_NAMES:
        tensors = [dict(r.named_parameters())[name].detach() for r in receivers]
        stacked[name] = torch.stack(tensors).clone().requires_grad_(True)
    opt = torch.optim.Adam(list(stacked.values()), lr=lr, weight_decay=weight_decay)
    w_ae, b_ae = stacked["attr2embed.weight"], stacked["attr2embed.bias"]
    w_ih, w_hh = stacked["listenlstm.weight_ih_l0"], stacked["listenlstm.weight_hh_l0"]
    b_ih, b_hh = stacked["listenlstm.bias_ih_l0"], stacked["listenlstm.bias_hh_l0"]
    w_he, b_he = stacked["hidden2embed.weight"], stacked["hidden2embed.bias"]
    sampler = GameSampler(rng, easy_limit)
    rows = torch.arange(n_receivers, device=device)[:, None]
    acc = torch.zeros(n_receivers, iters, device=device)
    steps = range(iters) if progress is None else progress(range(iters))
    for j in steps:
        cands, tpos = _draw(sampler, n_receivers, batch, device)  # (R, B, K), (R, B)
        targets = cands.gather(2, tpos.unsqueeze(2)).squeeze(2)  # (R, B)
        msg = language[targets]  # (R, B, L)
        # the message tokens are one-hot, so x @ W_ih^T is a column lookup; the state starts at 0
        w_ih_cols = w_ih.transpose(1, 2)  # (R, V, 4H)
        h = c = None
        for t in range(msg.shape[2]):
            gates = w_ih_cols[rows, msg[:, :, t]] + (b_ih + b_hh).unsqueeze(1)
            if h is not None:
                gates = gates + torch.bmm(h, w_hh.transpose(1, 2))
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(i) * torch.tanh(g) if c is None else torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        query = torch.baddbmm(b_he.unsqueeze(1), h, w_he.transpose(1, 2))  # (R, B, H)
        emb_all = torch.baddbmm(b_ae.unsqueeze(1), attrs.expand(n_receivers, -1, -1), w_ae.transpose(1, 2))
        # score every object, then pick the candidates: (R, B, 32) -> (R, B, K)
        logp = F.log_softmax(torch.bmm(query, emb_all.transpose(1, 2)).gather(2, cands), dim=-1)
        p_log_p = (logp.exp() * logp).sum(-1)
        best, action = logp.max(-1)
        rewards = (action == tpos).to(attrs.dtype)
        loss = ((-rewards * best + 0.1 * p_log_p).mean(1)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc[:, j] = rewards.mean(1) * 100.0
    return acc.cpu().numpy()


def teach_sequential(language: torch.Tensor, *, n_receivers: int = 30, iters: int = 1000, batch: int = 100,
                     lr: float = 1e-3, weight_decay: float = 0.0, rng: np.random.Generator,
                     init_seed: int = 0, device: torch.device | str = "cpu", easy_limit: int = 5,
                     progress=None) -> np.ndarray:
    """The same curves with one ``Receiver`` module and one Adam per receiver (the baseline)."""
    device = torch.device(device)
    language = language.to(device)
    attrs = attribute_table(device)
    receivers = fresh_receivers(n_receivers, init_seed, device)
    opts = [torch.optim.Adam(r.parameters(), lr=lr, weight_decay=weight_decay) for r in receivers]
    sampler = GameSampler(rng, easy_limit)
    acc = torch.zeros(n_receivers, iters, device=device)
    steps = range(iters) if progress is None else progress(range(iters))
    for j in steps:
        cands_all, tpos_all = _draw(sampler, n_receivers, batch, device)
        for r, (rec, opt) in enumerate(zip(receivers, opts)):
            cands, tpos = cands_all[r], tpos_all[r]
            targets = cands.gather(1, tpos.unsqueeze(1)).squeeze(1)
            action, logp, p_log_p, _ = rec.act(language[targets], attrs[cands], stochastic=False)
            rewards = (action == tpos).to(attrs.dtype)
            loss = (-rewards * logp + 0.1 * p_log_p).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc[r, j] = rewards.mean() * 100.0
    return acc.cpu().numpy()


def summarize_curves(acc: np.ndarray) -> dict[str, float]:
    """Mean accuracy over the first 100 / 200 iterations and over the whole curve."""
    out = {}
    for n in (100, 200):
        if acc.shape[1] >= n:
            out[f"mean_acc_first{n}"] = float(acc[:, :n].mean())
    out["mean_acc_all"] = float(acc.mean())
    out["final_acc"] = float(acc[:, -min(10, acc.shape[1]):].mean())
    return out
