"""``LURE_main.py`` / ``ALMA.py`` on several processes (``torchrun --nproc_per_node N``): the
pieces this package adds on top of :mod:`forgetting_common.distributed`.

Every rank holds the whole data set as tensors and draws every global minibatch (and its
augmentation) from the run's generators exactly as one process does; it then trains on its
share of the batch (:func:`batch_share`). So the random streams never diverge between ranks and
the interventions at each state (SNIP, resets) compute the same on all of them.

Generic, not specific to this paper: candidates for ``forgetting_common.distributed``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

from forgetting_common.distributed import Dist, rank_share


def batch_share(n: int, dist: Dist | None) -> slice:
    """This rank's rows of a global batch of ``n`` (all of them for one process)."""
    return rank_share(n, dist) if dist is not None and dist.enabled else slice(0, n)


@contextlib.contextmanager
def only_main_speaks(dist: Dist) -> Iterator[None]:
    """On ranks other than 0, no printed progress and no warnings (rank 0 reports the run)."""
    if dist.is_main:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
