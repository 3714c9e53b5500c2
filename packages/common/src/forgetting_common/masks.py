"""Keep-masks over parameters, and what to do with the entries they drop.

A *mask* is a boolean tensor shaped like a parameter: ``True`` keeps an entry, ``False``
forgets it. Masks are built per tensor (:func:`random_mask`, :func:`magnitude_mask`) or over
many tensors at once (:func:`global_magnitude_mask`), from any reference tensor: the current
weights, the initial weights, or a score such as SNIP's ``|w * grad|``.

Forgotten entries are then re-initialised (:func:`apply_reinit`), zeroed (:func:`apply_zero`)
or rewound to stored values (:func:`rewind`). Parameters are chosen by name with
:func:`select_parameters` and :func:`parameters_from` (the later-layer forgetting rule:
"this parameter and every one registered after it").

Counting rule: the originals forget ``int(n * rate)`` entries, computed in floating point
with the prune rate as each original computed it. :func:`prune_count` is that arithmetic for
``rate = 1 - keep`` (so ``n=10, keep=0.9`` forgets 0 entries, as the originals did, since
``10 * (1 - 0.9)`` is 0.999...); a package whose original derives the rate another way (a
half rate ``(1 - k) / 2``, say) passes the rate itself through :func:`forget_count` or
``build_masks(..., prune_rate=...)``. The smallest entries go first, ties broken by position
(earlier entries go first).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

Masks = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- selection
def select_parameters(
    model: nn.Module,
    *,
    include: Iterable[str] | None = None,
    exclude_substrings: Iterable[str] = (),
    predicate: Callable[[str, nn.Parameter], bool] | None = None,
) -> list[tuple[str, nn.Parameter]]:
    """Ordered ``(name, parameter)`` pairs, filtered by exact names, excluded substrings or a predicate."""
    wanted = set(include) if include is not None else None
    excluded = tuple(exclude_substrings)
    chosen = []
    for name, param in model.named_parameters():
        if wanted is not None and name not in wanted:
            continue
        if any(part in name for part in excluded):
            continue
        if predicate is not None and not predicate(name, param):
            continue
        chosen.append((name, param))
    return chosen


def parameters_from(model: nn.Module, start: str, match: str = "prefix") -> list[str]:
    """Names of the first parameter that matches ``start`` and of every one after it.

    ``match="prefix"``: the first name equal to ``start`` or under it (``layer4`` matches
    ``layer4.0.conv1.weight``), else the first name starting with it. ``match="contains"``:
    the first name that contains ``start`` anywhere (the later-layer-forgetting rule).
    Registration order is the order of ``named_parameters()``. A ``start`` that matches
    nothing is a ``KeyError`` that lists the model's top-level names.
    """
    names = [name for name, _ in model.named_parameters()]
    if match == "prefix":
        rules = (lambda n: n == start or n.startswith(start + "."), lambda n: n.startswith(start))
    elif match == "contains":
        rules = (lambda n: start in n,)
    else:
        raise ValueError(f"match must be 'prefix' or 'contains', got {match!r}")
    for matches in rules:
        for index, name in enumerate(names):
            if matches(name):
                return names[index:]
    tops = sorted({name.split(".")[0] for name in names})
    raise KeyError(f"no parameter name matches {start!r}; the model's top-level names are {tops}")


# --------------------------------------------------------------------------- building
def prune_count(numel: int, keep: float) -> int:
    """How many of ``numel`` entries a keep fraction forgets: the originals' ``int(numel * (1 - keep))``.

    Deliberately the plain floating-point product, truncated, not a rounded or epsilon-guarded
    one: at keep 0.9 on 235,200 weights the originals forget 23,519, not 23,520.
    """
    _check_keep(keep)
    return forget_count(numel, 1.0 - keep)


def forget_count(numel: int, rate: float) -> int:
    """``int(numel * rate)``: the count for a prune rate computed the way an original computed it."""
    if not 0.0 <= rate <= 1.0 or math.isnan(rate):
        raise ValueError(f"prune rate must be in [0, 1], got {rate}")
    return min(numel, int(numel * rate))


def _check_keep(keep: float) -> None:
    if not 0.0 <= keep <= 1.0 or math.isnan(keep):
        raise ValueError(f"keep fraction must be in [0, 1], got {keep}")


def random_mask(
    like: torch.Tensor, keep: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Independent Bernoulli(keep) per entry, drawn as ``U[0,1) < keep`` on the CPU.

    Drawing on the CPU makes the mask the same on every device for a given generator;
    ``generator=None`` uses torch's global CPU stream, as the originals did. The kept
    fraction is only approximately ``keep``; use :func:`exact_random_mask` for an exact count.
    """
    _check_keep(keep)
    draws = torch.rand(like.shape, generator=generator, device="cpu")
    return (draws < keep).to(like.device)


def exact_random_mask(
    like: torch.Tensor, keep: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniformly random mask forgetting exactly ``prune_count(numel, keep)`` entries."""
    n = like.numel()
    forget = prune_count(n, keep)
    order = torch.randperm(n, generator=generator, device="cpu")
    flat = torch.ones(n, dtype=torch.bool)
    flat[order[:forget]] = False
    return flat.view(like.shape).to(like.device)


def _smallest_first_keep(scores: torch.Tensor, forget: int) -> torch.Tensor:
    """Flat keep-mask forgetting the ``forget`` smallest scores, ties broken by position.

    A k-th-value threshold, not a full sort: entries below it go, then the earliest entries
    equal to it until the count is reached. Same result as a stable sort, several times faster.
    """
    n = scores.numel()
    keep = torch.ones(n, dtype=torch.bool, device=scores.device)
    if forget <= 0:
        return keep
    if forget >= n:
        return ~keep
    threshold = scores.kthvalue(forget).values
    below = scores < threshold
    keep &= ~below
    still = forget - int(below.sum())
    if still > 0:
        ties = (scores == threshold).nonzero().squeeze(1)[:still]
        keep[ties] = False
    return keep


def magnitude_mask(
    reference: torch.Tensor, keep: float, *, prune_rate: float | None = None
) -> torch.Tensor:
    """Forget the ``prune_count`` entries of smallest ``|reference|``; keep the rest.

    ``prune_rate`` (if given) replaces ``1 - keep`` in the count: ``int(numel * prune_rate)``.
    Ties are broken by position (earlier entries go first), so the result is deterministic.
    """
    n = reference.numel()
    forget = prune_count(n, keep) if prune_rate is None else forget_count(n, prune_rate)
    scores = reference.detach().abs().flatten().to(torch.float32)
    return _smallest_first_keep(scores, forget).view(reference.shape)


def global_magnitude_mask(references: Mapping[str, torch.Tensor], keep: float) -> Masks:
    """One ranking over all tensors: forget the ``prune_count(N, keep)`` smallest ``|score|``.

    ``N`` is the total number of entries. Ties are broken by position in the concatenation
    (tensor order, then entry order).
    """
    names = list(references)
    if not names:
        return {}
    flats = [references[name].detach().abs().flatten() for name in names]
    device = flats[0].device
    scores = torch.cat([f.to(device, torch.float32) for f in flats])
    keep_flat = _smallest_first_keep(scores, prune_count(scores.numel(), keep))
    masks: Masks = {}
    offset = 0
    for name, flat in zip(names, flats):
        size = flat.numel()
        masks[name] = keep_flat[offset : offset + size].view(references[name].shape).to(references[name].device)
        offset += size
    return masks


def build_masks(
    references: Mapping[str, torch.Tensor],
    keep: float | Callable[[str], float],
    kind: str = "random",
    generator: torch.Generator | None = None,
    *,
    prune_rate: float | Callable[[str], float] | None = None,
) -> Masks:
    """Per-tensor masks for every named reference tensor.

    ``keep`` is one fraction or a function of the name (per-layer rules);
    ``kind`` is ``"random"`` (Bernoulli), ``"exact_random"`` or ``"magnitude"``.
    ``prune_rate`` (one rate or a function of the name) gives the magnitude masks' count as
    ``int(numel * rate)`` with the rate exactly as an original computed it; without it the
    count is :func:`prune_count` of ``keep``.
    Tensors are visited in the mapping's order, so random draws are reproducible.
    """
    keep_of = keep if callable(keep) else (lambda _name: keep)
    rate_of = prune_rate if callable(prune_rate) or prune_rate is None else (lambda _name: prune_rate)
    masks: Masks = {}
    for name, ref in references.items():
        k = keep_of(name)
        if kind == "random":
            masks[name] = random_mask(ref, k, generator)
        elif kind == "exact_random":
            masks[name] = exact_random_mask(ref, k, generator)
        elif kind == "magnitude":
            rate = None if rate_of is None else rate_of(name)
            masks[name] = magnitude_mask(ref, k, prune_rate=rate)
        else:
            raise ValueError(f"unknown mask kind {kind!r}; use random, exact_random or magnitude")
    return masks


def full_masks(references: Mapping[str, torch.Tensor], keep: bool) -> Masks:
    """All-``keep`` masks: ``False`` forgets whole tensors (later-layer forgetting)."""
    return {name: torch.full_like(ref, keep, dtype=torch.bool) for name, ref in references.items()}


def named_tensors(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: parameter data}`` for the named parameters, in the given order."""
    params = dict(model.named_parameters())
    return {name: params[name].detach() for name in names}


def kept_fraction(masks: Mapping[str, torch.Tensor]) -> float:
    """The fraction of entries kept over all masks."""
    total = sum(m.numel() for m in masks.values())
    return float(sum(int(m.sum()) for m in masks.values())) / total if total else 1.0


# --------------------------------------------------------------------------- applying
def snapshot(model: nn.Module, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of parameters (all, or the named ones), for rewinding later."""
    wanted = set(names) if names is not None else None
    return {
        name: param.detach().clone()
        for name, param in model.named_parameters()
        if wanted is None or name in wanted
    }


@torch.no_grad()
def apply_zero(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the forgotten entries of each masked parameter (on whatever device it lives)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        param = params[name]
        param.mul_(mask.to(device=param.device, dtype=param.dtype))


@torch.no_grad()
def rewind(
    model: nn.Module,
    stored: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write stored values back: everywhere, or only where ``masks`` is ``False`` (forgotten)."""
    params = dict(model.named_parameters())
    for name, value in stored.items():
        param = params[name]
        value = value.to(device=param.device, dtype=param.dtype)
        if masks is None or name not in masks:
            if masks is None:
                param.copy_(value)
            continue
        param.copy_(torch.where(masks[name].to(param.device), param, value))


def default_reinit(module: nn.Module) -> None:
    """The layers' own default initialisers: ``reset_parameters`` of the module and every submodule."""
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def owning_modules(model: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The modules that directly own the named parameters, in registration order."""
    wanted = set(names)
    owners = []
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if any(prefix + p in wanted for p, _ in module.named_parameters(recurse=False)):
            owners.append((mod_name, module))
    return owners


@torch.no_grad()
def apply_reinit(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    *,
    modules: Iterable[tuple[str, nn.Module]] | None = None,
    init_fn: Callable[[nn.Module], None] = default_reinit,
    generator: torch.Generator | None = None,
    unmasked: str = "keep",
) -> None:
    """Re-initialise forgotten entries: re-draw each module, then write kept entries back.

    ``modules``: ``(name, module)`` pairs to re-draw, each with all its parameters (default:
    the modules that directly own a masked parameter, each with its own parameters). A masked
    parameter keeps its values where its mask is True. ``unmasked`` decides a re-drawn
    module's other parameters: ``"keep"`` restores them, ``"reinit"`` leaves them freshly
    drawn (the fortuitous-forgetting scripts re-draw every bias this way).

    ``generator=None`` draws from torch's global RNG in place, on the model's device, as the
    originals did. With a generator, each module is re-drawn on a CPU copy under a seed taken
    from that generator, so the values are the same on every device.
    """
    if unmasked not in ("keep", "reinit"):
        raise ValueError(f"unmasked must be 'keep' or 'reinit', got {unmasked!r}")
    recurse = modules is not None
    chosen = list(modules) if modules is not None else owning_modules(model, masks)
    for mod_name, module in chosen:
        prefix = f"{mod_name}." if mod_name else ""
        params = dict(module.named_parameters(recurse=recurse))
        saved = {rel: param.detach().clone() for rel, param in params.items()}
        if generator is None:
            init_fn(module)
            fresh = {rel: param.detach() for rel, param in params.items()}
        else:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            cpu_copy = copy.deepcopy(module).to("cpu")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                init_fn(cpu_copy)
            fresh = {rel: p.detach() for rel, p in cpu_copy.named_parameters(recurse=recurse)}
        for rel, param in params.items():
            name = prefix + rel
            new = fresh[rel].to(device=param.device, dtype=param.dtype)
            if name in masks:
                value = torch.where(masks[name].to(param.device), saved[rel], new)
            elif unmasked == "keep":
                value = saved[rel]
            else:
                value = new
            param.copy_(value)


def forget(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    how: str = "reinit",
    *,
    stored: Mapping[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    unmasked: str = "keep",
) -> None:
    """Apply masks one way: ``"reinit"``, ``"zero"`` or ``"rewind"`` (to ``stored`` values)."""
    if how == "reinit":
        apply_reinit(model, masks, generator=generator, unmasked=unmasked)
    elif how == "zero":
        apply_zero(model, masks)
    elif how == "rewind":
        if stored is None:
            raise ValueError("rewinding needs the stored values")
        rewind(model, stored, masks)
    else:
        raise ValueError(f"unknown way to forget {how!r}; use reinit, zero or rewind")

