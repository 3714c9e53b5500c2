"""What changes when ``run_mnist.py`` / ``run_cifar.py`` run under ``torchrun --nproc_per_node N``.

The training loop (:mod:`example_forgetting.train`) is the same for one process and for N: every
rank draws the same data, removal, noise, permutation and augmentation from the same seed and
takes its share of each global minibatch (:func:`forgetting_common.distributed.rank_share`).
Rank 0 alone decides about the output folder, writes and speaks; these helpers are those
decisions. With one process each is what the single-process run always did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from forgetting_common import distributed
from forgetting_common.distributed import Dist
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import stream_seed

from example_forgetting import checkpoint as ckpt
from example_forgetting.cli import Config


def say(dist: Dist, *args: Any, **kwargs: Any) -> None:
    """Console output: one copy, from rank 0."""
    if dist.is_main:
        print(*args, **kwargs)


def prepare_output(config: Config, stats_path: Path, run_dir: Path, dist: Dist) -> dict[str, Any] | None:
    """Rank 0 decides between a fresh run, a resume and a refusal (and removes what an earlier
    attempt left, :func:`example_forgetting.checkpoint.prepare_output`); the other ranks follow
    its decision and read the same checkpoint. A refusal on rank 0 stops the others too."""
    if not dist.enabled:
        return ckpt.prepare_output(config, stats_path, run_dir)
    resumed = ckpt.prepare_output(config, stats_path, run_dir) if dist.is_main else None
    if distributed.broadcast_object(resumed is not None, dist) and not dist.is_main:
        resumed = load_checkpoint(run_dir / ckpt.CHECKPOINT_NAME, what="checkpoint")
    return resumed


@contextlib.contextmanager
def rank0_first(dist: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (reading the data may download it), then the other ranks."""
    if dist.enabled and not dist.is_main:
        distributed.barrier(dist)
    yield
    if dist.enabled and dist.is_main:
        distributed.barrier(dist)


def reseed_rank_dropout(seed: int, dist: Dist, epoch: int, batch: int = 0) -> None:
    """Ranks after the first draw their own dropout masks (torch's global RNG; the WRN and the
    MNIST net): with rank 0's stream every rank would drop the same units for its share.
    Reseeded per epoch, so a run resumed at an epoch boundary draws what it would have drawn."""
    if dist.enabled and not dist.is_main:
        torch.manual_seed(stream_seed(seed, f"dropout rank {dist.rank} epoch {epoch} batch {batch}"))
