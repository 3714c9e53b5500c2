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

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from forgetting_common import distributed
from forgetting_common.distributed import Dist


def margins_and_correct(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example margin (true-class output minus the largest other output) and correctness.

    Correctness is ``argmax == target`` with torch's own argmax (as ``torch.max`` gives it), so
    ties resolve exactly as in the original. The margin is positive iff the example is correct
    (ignoring exact ties, where it is 0). Vectorised: one gather and one masked max.

    The margin is a float64 difference of the two float32 outputs: the original subtracted the
    two ``.item()`` values as Python floats, and a float32 difference would round their last bits.
    """
    outputs = outputs.detach()
    _, predicted = torch.max(outputs, 1)
    correct = predicted == targets
    true_out = outputs.gather(1, targets.view(-1, 1)).squeeze(1)
    others = outputs.scatter(1, targets.view(-1, 1), float("-inf"))
    best_other = others.max(dim=1).values
    if true_out.device.type == "mps":  # MPS has no float64
        true_out, best_other = true_out.cpu(), best_other.cpu()
    return true_out.double() - best_other.double(), correct


class StatsRecorder:
    """Preallocated ``loss``/``acc``/``margin`` arrays, one row per epoch: ``[epochs, N]``
    (position space).

    ``orig_ids[p]`` is the original example id of training position ``p``. An epoch's values are
    contiguous and allocated without being written (``torch.empty``), so the memory of the
    epochs still to come is not resident before they are trained: a 200-epoch MNIST run holds
    1/200 of the 156 MB in its first epoch. Each row is zeroed when its epoch opens.
    """

    def __init__(self, orig_ids: np.ndarray, epochs: int, device: torch.device | str = "cpu") -> None:
        self.orig_ids = np.asarray(orig_ids, dtype=np.int64)
        n = len(self.orig_ids)
        self.epochs = epochs
        self.device = torch.device(device)
        # The original pickle holds float32 losses (``.item()`` of a float32 tensor), 0/1 ints
        # and float64 margins (see margins_and_correct): stored at exactly that precision.
        self.loss = torch.empty(epochs, n, dtype=torch.float32, device=self.device)
        self.acc = torch.empty(epochs, n, dtype=torch.uint8, device=self.device)
        self._margin_device = torch.device("cpu") if self.device.type == "mps" else self.device  # no float64 on MPS
        self.margin = torch.empty(epochs, n, dtype=torch.float64, device=self._margin_device)
        self._open = -1  # the epoch whose row has been zeroed and is being written
        self.train_running: list[float] = []  # running train accuracy (%) after each minibatch
        self.test_acc: list[float] = []  # test accuracy (%) after each epoch
        self.first_order: np.ndarray | None = None  # positions in first-presentation order
        self.first_batch_len = 0
        self.completed = 0  # epochs completed (and recorded)
        self._batch_correct: list[torch.Tensor] = []
        self._batch_sizes: list[int] = []
        # Several ranks (torchrun): the positions this rank recorded since the last merge, and how
        # many of the batch counts above are already sums over ranks (see merge_ranks).
        self._unmerged_positions: list[torch.Tensor] = []
        self._merged_batches = 0
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
        if epoch != self._open:
            self._open_row(epoch)
        pos = positions.to(self.device)
        self.loss[epoch, pos] = losses.detach().to(self.device, torch.float32)
        self.acc[epoch, pos] = correct.to(self.device, torch.uint8)
        self.margin[epoch, pos.to(self._margin_device)] = margin.to(self._margin_device, torch.float64)
        self._batch_correct.append(correct.sum())
        self._batch_sizes.append(int(positions.numel()))
        self._unmerged_positions.append(pos)
        return correct

    def merge_ranks(self, epoch: int, dist: Dist) -> None:
        """Under several ranks: make every rank's recorder hold every rank's values of ``epoch``.

        Each rank recorded only its share of each minibatch. The rows it recorded since the last
        merge are gathered from all ranks by position (every example is presented once per epoch,
        so no position comes twice) and scattered into each rank's row; the minibatch counts of
        the running accuracy are summed over ranks, so they are those of the global minibatches.
        A no-op for one process. Call it on every rank at the same point (a collective).
        """
        if not dist.enabled:
            self._unmerged_positions = []
            return
        if epoch != self._open:
            self._open_row(epoch)
        pos = (torch.cat(self._unmerged_positions) if self._unmerged_positions
               else torch.zeros(0, dtype=torch.long, device=self.device))
        rows = torch.stack([self.loss[epoch, pos].double(), self.acc[epoch, pos].double(),
                            self.margin[epoch, pos.to(self._margin_device)].to(self.device)], 1)
        index, rows = distributed.gather_rows(pos, rows, dist)
        index, rows = index.to(self.device), rows.to(self.device)
        self.loss[epoch, index] = rows[:, 0].to(torch.float32)  # float32 and 0/1 round-trip float64 exactly
        self.acc[epoch, index] = rows[:, 1].to(torch.uint8)
        self.margin[epoch, index.to(self._margin_device)] = rows[:, 2].to(self._margin_device)
        first = self._merged_batches
        if len(self._batch_sizes) > first:
            counts = torch.stack([c.to(dist.device, torch.long) for c in self._batch_correct[first:]])
            sizes = torch.tensor(self._batch_sizes[first:], dtype=torch.long, device=dist.device)
            distributed.all_reduce_sum(counts, dist)
            distributed.all_reduce_sum(sizes, dist)
            self._batch_correct[first:] = list(counts.to(self.device).unbind())
            self._batch_sizes[first:] = sizes.tolist()
        self._merged_batches = len(self._batch_sizes)
        self._unmerged_positions = []

    def _open_row(self, epoch: int) -> None:
        self.loss[epoch].zero_()
        self.acc[epoch].zero_()
        self.margin[epoch].zero_()
        self._open = epoch

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
        self._unmerged_positions, self._merged_batches = [], 0
        self.completed += 1
        return running

    def _summarise(self, epoch: int) -> None:
        """Fold epoch ``epoch``'s column into the running summaries (every example is presented
        once per epoch, so consecutive columns are consecutive presentations)."""
        now = self.acc[epoch].bool()
        self._last_events = 0
        if epoch > 0:
            forgotten = self.acc[epoch - 1].bool() & ~now
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
            "loss": self._rows(self.loss, cols).t().cpu().clone(memory_format=torch.contiguous_format),
            "acc": self._rows(self.acc, cols).t().cpu().clone(memory_format=torch.contiguous_format),
            "margin": self._rows(self.margin, cols).t().cpu().clone(memory_format=torch.contiguous_format),
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
        self.loss[:cols] = state["loss"].t().to(self.device)
        self.acc[:cols] = state["acc"].t().to(self.device)
        self.margin[:cols] = state["margin"].t().to(self._margin_device, torch.float64)
        self._open = cols - 1
        self.train_running = [float(v) for v in state["train_running"]]
        self.test_acc = [float(v) for v in state["test_acc"]]
        order = state["first_order"]
        self.first_order = None if order is None else order.numpy().astype(np.int64)
        self.first_batch_len = int(state["first_batch_len"])
        self.completed = int(state["completed"])
        self._batch_correct = [torch.tensor(int(c), device=self.device) for c in state["batch_correct"]]
        self._batch_sizes = [int(s) for s in state["batch_sizes"]]
        # What a checkpoint holds was merged over ranks before it was written.
        self._unmerged_positions, self._merged_batches = [], len(self._batch_sizes)
        self._ever_correct.zero_()
        self._ever_forgotten.zero_()
        for epoch in range(self.completed):
            self._summarise(epoch)

    def _rows(self, values: torch.Tensor, count: int) -> torch.Tensor:
        """The first ``count`` epoch rows; a row never opened (no minibatch recorded) reads 0."""
        rows = values[:count]
        if count > self._open + 1:
            rows = rows.clone()
            rows[self._open + 1 :] = 0
        return rows

    def arrays(self, epochs: int | None = None) -> dict[str, np.ndarray]:
        """CPU numpy copies of the completed columns, in position space."""
        e = self.completed if epochs is None else epochs
        return {
            "loss": self._rows(self.loss, e).t().cpu().numpy(),
            "acc": self._rows(self.acc, e).t().cpu().numpy(),
            "margin": self._rows(self.margin, e).t().cpu().numpy(),
        }

    def to_dict(self) -> dict[Any, Any]:
        """The original pickle layout (plain Python ints, floats and lists)."""
        return dict(self.items())

    def items(self) -> Iterator[tuple[Any, list]]:
        """The pairs of :meth:`to_dict`, in its order, each built when it is asked for: written with
        ``atomic_pickle_dict`` the 36 M Python floats of a 200-epoch MNIST run never exist at once."""
        e = self.completed
        arrays = self.arrays(e)
        loss, acc, margin = arrays["loss"], arrays["acc"], arrays["margin"]
        order = self.first_order if self.first_order is not None else np.arange(len(self))
        ids = self.orig_ids.tolist()
        train = [[], list(self.train_running)]
        train_given = False
        for k, p in enumerate(order.tolist()):
            if k == self.first_batch_len and e > 0:
                yield "train", train  # where the original's first epoch put it: after the first minibatch
                train_given = True
            yield ids[p], [loss[p].astype(np.float64).tolist(), acc[p].astype(np.int64).tolist(),
                           margin[p].astype(np.float64).tolist()]
        if not train_given:
            yield "train", train
        yield "test", [[], list(self.test_acc)]

    def best_acc_text(self) -> str:
        """The ``__best_acc.txt`` content: ``train test `` then ``<max train> <max test>``."""
        train = max(self.train_running) if self.train_running else float("nan")
        test = max(self.test_acc) if self.test_acc else float("nan")
        return f"train test \n{train!s} {test!s}"


# Counting (spec section 8) lives in its own torch-free module; the method's names stay here too.
from example_forgetting.counting import (  # noqa: E402
    Ordering,
    RunForgetting,
    acc_matrix,
    example_keys,
    forgetting_from_acc,
    order_examples,
    run_forgetting,
    sort_by_forgetting,
    total_counts,
)

__all__ = [
    "margins_and_correct", "StatsRecorder", "Ordering", "RunForgetting", "acc_matrix", "example_keys",
    "forgetting_from_acc", "order_examples", "run_forgetting", "sort_by_forgetting", "total_counts",
]
