"""The paper's method: per-example presentation statistics and forgetting events.

Recording (:class:`StatsRecorder`, used by ``run_mnist.py`` / ``run_cifar.py``) and counting
(:func:`run_forgetting`, :func:`order_examples`, used by ``order_examples_by_forgetting.py``).

Recording: for every training minibatch, the loss, 0/1 correctness and classification margin of each
example are read off the outputs of the forward pass used for the gradient step (before
``optimizer.step()``) and scattered into ``[N, epochs]`` tensors on the training device. There
is no per-example Python work and no ``.item()`` in the hot loop.

:meth:`StatsRecorder.to_dict` builds the original pickle layout::

    {orig_id: [losses, accs, margins], ..., 'train': [[], running_acc_per_batch],
     'test': [[], test_acc_per_epoch]}

with example ids in first-presentation order, ``'train'`` inserted after the first minibatch's
examples and ``'test'`` after the first epoch's examples, as the original scripts produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from forgetting_common.errors import UserError


def margins_and_correct(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example margin (true-class output minus the largest other output) and correctness.

    Correctness is ``argmax == target`` with torch's own argmax (as ``torch.max`` gives it), so
    ties resolve exactly as in the original. The margin is positive iff the example is correct
    (ignoring exact ties, where it is 0). Vectorised: one gather and one masked max.
    """
    outputs = outputs.detach()
    _, predicted = torch.max(outputs, 1)
    correct = predicted == targets
    true_out = outputs.gather(1, targets.view(-1, 1)).squeeze(1)
    others = outputs.scatter(1, targets.view(-1, 1), float("-inf"))
    return true_out - others.max(dim=1).values, correct


class StatsRecorder:
    """Preallocated ``loss``/``acc``/``margin`` arrays of shape ``[N, epochs]`` (position space).

    ``orig_ids[p]`` is the original example id of training position ``p``.
    """

    def __init__(self, orig_ids: np.ndarray, epochs: int, device: torch.device | str = "cpu") -> None:
        self.orig_ids = np.asarray(orig_ids, dtype=np.int64)
        n = len(self.orig_ids)
        self.epochs = epochs
        self.device = torch.device(device)
        self.loss = torch.zeros(n, epochs, dtype=torch.float32, device=self.device)
        self.acc = torch.zeros(n, epochs, dtype=torch.uint8, device=self.device)
        self.margin = torch.zeros(n, epochs, dtype=torch.float32, device=self.device)
        self.train_running: list[float] = []  # running train accuracy (%) after each minibatch
        self.test_acc: list[float] = []  # test accuracy (%) after each epoch
        self.first_order: np.ndarray | None = None  # positions in first-presentation order
        self.first_batch_len = 0
        self.completed = 0  # epochs completed (and recorded)
        self._batch_correct: list[torch.Tensor] = []
        self._batch_sizes: list[int] = []
        # Running per-example summaries of the completed epochs, for the per-epoch log.
        self._ever_correct = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._ever_forgotten = torch.zeros(n, dtype=torch.bool, device=self.device)
        self._last_events: torch.Tensor | int = 0

    def __len__(self) -> int:
        return len(self.orig_ids)

    def record(
        self,
        epoch: int,
        positions: torch.Tensor,
        outputs: torch.Tensor,
        targets: torch.Tensor,
        losses: torch.Tensor,
    ) -> torch.Tensor:
        """Store one minibatch's statistics; returns the batch's correctness (bool tensor)."""
        margin, correct = margins_and_correct(outputs, targets)
        pos = positions.to(self.device)
        self.loss[pos, epoch] = losses.detach().to(self.device, torch.float32)
        self.acc[pos, epoch] = correct.to(self.device, torch.uint8)
        self.margin[pos, epoch] = margin.to(self.device, torch.float32)
        self._batch_correct.append(correct.sum())
        self._batch_sizes.append(int(positions.numel()))
        return correct

    def set_first_order(self, order: np.ndarray, first_batch_len: int) -> None:
        """Remember epoch 0's presentation order (for the original dict's insertion order)."""
        if self.first_order is None:
            self.first_order = np.asarray(order, dtype=np.int64)
            self.first_batch_len = first_batch_len

    def end_epoch(self, test_accuracy: float) -> list[float]:
        """Close an epoch: turn the batch counts into the running-accuracy list; returns it."""
        self._summarise(self.completed)
        counts = torch.stack(self._batch_correct).cpu().tolist() if self._batch_correct else []
        running, correct, total = [], 0, 0
        for c, size in zip(counts, self._batch_sizes):
            correct += int(c)
            total += size
            running.append(100.0 * correct / float(total))
        self.train_running.extend(running)
        self.test_acc.append(float(test_accuracy))
        self._batch_correct, self._batch_sizes = [], []
        self.completed += 1
        return running

    def _summarise(self, epoch: int) -> None:
        """Fold epoch ``epoch``'s column into the running summaries (every example is presented
        once per epoch, so consecutive columns are consecutive presentations)."""
        now = self.acc[:, epoch].bool()
        self._last_events = 0
        if epoch > 0:
            forgotten = self.acc[:, epoch - 1].bool() & ~now
            self._ever_forgotten |= forgotten
            self._last_events = forgotten.sum()
        self._ever_correct |= now

    def epoch_summary(self) -> dict[str, float]:
        """Forgetting at the last completed epoch: events in it (correct at the previous
        presentation, wrong at this one), the fraction of examples learned so far, and the
        fraction learned and never forgotten so far (unforgettable, if training stopped here)."""
        n = max(1, len(self))
        return {
            "forgetting_events": float(self._last_events),
            "learned_fraction": float(self._ever_correct.sum()) / n,
            "unforgettable_fraction": float((self._ever_correct & ~self._ever_forgotten).sum()) / n,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, as CPU tensors and plain values (a checkpoint's part).

        Holds the completed epochs' columns and, mid-epoch, the open one with the minibatch
        counts of the running accuracy, so a resumed run continues the same lists.
        """
        cols = min(self.epochs, self.completed + (1 if self._batch_sizes else 0))
        return {
            "loss": self.loss[:, :cols].cpu().clone(),
            "acc": self.acc[:, :cols].cpu().clone(),
            "margin": self.margin[:, :cols].cpu().clone(),
            "train_running": list(self.train_running),
            "test_acc": list(self.test_acc),
            "first_order": None if self.first_order is None else torch.from_numpy(self.first_order.copy()),
            "first_batch_len": int(self.first_batch_len),
            "completed": int(self.completed),
            "batch_correct": [int(c) for c in self._batch_correct],
            "batch_sizes": list(self._batch_sizes),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        cols = state["loss"].shape[1]
        if state["loss"].shape[0] != len(self) or cols > self.epochs:
            raise ValueError(f"recorded statistics of shape {tuple(state['loss'].shape)} do not fit "
                             f"{len(self)} examples x {self.epochs} epochs")
        self.loss[:, :cols] = state["loss"].to(self.device)
        self.acc[:, :cols] = state["acc"].to(self.device)
        self.margin[:, :cols] = state["margin"].to(self.device)
        self.train_running = [float(v) for v in state["train_running"]]
        self.test_acc = [float(v) for v in state["test_acc"]]
        order = state["first_order"]
        self.first_order = None if order is None else order.numpy().astype(np.int64)
        self.first_batch_len = int(state["first_batch_len"])
        self.completed = int(state["completed"])
        self._batch_correct = [torch.tensor(int(c), device=self.device) for c in state["batch_correct"]]
        self._batch_sizes = [int(s) for s in state["batch_sizes"]]
        self._ever_correct.zero_()
        self._ever_forgotten.zero_()
        for epoch in range(self.completed):
            self._summarise(epoch)

    def arrays(self, epochs: int | None = None) -> dict[str, np.ndarray]:
        """CPU numpy copies of the completed columns, in position space."""
        e = self.completed if epochs is None else epochs
        return {
            "loss": self.loss[:, :e].cpu().numpy(),
            "acc": self.acc[:, :e].cpu().numpy(),
            "margin": self.margin[:, :e].cpu().numpy(),
        }

    def to_dict(self) -> dict[Any, Any]:
        """The original pickle layout (plain Python ints, floats and lists)."""
        e = self.completed
        arrays = self.arrays(e)
        losses = arrays["loss"].astype(np.float64).tolist()
        accs = arrays["acc"].astype(np.int64).tolist()
        margins = arrays["margin"].astype(np.float64).tolist()
        order = self.first_order if self.first_order is not None else np.arange(len(self))
        ids = self.orig_ids.tolist()
        out: dict[Any, Any] = {}
        for k, p in enumerate(order.tolist()):
            if k == self.first_batch_len and e > 0:
                out["train"] = [[], list(self.train_running)]
            out[ids[p]] = [losses[p], accs[p], margins[p]]
        if "train" not in out:
            out["train"] = [[], list(self.train_running)]
        out["test"] = [[], list(self.test_acc)]
        return out

    def best_acc_text(self) -> str:
        """The ``__best_acc.txt`` content: ``train test `` then ``<max train> <max test>``."""
        train = max(self.train_running) if self.train_running else float("nan")
        test = max(self.test_acc) if self.test_acc else float("nan")
        return f"train test \n{train!s} {test!s}"


# ---------------------------------------------------------------------------------------------
# Counting forgetting events, summing them over runs and sorting examples (spec section 8).
# Works on statistics written by this package *and* by the original scripts (ids as numpy int64
# or Python int, accuracy lists of Python ints, 'train'/'test' string keys).


@dataclass
class RunForgetting:
    """One run's per-example results for the first ``epochs`` presentations."""

    ids: np.ndarray  # original ids, in the pickle's insertion order
    events: np.ndarray  # number of 1 -> 0 transitions
    learned: np.ndarray  # bool: correct at least once
    first_learned: np.ndarray  # float: first presentation index with acc 1, NaN if never
    source: str = ""

    def counts(self, penalty: int) -> np.ndarray:
        """Forgetting events, with ``penalty`` for never-learned examples (the original's rule)."""
        return np.where(self.learned, self.events, penalty).astype(np.int64)

    def as_mapping(self, penalty: int) -> dict[int, int]:
        return dict(zip(self.ids.tolist(), self.counts(penalty).tolist()))


def example_keys(stats: dict[Any, Any]) -> list[Any]:
    """The example ids of a stats dict (every key that is not a string)."""
    return [k for k in stats if not isinstance(k, str)]


def acc_matrix(stats: dict[Any, Any], epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, acc, valid)``: accuracy histories cut to ``epochs`` columns, padded where short."""
    keys = example_keys(stats)
    ids = np.array([int(k) for k in keys], dtype=np.int64)
    rows = [stats[k][1][:epochs] for k in keys]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max()) if len(rows) else 0
    if len(rows) and np.all(lengths == width):
        acc = np.asarray(rows, dtype=np.int8).reshape(len(rows), width)
        valid = np.ones_like(acc, dtype=bool)
    else:
        acc = np.zeros((len(rows), width), dtype=np.int8)
        valid = np.zeros((len(rows), width), dtype=bool)
        for i, r in enumerate(rows):
            acc[i, : len(r)] = r
            valid[i, : len(r)] = True
    return ids, acc, valid


def forgetting_from_acc(acc: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised ``(events, learned, first_learned)`` from an ``[N, E]`` 0/1 accuracy matrix."""
    acc = np.asarray(acc).astype(np.int8)
    if valid is None:
        valid = np.ones(acc.shape, dtype=bool)
    if acc.shape[1] >= 2:
        drops = (acc[:, :-1] == 1) & (acc[:, 1:] == 0) & valid[:, 1:]
        events = drops.sum(axis=1)
    else:
        events = np.zeros(acc.shape[0], dtype=np.int64)
    hit = (acc == 1) & valid
    learned = hit.any(axis=1)
    first = np.where(learned, hit.argmax(axis=1), 0).astype(np.float64)
    first[~learned] = np.nan
    return events.astype(np.int64), learned, first


def run_forgetting(stats: dict[Any, Any], epochs: int, source: str = "") -> RunForgetting:
    ids, acc, valid = acc_matrix(stats, epochs)
    events, learned, first = forgetting_from_acc(acc, valid)
    return RunForgetting(ids=ids, events=events, learned=learned, first_learned=first, source=source)


@dataclass
class Ordering:
    indices: np.ndarray  # original ids, least-forgotten first
    counts: np.ndarray  # matching totals
    unforgettable: int
    runs: list[RunForgetting]

    def as_pickle_dict(self) -> dict[str, np.ndarray]:
        return {"indices": self.indices, "forgetting counts": self.counts}


def total_counts(runs: list[RunForgetting], epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, totals)`` over runs; every run must hold the same example ids."""
    if not runs:
        raise ValueError("no runs")
    base = runs[0]
    ids = np.sort(base.ids)
    totals = np.zeros(len(ids), dtype=np.int64)
    for run in runs:
        order = np.argsort(run.ids, kind="stable")
        if len(run.ids) != len(ids) or not np.array_equal(run.ids[order], ids):
            raise UserError(
                f"{run.source or 'a run'} holds a different set of examples than {base.source or 'the first run'} "
                f"({len(run.ids)} vs {len(ids)}); only runs on the same training set can be combined"
            )
        totals += run.counts(epochs)[order]
    return ids, totals


def sort_by_forgetting(ids: np.ndarray, totals: np.ndarray, tie_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort by (total, rank in a seeded random permutation): ties broken at random."""
    ids = np.asarray(ids, dtype=np.int64)
    canonical = np.argsort(ids, kind="stable")
    rank = np.empty(len(ids), dtype=np.int64)
    rank[canonical] = np.random.RandomState(tie_seed).permutation(len(ids))
    order = np.lexsort((rank, totals))
    return ids[order], np.asarray(totals, dtype=np.int64)[order]


def order_examples(runs: list[RunForgetting], epochs: int, tie_seed: int = 0) -> Ordering:
    ids, totals = total_counts(runs, epochs)
    sorted_ids, sorted_counts = sort_by_forgetting(ids, totals, tie_seed)
    return Ordering(sorted_ids, sorted_counts, int((totals == 0).sum()), runs)
