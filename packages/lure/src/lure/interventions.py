"""What happens to the model at the start of every state k >= 2 of ``LURE_main.py``, in the original's
order: SNIP unlearning (``--use_snip``), later-layer forgetting (``--use_llf``), the classifier reset
(``--use_fc``) and shrink and perturb (``--use_shrink_perturb``); and which examples SNIP scores.
"""

from __future__ import annotations

import math
import warnings

import torch
from forgetting_common.atomic import atomic_torch_save

from lure import unlearn
from lure.data import chunk_ids

SNIP_BATCH = 100


def _say(*parts: object) -> None:
    print(*parts, flush=True)


def snip_ids(args, k: int, train_list: list[int]) -> list[int]:
    """The SNIP examples of state ``k``, as the original picks them (see the spec, section 5)."""
    chunk_train, _ = chunk_ids(k, args.meta_batch_size, 0)
    scaled = int(math.floor(args.meta_batch_size * args.snip_size + 1e-9))
    if args.dataset == "cifar100":
        source, n = train_list, scaled
    elif args.snip_no_replay:
        source, n = chunk_train, scaled
    elif args.dataset == "restricted_imagenet":
        source, n = train_list, scaled
    else:  # CIFAR-10 (and MNIST): a hard-coded 128 examples from the start of the state's list
        source, n = train_list, 128
    if args.snip_on_new_chunk:
        source = chunk_train
    if args.snip_examples is not None:
        n = args.snip_examples
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


def apply_interventions(ctx, k: int, train_list: list[int], info: dict) -> bool:
    """The unlearning step and the baselines, in the original's order; True if anything changed."""
    args, model = ctx.args, ctx.model
    changed = False
    model.eval()  # as in the original: still in eval mode from the end-of-state evaluation (also after --resume)
    if args.use_snip:
        ids = snip_ids(args, k, train_list)
        used = snip_batches_used(len(ids), args.snip_batches)
        ids_t = torch.tensor(ids[: used * SNIP_BATCH], dtype=torch.long)
        gen = ctx.gens["snip"]
        batches = []
        for start in range(0, len(ids_t), SNIP_BATCH):
            x, y = ctx.data.pool.fetch(ids_t[start:start + SNIP_BATCH])
            batches.append((ctx.data.augment(x, gen), y))
        saliency = unlearn.snip_saliency(model, batches, train_mode=args.snip_train_mode)
        masks, threshold = unlearn.snip_mask(saliency, args.snip_size)
        touched = unlearn.reinit_masked(model, masks, generator=ctx.gens["mask"], skip_norm=args.snip_skip_norm)
        atomic_torch_save(unlearn.mask_state_dict(model, masks), ctx.save_dir / f"snip_mask_{k - 1}.pth")
        frac = unlearn.forgotten_fraction(masks)
        reinit_n = sum(int((~masks[n]).sum()) for n in touched)
        info.update(snip_examples=len(ids_t), snip_threshold=threshold, mask_fraction=frac,
                    reinitialised=reinit_n)
        _say(f"SNIP: {len(ids_t)} examples, threshold {threshold:.3e}, {100 * frac:.2f}% of parameters masked, "
             f"{reinit_n} weights re-initialised")
        changed = True
    if args.use_llf:
        names = unlearn.llf_reset(model, generator=ctx.gens["mask"], by_stage=args.llf_by_stage)
        info["llf_reset"] = names
        _say(f"LLF: re-initialised {len(names)} weight tensors")
        changed = True
    if args.use_fc:
        names = unlearn.fc_reset(model, args.fc_layer_name, generator=ctx.gens["mask"])
        info["fc_reset"] = names
        changed = changed or bool(names)
    if args.use_shrink_perturb:
        unlearn.shrink_perturb(model, args.shrink, args.perturb, generator=ctx.gens["mask"])
        _say(f"Shrink & perturb: shrink {args.shrink}, perturb {args.perturb}")
        changed = True
    return changed
