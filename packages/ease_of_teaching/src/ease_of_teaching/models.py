"""The sender and receiver of Li & Bowling's (2019) referential game.

The models keep the original module names (``attr2hidden``, ``speaklstm``, ``hidden2vocab``;
``attr2embed``, ``listenlstm``, ``hidden2embed``) because forgetting masks are keyed by
parameter name. The LSTMs are ``nn.LSTM`` modules (default initialisation U(+-1/sqrt(100)))
run one step at a time through :func:`lstm_step`, which is what ``nn.LSTM`` computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ease_of_teaching.data import ATTR_SIZE, HIDDEN_SIZE, MESSAGE_LEN, VOCAB_SIZE


def lstm_step(lstm: nn.LSTM, tokens: torch.Tensor | None, h: torch.Tensor | None, c: torch.Tensor | None,
              batch: int | None = None):
    """One step of a single-layer ``nn.LSTM`` (gate order i, f, g, o) fed one-hot tokens.

    ``tokens`` (B,) are symbol ids: the one-hot input times ``W_ih`` is a column lookup;
    ``None`` is the all-zero start input. ``h = c = None`` stands for the zero state.
    """
    if tokens is None:
        gates = lstm.bias_ih_l0.expand(batch if h is None else h.shape[0], -1)
    else:
        gates = lstm.weight_ih_l0.t()[tokens] + lstm.bias_ih_l0
    if h is None:
        gates = gates + lstm.bias_hh_l0
    else:
        gates = gates + F.linear(h, lstm.weight_hh_l0, lstm.bias_hh_l0)
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(i) * torch.tanh(g)
    if c is not None:
        c_new = c_new + torch.sigmoid(f) * c
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


@dataclass
class Speech:
    message: torch.Tensor  # (B, L) long
    log_prob: torch.Tensor  # (B,) summed log-probability of the chosen tokens
    p_log_p: torch.Tensor  # (B,) summed negative entropy over the steps
    prob: torch.Tensor  # (B,) product of the chosen tokens' probabilities
    step_log_probs: torch.Tensor  # (L, B, V) log-softmax at every step


class Sender(nn.Module):
    """attr2hidden (12->100) gives h0 (c0 = 0); LSTM(8->100) from a zero start token; hidden2vocab."""

    def __init__(self, hidden: int = HIDDEN_SIZE, vocab: int = VOCAB_SIZE, message_len: int = MESSAGE_LEN) -> None:
        super().__init__()
        self.vocab = vocab
        self.message_len = message_len
        self.attr2hidden = nn.Linear(ATTR_SIZE, hidden)
        self.speaklstm = nn.LSTM(vocab, hidden)
        self.hidden2vocab = nn.Linear(hidden, vocab)

    def speak(self, attrs: torch.Tensor, stochastic: bool = True, generator: torch.Generator | None = None) -> Speech:
        batch = attrs.shape[0]
        h = self.attr2hidden(attrs)
        c = None  # c0 = 0
        x = None  # the all-zero start token
        tokens, log_prob, p_log_p, prob, all_lp = [], 0.0, 0.0, 1.0, []
        for step in range(self.message_len):
            h, c = lstm_step(self.speaklstm, x, h, c, batch)
            logp = F.log_softmax(self.hidden2vocab(h), dim=-1)
            p = logp.exp()
            all_lp.append(logp)
            p_log_p = p_log_p + (p * logp).sum(-1)
            if stochastic:
                tok = torch.multinomial(p, 1, generator=generator).squeeze(1)
            else:
                tok = logp.argmax(-1)
            chosen = logp.gather(1, tok.unsqueeze(1)).squeeze(1)
            log_prob = log_prob + chosen
            prob = prob * chosen.exp()
            tokens.append(tok)
            if step != self.message_len - 1:
                x = tok  # fed back as a one-hot input
        return Speech(torch.stack(tokens, 1), log_prob, p_log_p, prob, torch.stack(all_lp, 0))


class Receiver(nn.Module):
    """LSTM(8->100) reads the one-hot message; hidden2embed(h) . attr2embed(candidate) scores."""

    def __init__(self, hidden: int = HIDDEN_SIZE, vocab: int = VOCAB_SIZE) -> None:
        super().__init__()
        self.vocab = vocab
        self.attr2embed = nn.Linear(ATTR_SIZE, hidden)
        self.listenlstm = nn.LSTM(vocab, hidden)
        self.hidden2embed = nn.Linear(hidden, hidden)

    def scores(self, message: torch.Tensor, cand_attrs: torch.Tensor) -> torch.Tensor:
        h = c = None
        for step in range(message.shape[1]):
            h, c = lstm_step(self.listenlstm, message[:, step], h, c)
        query = self.hidden2embed(h)  # (B, H)
        embeds = self.attr2embed(cand_attrs)  # (B, K, H)
        return torch.bmm(embeds, query.unsqueeze(2)).squeeze(2)

    def act(self, message: torch.Tensor, cand_attrs: torch.Tensor, stochastic: bool = True,
            generator: torch.Generator | None = None):
        """Returns (action, log-prob of the action, sum p log p, probability of the action)."""
        logp = F.log_softmax(self.scores(message, cand_attrs), dim=-1)
        p = logp.exp()
        p_log_p = (p * logp).sum(-1)
        if stochastic:
            action = torch.multinomial(p, 1, generator=generator).squeeze(1)
        else:
            action = logp.argmax(-1)
        chosen = logp.gather(1, action.unsqueeze(1)).squeeze(1)
        return action, chosen, p_log_p, chosen.exp()


def reinit_modules(model: nn.Module) -> None:
    """The original's full reset: each top-level child re-drawn with its default initialiser."""
    for child in model.children():
        child.reset_parameters()
