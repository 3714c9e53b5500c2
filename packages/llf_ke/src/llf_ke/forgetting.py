"""The paper's method: what happens at a generation boundary.

Later-layer forgetting (LLF) sets the masks of everything from ``--reset_layer_name`` on to 0
(:func:`apply_llf_masks`, once, before generation 0); Knowledge Evolution keeps its KELS/WELS
masks. At every generation >= 1, :func:`forget` re-initialises the weights under mask 0
(the reset hypothesis), optionally resets BatchNorm and freezes layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from forgetting_common.errors import UserError
from forgetting_common.masks import apply_reinit, apply_zero
from torch import nn

from llf_ke.layers import split_modules

if TYPE_CHECKING:
    from llf_ke.cli import Config

#: Names that freezing never touches (the classifier stays trainable).
NEVER_FROZEN = ("fc", "classifier.3", "classifier.6")


def reset_flags(model: nn.Module, layer_name: str, reverse: bool = False) -> dict[str, bool]:
    """The LLF walk: ``{parameter name: in the reset part}`` in registration order.

    The flag starts off (on with ``reverse``) and flips at the first parameter whose name
    *contains* ``layer_name``; it never flips back.
    """
    names = [name for name, _ in model.named_parameters()]
    hits = [i for i, name in enumerate(names) if layer_name in name]
    if not hits:
        tops = sorted({n.split(".")[0] for n in names})
        raise UserError(f"--reset_layer_name {layer_name!r} matches no parameter of this network; "
                        f"its top-level names are {', '.join(tops)}")
    first = hits[0]
    return {name: (i >= first) != reverse for i, name in enumerate(names)}


@torch.no_grad()
def apply_llf_masks(model: nn.Module, layer_name: str, reverse: bool = False) -> float:
    """Zero the masks of the reset part (everything from ``layer_name`` on), one the others.

    Returns the percentage of masked elements that will be reset.
    """
    flags = reset_flags(model, layer_name, reverse)
    for name, param in model.named_parameters():
        if "mask" in name:
            param.fill_(0.0 if flags[name] else 1.0)
    zeros, total = reset_counts(model)
    return 100.0 * zeros / max(total, 1)


def reset_counts(model: nn.Module) -> tuple[int, int]:
    """(masked weights in the reset hypothesis, all masked weights) over every split layer."""
    zeros = total = 0
    for _, module in split_modules(model):
        total += module.mask.numel()
        zeros += int((module.mask == 0).sum())
    return zeros, total


def weight_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.weight": keep-mask (bool)}`` for every split layer, in registration order."""
    return {f"{name}.weight" if name else "weight": module.mask.detach().bool()
            for name, module in split_modules(model)}


def _default_uniform(module: nn.Module) -> None:
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): kaiming_uniform with a=sqrt(5), PyTorch's layer default
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))


@torch.no_grad()
def split_reinitialize(model: nn.Module, *, evolve_mode: str = "rand", split_rate: float = 0.5,
                       reset_hypothesis: bool = False, generator: torch.Generator | None = None) -> None:
    """Re-initialise the reset hypothesis (mask 0) of every split layer; keep the fit hypothesis.

    A full fresh tensor is drawn for every split layer in registration order (even where the
    mask is all ones), so the random stream is consumed as in the original. BN layers, the
    classifier bias and conv biases are not touched. ``evolve_mode="zero"`` zeroes instead.
    """
    if not split_rate < 1.0:
        raise UserError(f"--split_rate {split_rate}: re-initialisation needs a split rate below 1")
    modules = split_modules(model)
    if reset_hypothesis:
        for _, module in modules:
            module.redraw_mask()
    masks = weight_masks(model)
    if evolve_mode == "zero":
        apply_zero(model, masks)
        return
    apply_reinit(model, masks, init_fn=_default_uniform, generator=generator, unmasked="keep")


@torch.no_grad()
def reset_batchnorm(model: nn.Module) -> None:
    """``--reset_bn``: every BN of the network gets weight 1, bias 0, mean 0, var 0 (sic), count 0."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and ("bn" in name or "downsample.1" in name):
            if module.affine:
                module.weight.fill_(1.0)
                module.bias.fill_(0.0)
            if module.track_running_stats:
                module.running_mean.zero_()
                module.running_var.zero_()
                module.num_batches_tracked.zero_()


def freeze(model: nn.Module, layer_name: str, reverse_freeze: bool = False) -> list[str]:
    """``--freeze_non_reset``: freeze the layers before ``layer_name`` (after it with ``reverse_freeze``).

    The classifier (names containing ``fc``, ``classifier.3``, ``classifier.6``) is never
    frozen. Returns the names of the parameters frozen by this call.
    """
    flag = reverse_freeze
    frozen = []
    found = False
    for name, param in model.named_parameters():
        if layer_name in name and not found:
            found = True
            flag = not reverse_freeze
        if not flag and not any(keep in name for keep in NEVER_FROZEN):
            param.requires_grad_(False)
            frozen.append(name)
    if not found:
        raise UserError(f"--reset_layer_name {layer_name!r} matches no parameter of this network")
    return frozen


@dataclass(frozen=True)
class Forgotten:
    """What :func:`forget` did, for the log."""

    reinitialised: int  # masked weights re-initialised
    masked: int  # all masked weights
    frozen: int  # parameter tensors frozen (masks not counted)


def forget(model: nn.Module, cfg: Config) -> Forgotten:
    """The start of a generation >= 1: re-initialise the reset hypothesis; with ``--reset_bn``
    reset every BatchNorm; with ``--freeze_non_reset`` freeze layers (``--reverse_freeze``).

    ``--fix_seed``: the reset values come from a generator seeded with ``--seed`` each time,
    so every generation draws the same values on any device.
    """
    generator = torch.Generator().manual_seed(cfg.seed) if cfg.fix_seed else None
    split_reinitialize(model, evolve_mode=cfg.evolve_mode, split_rate=cfg.split_rate,
                       reset_hypothesis=cfg.reset_hypothesis, generator=generator)
    zeros, total = reset_counts(model)
    if cfg.reset_bn:
        reset_batchnorm(model)
    frozen = []
    if cfg.freeze_non_reset and cfg.reset_layer_name:
        frozen = [n for n in freeze(model, cfg.reset_layer_name, cfg.reverse_freeze) if "mask" not in n]
    model.zero_grad(set_to_none=True)
    return Forgotten(reinitialised=zeros, masked=total, frozen=len(frozen))
