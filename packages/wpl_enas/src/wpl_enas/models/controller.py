"""The LSTM policies that sample RNN cells (spec §2.1) and micro-CNN cells (spec §2.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wpl_enas.dags import MicroArchi, build_rnn_dag


class _PolicyBase(nn.Module):
    """Embedding + one LSTMCell + one linear decoder per decision position."""

    def __init__(self, num_tokens: list[int], hid: int, temperature: float, tanh_c: float, mode: str) -> None:
        super().__init__()
        self.num_tokens = list(num_tokens)
        self.hid = hid
        self.temperature = temperature
        self.tanh_c = tanh_c
        self.run_mode = mode  # the global --mode: the tanh squashing is on only for "train"
        self.encoder = nn.Embedding(sum(self.num_tokens), hid)
        self.lstm = nn.LSTMCell(hid, hid)
        self.decoders = nn.ModuleList(nn.Linear(hid, n) for n in self.num_tokens)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        for dec in self.decoders:
            nn.init.zeros_(dec.bias)

    def _zeros(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hid, device=self.encoder.weight.device)

    def _decide(self, k: int, inputs: torch.Tensor, hidden, generator=None):
        hx, cx = self.lstm(inputs, hidden)
        logits = self.decoders[k](hx) / self.temperature
        if self.run_mode == "train":
            logits = self.tanh_c * torch.tanh(logits)
        log_probs = F.log_softmax(logits, dim=-1)
        probs = log_probs.exp()
        action = torch.multinomial(probs.detach(), 1, generator=generator)
        chosen = log_probs.gather(1, action).squeeze(1)
        entropy = -(log_probs * probs).sum(1)
        return action.squeeze(1), chosen, entropy, (hx, cx)


class RNNController(_PolicyBase):
    """Decisions a0, then (parent p_j, activation a_j) for j = 1…N-1: 2N-1 in all."""

    def __init__(self, num_blocks: int, activations: list[str], hid: int = 100, temperature: float = 5.0,
                 tanh_c: float = 2.5, mode: str = "train") -> None:
        self.activations = list(activations)
        self.num_blocks = num_blocks
        a = len(self.activations)
        tokens = [a]
        for idx in range(1, num_blocks + 1):
            tokens += [idx, a]
        super().__init__(tokens, hid, temperature, tanh_c, mode)

    @property
    def num_decisions(self) -> int:
        return 2 * self.num_blocks - 1

    def sample(self, batch_size: int = 1, with_details: bool = False, generator=None):
        inputs = self._zeros(batch_size)
        hidden = (self._zeros(batch_size), self._zeros(batch_size))
        actions, log_probs, entropies = [], [], []
        for k in range(self.num_decisions):
            action, chosen, entropy, hidden = self._decide(k, inputs, hidden, generator)
            actions.append(action)
            log_probs.append(chosen)
            entropies.append(entropy)
            # Legacy id offset depends only on the decision's parity (upstream issue #34): kept.
            offset = 0 if k % 2 == 0 else self.num_tokens[0]
            inputs = self.encoder(action + offset)
        acts = torch.stack(actions, 1).tolist()
        dags = []
        for row in acts:
            names = [self.activations[row[k]] for k in range(0, self.num_decisions, 2)]
            parents = [row[k] for k in range(1, self.num_decisions, 2)]
            dags.append(build_rnn_dag(names, parents, self.num_blocks))
        if with_details:
            return dags, torch.cat(log_probs), torch.cat(entropies)
        return dags


class CNNMicroController(_PolicyBase):
    """Per cell type and intermediate node i: [input1, op1, input2, op2]; 8B decisions in all."""

    def __init__(self, num_blocks: int, normal_ops: list[str], reduce_ops: list[str], hid: int = 100,
                 temperature: float = 5.0, tanh_c: float = 2.5, mode: str = "train") -> None:
        self.num_blocks = num_blocks
        self.normal_ops = list(normal_ops)
        self.reduce_ops = list(reduce_ops)
        tokens = []
        for ops in (self.normal_ops, self.reduce_ops):
            for i in range(num_blocks):
                tokens += [i + 2, len(ops), i + 2, len(ops)]
        super().__init__(tokens, hid, temperature, tanh_c, mode)

    @property
    def num_decisions(self) -> int:
        return 8 * self.num_blocks

    def sample(self, batch_size: int = 1, with_details: bool = False, generator=None):
        actions, log_probs, entropies = [], [], []
        k = 0
        for _cell in range(2):
            inputs = self._zeros(batch_size)
            hidden = (self._zeros(batch_size), self._zeros(batch_size))
            for _ in range(4 * self.num_blocks):
                action, chosen, entropy, hidden = self._decide(k, inputs, hidden, generator)
                actions.append(action)
                log_probs.append(chosen)
                entropies.append(entropy)
                offset = 0 if k % 2 == 0 else self.num_tokens[0]
                inputs = self.encoder(action + offset)
                k += 1
        acts = torch.stack(actions, 1).tolist()
        dags = []
        for row in acts:
            cells = []
            for c, ops in enumerate((self.normal_ops, self.reduce_ops)):
                edges = []
                for i in range(self.num_blocks):
                    base = c * 4 * self.num_blocks + 4 * i
                    in1, op1, in2, op2 = row[base: base + 4]
                    edges += [(in1, i + 2, ops[op1]), (in2, i + 2, ops[op2])]
                cells.append(sorted(edges))
            dags.append(MicroArchi(cells[0], cells[1]))
        if with_details:
            return dags, torch.cat(log_probs), torch.cat(entropies)
        return dags
