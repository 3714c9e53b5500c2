"""The referential game of Li & Bowling (2019): objects, game batches, sender, receiver, team.

32 objects = 8 colours x 4 shapes, each a 12-dim two-hot vector (colour one-hot in dims 0-7,
shape one-hot in dims 8-11). Object ``o`` has colour ``o // 4`` and shape ``o % 4`` (the
original enumeration order). A game shows the sender one target; the receiver gets the
2-symbol message (vocabulary of 8) and 5 distinct candidates and must point at the target.

The models keep the original module names (``attr2hidden``, ``speaklstm``, ``hidden2vocab``;
``attr2embed``, ``listenlstm``, ``hidden2embed``) because forgetting masks are keyed by
parameter name. The LSTMs are ``nn.LSTM`` modules (default initialisation U(+-1/sqrt(100)))
run one step at a time through :func:`lstm_step`, which is what ``nn.LSTM`` computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common import masks as M
from torch import nn

NUM_COLORS = 8
NUM_SHAPES = 4
NUM_OBJECTS = NUM_COLORS * NUM_SHAPES
ATTR_SIZE = NUM_COLORS + NUM_SHAPES
VOCAB_SIZE = 8
MESSAGE_LEN = 2
DISTRACT_NUM = 5  # candidates per game, target included
HIDDEN_SIZE = 100
COLOR_NAMES = ("black", "blue", "green", "grey", "pink", "purple", "red", "yellow")
SHAPE_NAMES = ("circle", "square", "star", "triangle")


# --------------------------------------------------------------------------- objects
def object_colors() -> np.ndarray:
    return np.arange(NUM_OBJECTS) // NUM_SHAPES


def object_shapes() -> np.ndarray:
    return np.arange(NUM_OBJECTS) % NUM_SHAPES


def attribute_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """``(32, 12)`` float two-hot vectors, row ``o`` = object ``o``."""
    table = torch.zeros(NUM_OBJECTS, ATTR_SIZE)
    idx = torch.arange(NUM_OBJECTS)
    table[idx, idx // NUM_SHAPES] = 1.0
    table[idx, NUM_COLORS + idx % NUM_SHAPES] = 1.0
    return table.to(device)


def easy_hard_tables() -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(32, 32)`` tables: ``easy[t, o]`` = o differs from t in colour and shape;
    ``hard[t, o]`` = o != t shares colour or shape with t."""
    c, s = object_colors(), object_shapes()
    same_c = c[:, None] == c[None, :]
    same_s = s[:, None] == s[None, :]
    easy = ~same_c & ~same_s
    hard = (same_c | same_s) & ~np.eye(NUM_OBJECTS, dtype=bool)
    return easy, hard


class GameSampler:
    """Draws game batches: object ids ``(B, 5)`` of distinct candidates and the target position.

    Distribution as the original's ``getBatchData``: 5 distinct objects uniformly without
    replacement, the target uniformly among them. With ``easy_limit`` < 4 (hard-distractor
    mode) the first draw is the target and every "easy" distractor beyond the first
    ``easy_limit`` is replaced by a random "hard" object not yet among the candidates; the 5
    are then shuffled. Draws come from one NumPy generator (the ``data`` stream).
    """

    def __init__(self, rng: np.random.Generator, easy_limit: int = 5) -> None:
        self.rng = rng
        self.easy_limit = easy_limit
        self.easy, self.hard = easy_hard_tables()

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        cands = np.argsort(self.rng.random((batch, NUM_OBJECTS)), axis=1)[:, :DISTRACT_NUM]
        if self.easy_limit >= DISTRACT_NUM - 1:
            target_pos = self.rng.integers(0, DISTRACT_NUM, size=batch)
            return cands, target_pos
        target_pos = np.empty(batch, dtype=np.int64)
        for b in range(batch):
            row = cands[b].tolist()
            target, others = row[0], row[1:]
            n_easy = 0
            for k, obj in enumerate(others):
                if self.easy[target, obj]:
                    n_easy += 1
                    if n_easy > self.easy_limit:
                        pool = [o for o in np.flatnonzero(self.hard[target]) if o not in others]
                        others[k] = int(self.rng.choice(pool))
            others.append(target)
            order = self.rng.permutation(DISTRACT_NUM)
            shuffled = [others[j] for j in order]
            cands[b] = shuffled
            target_pos[b] = shuffled.index(target)
        return cands, target_pos


# --------------------------------------------------------------------------- models
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


# --------------------------------------------------------------------------- team
def make_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the multi-tensor implementation (same update, less Python overhead)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)

@dataclass
class StepResult:
    sloss: torch.Tensor
    rloss: torch.Tensor
    rewards: torch.Tensor  # (B,) float 0/1
    message: torch.Tensor
    entropy: torch.Tensor  # mean sender entropy over the batch (summed over steps)


class Team:
    """Sender + receiver with their two Adam optimisers (the original ``GuessGame``)."""

    def __init__(self, *, device: torch.device, slambda: float = 0.1, rlambda: float = 0.1,
                 s_lr: float = 1e-3, r_lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        self.device = device
        self.slambda, self.rlambda = slambda, rlambda
        self.s_lr, self.r_lr, self.weight_decay = s_lr, r_lr, weight_decay
        self.sbot = Sender().to(device)  # sender first, then receiver: the original's RNG order
        self.rbot = Receiver().to(device)
        self.attrs = attribute_table(device)
        self.s_opt = self._adam(self.sbot, s_lr)
        self.r_opt = self._adam(self.rbot, r_lr)

    def _adam(self, model: nn.Module, lr: float) -> torch.optim.Adam:
        return make_adam(model.parameters(), lr, self.weight_decay)

    def play(self, cands: torch.Tensor, target_pos: torch.Tensor, stochastic: bool = True) -> StepResult:
        """One batch of games; ``cands`` (B, 5) object ids, ``target_pos`` (B,) on the device."""
        batch = cands.shape[0]
        rows = torch.arange(batch, device=cands.device)
        targets = cands[rows, target_pos]
        speech = self.sbot.speak(self.attrs[targets], stochastic)
        action, r_logp, r_plogp, _ = self.rbot.act(speech.message, self.attrs[cands], stochastic)
        rewards = (cands[rows, action] == targets).to(self.attrs.dtype)
        sloss = (-rewards * speech.log_prob + self.slambda * speech.p_log_p).mean()
        rlam = self.rlambda if stochastic else 0.1
        rloss = (-rewards * r_logp + rlam * r_plogp).mean()
        return StepResult(sloss, rloss, rewards, speech.message, -speech.p_log_p.mean())

    def update(self, result: StepResult, s_step: bool = True, r_step: bool = True) -> None:
        """Back-propagate both losses (their graphs are disjoint) and step the chosen optimisers."""
        self.s_opt.zero_grad(set_to_none=True)
        self.r_opt.zero_grad(set_to_none=True)
        total = None
        if s_step:
            total = result.sloss
        if r_step and result.rloss.requires_grad:
            total = result.rloss if total is None else total + result.rloss
        if total is None or not total.requires_grad:
            return
        total.backward()
        if s_step:
            self.s_opt.step()
        if r_step:
            self.r_opt.step()

    # ---- interventions
    def reset_receiver(self, s_opt: bool = True) -> None:
        """Full receiver reset; recreate the receiver's Adam and (by default) the sender's."""
        reinit_modules(self.rbot)
        self.r_opt = self._adam(self.rbot, self.r_lr)
        if s_opt:
            self.s_opt = self._adam(self.sbot, self.s_lr)

    def reset_sender(self, r_opt: bool = True) -> None:
        reinit_modules(self.sbot)
        self.s_opt = self._adam(self.sbot, self.s_lr)
        if r_opt:
            self.r_opt = self._adam(self.rbot, self.r_lr)

    def freeze_receiver(self) -> None:
        for p in self.rbot.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def greedy_language(self) -> Speech:
        """The sender's greedy messages for the 32 objects, in object order (eval mode)."""
        self.sbot.eval()
        speech = self.sbot.speak(self.attrs, stochastic=False)
        self.sbot.train()
        return speech


# --------------------------------------------------------------------------- forgetting
def build_model_masks(model: nn.Module, keep: float, weight_mask: bool) -> M.Masks:
    """Per-tensor masks over every parameter of ``model`` with one keep fraction.

    ``weight_mask``: forget the ``int(n * (1 - keep))`` smallest-|w| entries, the original's
    floating-point count for the sender, the receiver (``--weight_mask``, ``--same_mask``) and
    the mixed-language copy alike (keep 0.9 on the 40 000-entry ``weight_hh`` forgets 3 999);
    otherwise Bernoulli(keep) per entry from torch's global CPU stream, as the original did.
    """
    refs = {name: p.detach() for name, p in model.named_parameters()}
    return M.build_masks(refs, keep, kind="magnitude" if weight_mask else "random", prune_rate=1 - keep)


def partial_forget(model: nn.Module, masks: M.Masks, to_zero: bool) -> None:
    """Forget the masked-out entries: zero them, or re-draw them from the default initialiser."""
    if to_zero:
        M.apply_zero(model, masks)
    else:
        M.apply_reinit(model, masks, modules=list(model.named_children()), init_fn=lambda m: m.reset_parameters())
