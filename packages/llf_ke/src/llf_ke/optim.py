"""The optimizers of ``--optimizer`` and the learning-rate policies of ``--lr_policy``.

The learning rate is set once per epoch (never per iteration), as in the original.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(name: str, model: nn.Module, *, lr: float, momentum: float, weight_decay: float):
    """``sgd`` over every parameter (masks and frozen ones included: they get no gradient, so
    no update); ``sgd_TEMP`` and the others over the trainable parameters only."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd_TEMP":
        return torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(trainable, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(trainable, lr=lr, alpha=0.9, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")  # cli.py refuses it first


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def warmup_lr(base: float, warmup: int, epoch: int) -> float:
    return base * (epoch + 1) / warmup


def lr_at(policy: str, epoch: int, *, base: float, warmup: int, epochs: int, generation: int = 0,
          num_generations: int = 1, multistep_adjust: int = 30, multistep_gamma: float = 0.1) -> float:
    """The learning rate of ``epoch`` (0-based, within the generation) under ``policy``.

    ``val_dependent_lr`` is stateful and handled by :class:`ValDependentLR`; here it returns ``base``.
    """
    if policy == "cosine_lr":
        if epoch < warmup:
            return warmup_lr(base, warmup, epoch)
        span = epochs - warmup
        return base if span <= 0 else 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / span)) * base
    if policy == "long_cosine_lr":
        if epoch < warmup:  # the warm-up repeats at the start of every generation
            return warmup_lr(base, warmup, epoch)
        span = epochs * num_generations - warmup
        e = epoch + epochs * generation - warmup
        return base if span <= 0 else 0.5 * (1 + math.cos(math.pi * e / span)) * base
    if policy == "constant_lr":
        return warmup_lr(base, warmup, epoch) if epoch < warmup else base
    if policy == "step_lr":
        # Tiny-ImageNet schedule: /10 from epoch 80, /100 from 120 (fixed: the original's chained
        # comparison never reached the second decay with several generations); a single
        # generation scales the milestones by epochs/160.
        lr = warmup_lr(base, warmup, epoch) if epoch < warmup else base
        scale = 1.0 if num_generations > 1 else epochs / 160
        if 80 * scale <= epoch < 120 * scale:
            lr /= 10
        elif epoch >= 120 * scale:
            lr /= 100
        return lr
    if policy == "multistep_lr":
        # fixed: reads --multistep-lr-adjust / --multistep-lr-gamma (the original read
        # attributes that did not exist)
        return base * multistep_gamma ** (epoch // max(1, multistep_adjust))
    if policy == "val_dependent_lr":
        return base
    raise ValueError(f"unknown --lr_policy {policy!r}")


class ValDependentLR:
    """Halve the learning rate once 20 validations in a row have not improved the best val top-1."""

    patience = 20

    def __init__(self, base: float) -> None:
        self.lr = base
        self.best = -1.0
        self.bad = 0

    def update(self, val_top1: float) -> float:
        if val_top1 > self.best:
            self.best = val_top1
            self.bad = 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self.lr /= 2
                self.bad = 0
        return self.lr

    def state_dict(self) -> dict:
        return {"lr": self.lr, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.best, self.bad = state["lr"], state["best"], state["bad"]
