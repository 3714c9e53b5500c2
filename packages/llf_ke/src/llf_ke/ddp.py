"""``train_KE_cls.py`` on several processes (``torchrun --nproc_per_node N``): the pieces this
package adds on top of :mod:`forgetting_common.distributed`.

* :class:`RankShareBatchSampler`: every rank draws the original's whole epoch of global
  minibatches from the same random state, then keeps its share of each one, so N ranks see
  exactly the examples one process would, batch by batch.
* :func:`sync_rng`: every random stream set to rank 0's, at the points where the ranks must
  draw alike (a generation's reset, an epoch's order); in between, each rank's data
  augmentation draws for its own images.

Generic, not specific to this paper: candidates for ``forgetting_common.distributed``.
"""

from __future__ import annotations

import functools
import random

import torch
from forgetting_common.distributed import Dist, broadcast_object, rank_share
from forgetting_common.seeding import get_rng_state, set_rng_state

__all__ = ["RankShareBatchSampler", "seed_worker_by_rank", "sync_rng"]


def sync_rng(dist: Dist) -> None:
    """Python's, NumPy's and torch's global random states set to rank 0's (a no-op on one process)."""
    if dist.enabled:
        set_rng_state(broadcast_object(get_rng_state(), dist))


class RankShareBatchSampler:
    """This rank's share of each global minibatch of ``inner`` (a batch sampler).

    The epoch's global minibatches are drawn in full when iteration starts, from the global
    random state (the same on every rank after :func:`sync_rng`), so they are the ones one
    process would draw. ``pairs``: a batch is anchors then their partners (CS-KD); the share
    keeps matching anchors and partners. ``keep_empty`` (training): a rank whose share is
    empty still gets a batch, one example it must not learn from (see :attr:`sizes`), so it
    takes part in every gradient reduction; otherwise empty shares are skipped (evaluation).
    ``sizes`` holds (this rank's examples, the global batch's) per batch yielded this epoch.
    """

    def __init__(self, inner, dist: Dist, *, keep_empty: bool, pairs: bool = False) -> None:
        self.inner, self.dist, self.keep_empty, self.pairs = inner, dist, keep_empty, pairs
        self.sizes: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.inner)

    def _share(self, batch: list[int]) -> tuple[list[int], int]:
        if not self.pairs:
            return batch[rank_share(len(batch), self.dist)], len(batch)
        half = len(batch) // 2
        anchors, partners = batch[:half], batch[half:]
        s = rank_share(half, self.dist)
        return anchors[s] + partners[s], half

    def __iter__(self):
        batches = list(self.inner)
        if self.dist.rank > 0:
            # the augmentation draws that follow must differ from rank 0's, as other images'
            # do in one process; sync_rng makes the streams equal again afterwards
            torch.manual_seed(int(torch.randint(2**62, (1,))) + self.dist.rank)
        self.sizes = []
        for batch in batches:
            share, global_n = self._share(batch)
            if share:
                self.sizes.append((len(share) // (2 if self.pairs else 1), global_n))
                yield share
            elif self.keep_empty:
                self.sizes.append((0, global_n))
                yield batch[:1] * (2 if self.pairs else 1)



def _seed_worker(rank: int, worker_id: int) -> None:  # noqa: ARG001 - the worker's seed already includes its id
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**63
    torch.manual_seed(seed)
    random.seed(seed)


def seed_worker_by_rank(rank: int):
    """A DataLoader ``worker_init_fn`` (picklable, for spawned workers too): the workers of
    different ranks draw different augmentations."""
    return functools.partial(_seed_worker, rank)
