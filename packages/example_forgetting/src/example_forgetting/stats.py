"""Per-example presentation statistics, recorded batch-wise into preallocated tensors.

For every training minibatch, the loss, 0/1 correctness and classification margin of each
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

from typing import Any

import numpy as np
import torch


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
