"""The shared recurrent supernet (spec §2.4): one H×H matrix pair per possible edge i→j."""

from __future__ import annotations

import logging
from collections import deque

import torch
import torch.nn.functional as F
from torch import nn

from wpl_enas.dags import Node

logger = logging.getLogger("wpl_enas")

HIDDEN_NORM_CAP = 25.0

_ACTS = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "identity": lambda x: x,
    "sigmoid": torch.sigmoid,
}


def activation(name: str):
    return _ACTS[name.lower()]


def locked_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """One dropout mask per (batch, feature), shared over time (x: T × B × H)."""
    if p <= 0:
        return x
    mask = torch.empty(1, x.size(1), x.size(2), device=x.device, dtype=x.dtype).bernoulli_(1 - p) / (1 - p)
    return x * mask


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole rows of the embedding matrix with probability p, scale the rest by 1/(1-p)."""
    weight = embed.weight
    if p > 0:
        mask = torch.empty(weight.size(0), 1, device=weight.device, dtype=weight.dtype).bernoulli_(1 - p) / (1 - p)
        weight = weight * mask
    return F.embedding(words, weight)


class SharedRNN(nn.Module):
    def __init__(self, num_tokens: int, embed: int, hid: int, num_blocks: int, *, tie_weights: bool = True,
                 dropout: float = 0.4, dropoute: float = 0.1, dropouti: float = 0.65, wdrop: float = 0.5,
                 mode: str = "train", ar: float = 0.0, tar: float = 0.0, norm_stab: float = 0.0,
                 norm_fixed_point: float = 5.0) -> None:
        super().__init__()
        self.num_blocks = num_blocks
        self.hid = hid
        self.run_mode = mode
        self.dropout, self.dropoute, self.dropouti, self.wdrop = dropout, dropoute, dropouti, wdrop
        self.ar, self.tar, self.norm_stab, self.norm_fixed_point = ar, tar, norm_stab, norm_fixed_point
        self.encoder = nn.Embedding(num_tokens, embed)
        self.decoder = nn.Linear(hid, num_tokens)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self.w_xc = nn.Linear(embed, hid)
        self.w_xh = nn.Linear(embed, hid)
        self.w_hc_raw = nn.Parameter(torch.empty(hid, hid))
        self.w_hh_raw = nn.Parameter(torch.empty(hid, hid))
        self.edges = nn.ModuleDict()
        for j in range(1, num_blocks):
            for i in range(j):
                self.edges[f"{i}-{j}-h"] = nn.Linear(hid, hid, bias=False)
                self.edges[f"{i}-{j}-c"] = nn.Linear(hid, hid, bias=False)
        # Always built (the original built it in train mode only, so derive/test could not load).
        self.batch_norm = nn.BatchNorm1d(hid)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r = 0.025 if self.run_mode == "train" else 0.04
        for p in self.parameters():
            nn.init.uniform_(p, -r, r)
        nn.init.zeros_(self.decoder.bias)

    # -- WPL interface -----------------------------------------------------------------------
    def wpl_named_params(self, keys: list[str]) -> list[tuple[str, nn.Parameter]]:
        """Parameters behind the WPL keys (``i-j-h``/``i-j-c``), one entry per key occurrence."""
        return [(f"edges.{k}.weight", self.edges[k].weight) for k in keys]

    def protected_named_params(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"edges.{k}.weight", m.weight) for k, m in self.edges.items()]

    # -- forward -----------------------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.hid, device=self.encoder.weight.device)

    def cell(self, x, h_prev, dag, w_hc, w_hh):
        c0 = torch.sigmoid(self.w_xc(x) + F.linear(h_prev, w_hc))
        f0 = activation(dag[-1][0].name)
        h0 = c0 * f0(self.w_xh(x) + F.linear(h_prev, w_hh)) + (1 - c0) * h_prev
        hs = {0: h0}
        leaves = []
        queue = deque([0])
        while queue:
            node = queue.popleft()
            for child in dag[node]:
                if child.id == self.num_blocks:
                    leaves.append(hs[node])
                    continue
                if child.id > self.num_blocks:
                    continue
                key = f"{node}-{child.id}"
                c = torch.sigmoid(self.edges[key + "-c"](hs[node]))
                h = c * activation(child.name)(self.edges[key + "-h"](hs[node])) + (1 - c) * hs[node]
                hs[child.id] = h
                queue.append(child.id)
        output = torch.stack(leaves).mean(0)
        output = self.batch_norm(output)
        return output, hs[self.num_blocks - 1]

    def forward(self, inputs: torch.Tensor, dag: dict[int, list[Node]], hidden: torch.Tensor | None = None,
                is_train: bool = True):
        """``inputs`` T × B token ids → logits T × B × V, last hidden, extras (dropped, hiddens, raw)."""
        steps, batch = inputs.shape
        if hidden is None:
            hidden = self.init_hidden(batch)
        is_train = is_train and self.run_mode == "train"
        training = self.training
        w_hc = F.dropout(self.w_hc_raw, p=self.wdrop, training=training)
        w_hh = F.dropout(self.w_hh_raw, p=self.wdrop, training=training)
        embed = embedded_dropout(self.encoder, inputs, self.dropoute if training else 0.0)
        if is_train:
            embed = locked_dropout(embed, self.dropouti)
        outputs, hiddens = [], []
        for t in range(steps):
            output, hidden = self.cell(embed[t], hidden, dag, w_hc, w_hh)
            norms = hidden.norm(dim=-1, keepdim=True)
            if bool((norms > HIDDEN_NORM_CAP).any()):
                logger.debug("hidden-state norm clipped: max %.2f", norms.max().item())
                hidden = hidden * torch.clamp(HIDDEN_NORM_CAP / norms, max=1.0)
            outputs.append(output)
            hiddens.append(hidden)
        raw = torch.stack(outputs)
        dropped = locked_dropout(raw, self.dropout) if is_train else raw
        logits = self.decoder(dropped)
        return logits, hidden, {"dropped": dropped, "hiddens": torch.stack(hiddens), "raw": raw}

    def penalties(self, extra: dict) -> torch.Tensor:
        """AR, TAR and norm-stabiliser terms (zero unless switched on)."""
        total = extra["raw"].new_zeros(())
        if self.ar:
            total = total + self.ar * extra["dropped"].pow(2).mean()
        if self.tar and extra["raw"].size(0) > 1:
            total = total + self.tar * (extra["raw"][1:] - extra["raw"][:-1]).pow(2).mean()
        if self.norm_stab:
            total = total + self.norm_stab * (extra["hiddens"].norm(dim=-1) - self.norm_fixed_point).pow(2).mean()
        return total
