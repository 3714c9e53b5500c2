"""``--track`` in a data-parallel run: what the shared trackers are given on each rank.

The trackers (``forgetting_common.trackers``) must see every example of a global minibatch once
per step. Under ``torchrun`` each rank computed the logits of its own share only, so the shares'
``(positions, logits, targets)`` are gathered (rank order: the global minibatch's order) and every
rank feeds the same whole minibatch to its trackers; their states stay equal on all ranks, so rank
0's checkpoint and ``tracked.npz`` are the run's, and a resume may use another number of ranks.
"""

from __future__ import annotations


