"""``--track`` in a data-parallel run: what the shared trackers are given on each rank.

The trackers (``forgetting_common.trackers``) must see every example of a global minibatch once
per step. Under ``torchrun`` each rank computed the logits of its own share only, so the shares'
``(positions, logits, targets)`` are gathered (rank order: the global minibatch's order) and every
rank feeds the same whole minibatch to its trackers; their states stay equal on all ranks, so rank
0's checkpoint and ``tracked.npz`` are the run's, and a resume may use another number of ranks.
"""

from __future__ import annotations

from forgetting_common.distributed import Dist
from forgetting_common.errors import UserError
from forgetting_common.trackers import parse_track

#: Trackers that read the network's own forward pass on the rank's inputs (hooks, a second pass):
#: under several ranks each would see only its share of the minibatch.
PER_RANK_TRACKERS = ("dead_units", "plasticity")


def check_trackable(track: str | None, dist: Dist) -> None:
    """Refuse, in one line from rank 0, the trackers a data-parallel run cannot feed whole minibatches.

    Rank 0 raises; the other ranks stop at the next collective with "another rank failed"."""
    if not track or not dist.enabled or not dist.is_main:
        return
    local = [name for name in parse_track(track) if name in PER_RANK_TRACKERS]
    if local:
        raise UserError(
            f"--track {local[0]} is not available under torchrun: it reads the network's pass over each "
            "process's share of a minibatch, not the whole minibatch; run it in one process (the other "
            "trackers work under torchrun)"
        )
