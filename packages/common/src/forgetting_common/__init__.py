"""What the forgetting packages share.

Modules, each small and independent of the paper packages:

- :mod:`forgetting_common.errors`: :class:`UserError` and :func:`run_main`, the one-line-error exit.
- :mod:`forgetting_common.safeload`: checkpoints and data pickles loaded without running code.
- :mod:`forgetting_common.atomic`: write-then-rename files.
- :mod:`forgetting_common.testing`: kill-and-resume helpers for the packages' tests.
- :mod:`forgetting_common.device`: ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` resolution.
- :mod:`forgetting_common.seeding`: seed everything, named generators, RNG state save/restore.
- :mod:`forgetting_common.cli`: original-style argparse quirks and the shared extension flags.
- :mod:`forgetting_common.runlog`: run folders with ``config.json``, ``metrics.jsonl``, TensorBoard.
- :mod:`forgetting_common.masks`: keep-masks, re-initialisation, zeroing, rewinding.
- :mod:`forgetting_common.trackers`: the papers' measurements (forgetting events, margin, dead units,
  weight/effective rank, plasticity, ECE, distance from initialisation) behind one interface, ``--track``.
- :mod:`forgetting_common.data`: MNIST, CIFAR, EMNIST, image folders, text corpora, digits,
  on-device tensor batching and fake datasets for tests.
"""

from forgetting_common.errors import UserError, run_main

__all__ = ["UserError", "run_main"]
