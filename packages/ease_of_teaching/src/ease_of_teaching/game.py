"""The referential game of Li & Bowling (2019) played by a team: one training step, and forgetting.

Objects and game batches are in :mod:`ease_of_teaching.data`, the sender and receiver in
:mod:`ease_of_teaching.models`; both are re-exported here, where the rest of the package and
its tests have always found them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from forgetting_common import masks as M
from torch import nn

from ease_of_teaching.data import (  # noqa: F401 (re-exported, see the module notes)
    ATTR_SIZE,
    COLOR_NAMES,
    DISTRACT_NUM,
    HIDDEN_SIZE,
    MESSAGE_LEN,
    NUM_COLORS,
    NUM_OBJECTS,
    NUM_SHAPES,
    SHAPE_NAMES,
    VOCAB_SIZE,
    GameSampler,
    attribute_table,
    easy_hard_tables,
    object_colors,
    object_shapes,
)
from ease_of_teaching.models import (  # noqa: F401 (re-exported)
    Receiver,
    Sender,
    Speech,
    lstm_step,
    reinit_modules,
)


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
