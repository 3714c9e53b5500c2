"""The "unlearn" step (SNIP-ranked re-initialisation) and the other interventions of the original.

* :func:`snip_saliency`: ``|g ⊙ θ|`` for every parameter, ``g`` the element-wise absolute
  gradient of the mean cross-entropy summed over the SNIP batches.
* :func:`snip_mask`: one global ranking; ``t`` is the ``int(frac · N)``-th smallest saliency
  (1-based, as ``torch.kthvalue``) and every entry with saliency ``<= t`` is forgotten, so ties
  (exact zeros) can push the forgotten fraction above ``frac``.
* :func:`reinit_masked`: forgotten entries of every parameter whose name contains ``weight``
  get fresh values; biases are never changed, kept entries keep their exact values.
* :func:`llf_reset`, :func:`fc_reset`, :func:`shrink_perturb`: the baselines.
* :func:`snip_ids`, :func:`apply_interventions`: which examples SNIP scores, and the whole step
  at the start of every state ``k >= 2`` of ``LURE_main.py``, in the original's order (SNIP
  unlearning, later-layer forgetting, classifier reset, shrink and perturb).

Masks are keep-masks (``True`` keeps), as in :mod:`forgetting_common.masks`, which performs the
re-initialisation (:func:`forgetting_common.masks.apply_reinit`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.masks import apply_reinit, full_masks, named_tensors
from forgetting_common.seeding import Generators
from torch import nn

from lure.replay import chunk_ids

Masks = dict[str, torch.Tensor]
SNIP_BATCH = 100


@torch.no_grad()
def fresh_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` with PyTorch's default layer init: Kaiming-uniform with ``a = √5``.

    That is ``U(-1/√fan_in, 1/√fan_in)``; a 1-D tensor is treated as ``(C, 1)`` (fan_in 1),
    so BatchNorm γ and biases get ``U(-1, 1)``.
    """
    shape = tensor.shape if tensor.dim() >= 2 else (tensor.numel(), 1)
    fan_in = shape[1] * (math.prod(shape[2:]) if len(shape) > 2 else 1)
    gain = math.sqrt(2.0 / (1 + 5))  # leaky_relu gain with a = sqrt(5)
    bound = gain * math.sqrt(3.0 / fan_in) if fan_in else 0.0
    values = torch.rand(tensor.shape, generator=generator, device="cpu", dtype=torch.float32)
    tensor.copy_((values * 2 - 1).mul_(bound).to(device=tensor.device, dtype=tensor.dtype))
    return tensor


def fresh_like(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return fresh_(torch.empty_like(tensor), generator)


def _weights_init(module: nn.Module) -> None:
    """``init_fn`` for :func:`apply_reinit`: fresh values for the module's own ``*weight*`` tensors."""
    for name, param in module.named_parameters(recurse=False):
        if "weight" in name:
            fresh_(param.data)


def _all_init(module: nn.Module) -> None:
    for _, param in module.named_parameters(recurse=False):
        fresh_(param.data)


# --------------------------------------------------------------------------- SNIP
def snip_saliency(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    train_mode: bool = False,
) -> dict[str, torch.Tensor]:
    """``|Σ_b |∂L_b/∂θ| ⊙ θ|`` per parameter (``L_b`` the batch's mean cross-entropy).

    The model stays in whatever mode it is in unless ``train_mode`` (the original computes the
    gradients in eval mode, left over from the end-of-state evaluation). BatchNorm running
    statistics are restored afterwards in train mode, so scoring never changes the model.
    """
    params = dict(model.named_parameters())
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = model.training
    saved_buffers = {n: b.detach().clone() for n, b in model.named_buffers()} if train_mode else None
    if train_mode:
        model.train()
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        found = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), found):
            if g is not None:
                grads[name].add_(g.detach().abs())
    if train_mode:
        model.train(was_training)
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved_buffers[n])
    return {name: (grads[name] * p.detach()).abs() for name, p in params.items()}


def snip_threshold(saliency: dict[str, torch.Tensor], frac: float) -> tuple[float, int]:
    """``(t, k)``: ``k = int(frac · N)`` and ``t`` the k-th smallest saliency (``-inf`` if k = 0)."""
    flat = torch.cat([s.flatten().float() for s in saliency.values()])
    k = int(frac * flat.numel())
    if k <= 0:
        return float("-inf"), 0
    return float(torch.kthvalue(flat.cpu(), k).values), k


def snip_mask(saliency: dict[str, torch.Tensor], frac: float) -> tuple[Masks, float]:
    """Keep-masks over every parameter (``False`` where saliency ``<= t``) and the threshold ``t``."""
    t, _ = snip_threshold(saliency, frac)
    return {name: s > t for name, s in saliency.items()}, t


def forgotten_fraction(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return float(sum(int((~m).sum()) for m in masks.values())) / total if total else 0.0


def reinit_masked(model: nn.Module, masks: Masks, generator: torch.Generator | None = None,
                  skip_norm: bool = False) -> list[str]:
    """Fresh values where a ``*weight*`` parameter's mask is False; returns the names touched.

    ``skip_norm``: leave normalisation-layer weights (BatchNorm γ, 1-D) alone.
    """
    chosen = {}
    for name, param in model.named_parameters():
        if name in masks and "weight" in name and not (skip_norm and param.dim() == 1):
            chosen[name] = masks[name]
    apply_reinit(model, chosen, init_fn=_weights_init, generator=generator, unmasked="keep")
    return list(chosen)


def mask_state_dict(model: nn.Module, masks: Masks) -> dict[str, torch.Tensor]:
    """The original's saved artefact: the model's state dict with each parameter replaced by its 0/1 mask."""
    state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    for name, mask in masks.items():
        state[name] = mask.to(torch.float32).cpu()
    return state


# --------------------------------------------------------------------------- baselines
#: The original's LLF keep-list: ResNet-18's stem and the convolutions of its first two stages,
#: matched by exact name (so deeper models keep only these nine and reset their other early blocks).
LLF_KEEP = (
    "conv1.weight",
    "layer1.0.conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv1.weight", "layer1.1.conv2.weight",
    "layer2.0.conv1.weight", "layer2.0.conv2.weight", "layer2.1.conv1.weight", "layer2.1.conv2.weight",
)


def llf_names(model: nn.Module, by_stage: bool = False) -> list[str]:
    """The parameters later-layer forgetting resets: names containing ``weight`` but neither
    ``bn`` nor ``downsample``, except the nine names of :data:`LLF_KEEP` (the original's rule).

    ``by_stage`` (extension): keep ``conv1.weight`` and everything under ``layer1.``/``layer2.``
    instead, i.e. the first two stages of any ResNet depth.
    """
    names = []
    for name, _ in model.named_parameters():
        if "weight" not in name or "bn" in name or "downsample" in name:
            continue
        if by_stage:
            if name == "conv1.weight" or name.startswith(("layer1.", "layer2.")):
                continue
        elif name in LLF_KEEP:
            continue
        names.append(name)
    return names


def _reset_whole(model: nn.Module, names: list[str], init_fn: Callable[[nn.Module], None],
                 generator: torch.Generator | None) -> None:
    masks = full_masks(named_tensors(model, names), keep=False)
    apply_reinit(model, masks, init_fn=init_fn, generator=generator, unmasked="keep")


def llf_reset(model: nn.Module, generator: torch.Generator | None = None, by_stage: bool = False) -> list[str]:
    names = llf_names(model, by_stage)
    _reset_whole(model, names, _weights_init, generator)
    return names


def fc_reset(model: nn.Module, layer_name: str = "linear", generator: torch.Generator | None = None) -> list[str]:
    """Re-initialise every parameter whose name contains ``layer_name`` (weights and biases).

    The original matched ``linear``, which none of its models has (they call it ``fc``): a no-op,
    kept as the default, with a warning.
    """
    names = [name for name, _ in model.named_parameters() if layer_name in name]
    if not names:
        warnings.warn(
            f"--use_fc matched no parameter whose name contains {layer_name!r}; nothing was reset "
            f"(as in the original); pass --fc_layer_name fc to reset the classifier", stacklevel=2)
        return []
    _reset_whole(model, names, _all_init, generator)
    return names


@torch.no_grad()
def shrink_perturb(model: nn.Module, shrink: float = 0.3, perturb: float = 0.001,
                   generator: torch.Generator | None = None) -> None:
    """Ash & Adams: ``θ ← shrink·θ + perturb·θ_fresh`` for every parameter, biases included."""
    for _, param in model.named_parameters():
        param.mul_(shrink).add_(fresh_like(param, generator), alpha=perturb)


# --------------------------------------------------------------------------- the step at a new state
def snip_ids(cfg, k: int, train_list: list[int]) -> list[int]:
    """The SNIP examples of state ``k`` (``cfg`` a :class:`lure.cli.Config`), as the original picks them (spec section 5)."""
    chunk_train, _ = chunk_ids(k, cfg.meta_batch_size, 0)
    scaled = int(math.floor(cfg.meta_batch_size * cfg.snip_size + 1e-9))
    if cfg.dataset == "cifar100":
        source, n = train_list, scaled
    elif cfg.snip_no_replay:
        source, n = chunk_train, scaled
    elif cfg.dataset == "restricted_imagenet":
        source, n = train_list, scaled
    else:  # CIFAR-10 (and MNIST): a hard-coded 128 examples from the start of the state's list
        source, n = train_list, 128
    if cfg.snip_on_new_chunk:
        source = chunk_train
    if cfg.snip_examples is not None:
        n = cfg.snip_examples
    if n > len(source):
        warnings.warn(f"SNIP wants {n} examples but only {len(source)} are available at state {k}; using "
                      f"{len(source)}", stacklevel=2)
        n = len(source)
    return source[:n]


def snip_batches_used(n_examples: int, override: int | None) -> int:
    """The original scores only ceil(#batches / 32) batches of 100 (one batch in every README setting)."""
    total = math.ceil(n_examples / SNIP_BATCH)
    used = override if override is not None else math.ceil(total / 32)
    return max(0, min(total, used))


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def apply_interventions(cfg, k: int, train_list: list[int], *, model: nn.Module, data, gens: Generators,
                        save_dir) -> tuple[bool, dict]:
    """The unlearning step and the baselines at state ``k``, in the original's order.

    ``data`` is the run's :class:`lure.data.AnytimeData`; the SNIP mask goes to
    ``save_dir/snip_mask_{k-1}.pth`` (not written when ``save_dir`` is None). Returns whether anything changed and what to record.
    """
    changed, info = False, {}
    model.eval()  # as in the original: still in eval mode from the end-of-state evaluation (also after --resume)
    if cfg.use_snip:
        ids = snip_ids(cfg, k, train_list)
        used = snip_batches_used(len(ids), cfg.snip_batches)
        ids_t = torch.tensor(ids[: used * SNIP_BATCH], dtype=torch.long)
        batches = []
        for start in range(0, len(ids_t), SNIP_BATCH):
            x, y = data.pool.fetch(ids_t[start:start + SNIP_BATCH])
            batches.append((data.augment(x, gens["snip"]), y))
        saliency = snip_saliency(model, batches, train_mode=cfg.snip_train_mode)
        masks, threshold = snip_mask(saliency, cfg.snip_size)
        touched = reinit_masked(model, masks, generator=gens["mask"], skip_norm=cfg.snip_skip_norm)
        if save_dir is not None:  # None: a rank other than 0 under torchrun, which writes nothing
            atomic_torch_save(mask_state_dict(model, masks), save_dir / f"snip_mask_{k - 1}.pth")
        frac = forgotten_fraction(masks)
        reinit_n = sum(int((~masks[n]).sum()) for n in touched)
        info.update(snip_examples=len(ids_t), snip_threshold=threshold, mask_fraction=frac, reinitialised=reinit_n)
        _say(f"SNIP: {len(ids_t)} examples, threshold {threshold:.3e}, {100 * frac:.2f}% of parameters masked, "
             f"{reinit_n} weights re-initialised")
        changed = True
    if cfg.use_llf:
        info["llf_reset"] = llf_reset(model, generator=gens["mask"], by_stage=cfg.llf_by_stage)
        _say(f"LLF: re-initialised {len(info['llf_reset'])} weight tensors")
        changed = True
    if cfg.use_fc:
        info["fc_reset"] = fc_reset(model, cfg.fc_layer_name, generator=gens["mask"])
        changed = changed or bool(info["fc_reset"])
    if cfg.use_shrink_perturb:
        shrink_perturb(model, cfg.shrink, cfg.perturb, generator=gens["mask"])
        _say(f"Shrink & perturb: shrink {cfg.shrink}, perturb {cfg.perturb}")
        changed = True
    return changed, info
