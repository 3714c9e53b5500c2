"""The forgetting operation applied to a copy of the network at every probe.

Built on :mod:`forgetting_common.masks`. The original's rules, in words:

* eligible tensors: every parameter whose name contains none of ``bn``, ``bias``,
  ``shortcut.1`` (the ``same_mask`` masks also cover biases; they are never applied);
* per-tensor keep rates (:func:`keep_rate_for`): LeNet keeps ``k`` in ``fc1``/``fc2`` and
  ``k + (1-k)/2`` in the output layer ``fc3``; ResNet keeps ``k`` in every conv and the higher
  rate in ``fc``; conv4 the other way round (``k`` in the fc layers, the higher rate in convs);
* random masks are Bernoulli per entry with the keep rate above; magnitude masks drop exactly
  ``int(n * prune_rate)`` entries of smallest ``|w|`` of the *live, trained* weights, with the
  prune rate computed as the original computed it (:func:`prune_rate_for`: ``1 - k`` or
  ``(1 - k) / 2``, which in floating point is not always ``1 - (k + (1 - k) / 2)``);
  the ``same_mask`` magnitude masks drop ``int(n * (1 - k))``;
* forgotten entries are zeroed (``reset_to_zero``) or re-initialised: every top-level child
  module with default initialisers (names without ``bn``/``shortcut.1``) is re-drawn, its
  biases stay re-drawn, and kept weight entries get their previous values back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from forgetting_common.errors import UserError
from forgetting_common.masks import (
    apply_reinit,
    apply_zero,
    build_masks,
    forget_count,
    named_tensors,
    rewind,
    select_parameters,
)
from torch import nn

EXCLUDE_PROBE = ("bn", "bias", "shortcut.1")
EXCLUDE_SAME_MASK = ("bn", "shortcut.1")
REINIT_SCOPES = ("top_level", "all")


def eligible_names(model: nn.Module, exclude: tuple[str, ...] = EXCLUDE_PROBE) -> list[str]:
    """Names of the parameters a probe masks, in registration order."""
    return [name for name, _ in select_parameters(model, exclude_substrings=exclude)]


def keep_rate_for(arch: str, name: str, keep: float) -> float:
    """The keep fraction of one tensor under the original's per-layer rule."""
    high = keep + (1.0 - keep) / 2.0
    if arch == "lenet":
        return high if "fc3" in name else keep
    if arch == "resnet18":
        return high if "fc" in name else keep
    if arch == "conv4":
        return keep if "fc" in name else high
    raise ValueError(f"unknown arch {arch!r}")


def prune_rate_for(arch: str, name: str, keep: float) -> float:
    """The prune rate of one tensor, in the original's own arithmetic.

    The original wrote ``1 - keep`` for the full-rate layers and ``(1 - keep) / 2`` for the
    half-rate ones, and forgot ``int(n * rate)`` entries; ``1 - keep_rate_for(...)`` can round
    differently (keep 0.9 on LeNet's ``fc3``: the original forgets 49 of 1000, not 50).
    """
    full = 1.0 - keep
    if arch == "lenet":
        return full / 2 if "fc3" in name else full
    if arch == "resnet18":
        return full / 2 if "fc" in name else full
    if arch == "conv4":
        return full if "fc" in name else full / 2
    raise ValueError(f"unknown arch {arch!r}")


def kept_count(numel: int, prune_rate: float) -> int:
    """Entries a magnitude mask keeps: ``numel - int(numel * prune_rate)`` (random masks keep that in expectation)."""
    return numel - forget_count(numel, prune_rate)


def check_keep_leaves_entries(model: nn.Module, arch: str, keep: float, same_mask: bool) -> None:
    """A keep fraction that would leave some tensor with no kept entry is a :class:`UserError`."""
    if same_mask:
        names = [n for n in eligible_names(model, EXCLUDE_SAME_MASK) if "bias" not in n]
        rate = {name: 1.0 - keep for name in names}
    else:
        names = eligible_names(model)
        rate = {name: prune_rate_for(arch, name, keep) for name in names}
    params = dict(model.named_parameters())
    for name in names:
        n = params[name].numel()
        if kept_count(n, rate[name]) < 1:
            raise UserError(
                f"--keep_perc {keep} keeps no entry of {name} ({n} entries at keep rate "
                f"{1.0 - rate[name]:g}); use a keep fraction that leaves at least one weight per tensor"
            )


@dataclass
class ForgetConfig:
    """What one probe does to the copy."""

    arch: str
    keep_perc: float
    weight_mask: bool = False
    reset_to_zero: bool = False
    rewind_to_init: bool = False
    same_mask: bool = False
    reinit_scope: str = "top_level"
    fixed_masks: dict[str, torch.Tensor] | None = field(default=None, repr=False)


def _masks(refs: dict[str, torch.Tensor], keep, magnitude: bool, generator, prune_rate=None) -> dict[str, torch.Tensor]:
    return build_masks(refs, keep, kind="magnitude" if magnitude else "random", generator=generator,
                       prune_rate=prune_rate)


def initial_masks(model: nn.Module, cfg: ForgetConfig, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """``same_mask`` masks: once, from the initial weights, one uniform rate for every tensor.

    Bias masks are built too (as in the original) though no probe applies them.
    """
    names = eligible_names(model, EXCLUDE_SAME_MASK)
    refs = named_tensors(model, names)
    return _masks(refs, cfg.keep_perc, cfg.weight_mask, generator, prune_rate=1.0 - cfg.keep_perc)


def probe_masks(
    live: nn.Module, cfg: ForgetConfig, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Fresh per-tensor masks from the live model's current weights (or the fixed ones)."""
    names = eligible_names(live)
    if cfg.same_mask:
        assert cfg.fixed_masks is not None
        return {name: cfg.fixed_masks[name] for name in names}
    refs = named_tensors(live, names)
    return _masks(refs, lambda name: keep_rate_for(cfg.arch, name, cfg.keep_perc), cfg.weight_mask, generator,
                  prune_rate=lambda name: prune_rate_for(cfg.arch, name, cfg.keep_perc))


def reinit_modules(model: nn.Module, scope: str) -> list[tuple[str, nn.Module]]:
    """Modules that the re-initialisation re-draws.

    ``top_level`` (the original): top-level children that have ``reset_parameters`` and whose
    name has no ``bn``/``shortcut.1``. ``all``: every such module at any depth.
    """
    if scope == "top_level":
        candidates = list(model.named_children())
    elif scope == "all":
        candidates = [(n, m) for n, m in model.named_modules() if n]
    else:
        raise ValueError(f"unknown reinit scope {scope!r}; use {REINIT_SCOPES}")
    chosen = []
    for name, module in candidates:
        if not callable(getattr(module, "reset_parameters", None)):
            continue
        if "bn" in name or "shortcut.1" in name:
            continue
        chosen.append((name, module))
    return chosen


@torch.no_grad()
def forget_copy(
    live: nn.Module,
    clone: nn.Module,
    cfg: ForgetConfig,
    *,
    init_weights: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Copy ``live`` into ``clone`` and apply the forgetting operation to the clone only.

    Returns the masks used. ``live`` is never modified.
    """
    clone.load_state_dict(live.state_dict())
    if cfg.rewind_to_init:
        if init_weights is None:
            raise ValueError("rewind_to_init needs the initial weights")
        rewind(clone, init_weights)
    masks = probe_masks(live, cfg, generator)
    if cfg.reset_to_zero:
        apply_zero(clone, masks)
    else:
        modules = reinit_modules(clone, cfg.reinit_scope)
        apply_reinit(clone, masks, modules=modules, generator=generator, unmasked="reinit")
    return masks
