"""Per-example trackers: forgetting events (Toneva et al., 2019) and the misclassification margin.

Both keep one slot per training example on the logits' device and scatter each batch into it by
example index: no per-example Python, no host synchronisation before :meth:`end_epoch`. The
indices of one batch must be distinct (every sampler without replacement gives that).

Forgetting, the original's rules (example_forgetting spec section 8), applied online: an
example's *presentations* are the training batches it appears in, in order; it is correct at a
presentation when ``argmax(logits) == target`` (``torch.max``'s argmax, so ties resolve as in
the original); a *forgetting event* is a presentation at which it is wrong after being correct at
the previous one; it is *first learned* at the 0-based index of its first correct presentation
and *never learned* if it has none. Counting then adds, per run, the events of a learned example
and the number of presentations considered (``--epochs``) for a never-learned one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from forgetting_common.errors import UserError
from forgetting_common.trackers.base import Tracker, accumulator_dtype, read_npz


def correct_and_margin(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, margin)``: ``argmax == target`` and the true-class logit minus the largest other
    one (positive iff correct, 0 at an exact tie), the margin in float64 as example_forgetting
    records it (float32 on MPS, which has no float64)."""
    logits = logits.detach()
    _, predicted = torch.max(logits, 1)
    correct = predicted == targets
    true_logit = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    best_other = logits.scatter(1, targets.view(-1, 1), float("-inf")).max(dim=1).values
    dtype = accumulator_dtype(logits.device)
    return correct, true_logit.to(dtype) - best_other.to(dtype)


def _example_ids(ids: Any, n_examples: int) -> np.ndarray:
    out = np.arange(n_examples, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(out) != n_examples:
        raise ValueError(f"{len(out)} example ids for {n_examples} examples")
    return out


class ForgettingTracker(Tracker):
    """Forgetting events, first-learned presentation and presentations per example.

    ``ids``: each training position's id in the original dataset (written to the compact file,
    so runs on different subsets can be matched); default ``0 … n_examples − 1``.
    Epoch scalars: ``forgetting_events`` (in this epoch), ``learned_fraction`` (correct at least
    once so far), ``unforgettable_fraction`` (learned and never forgotten so far), all over the
    ``n_examples`` examples.
    """

    name = "forgetting"

    def __init__(self, n_examples: int, device: torch.device | str = "cpu", ids: Any = None) -> None:
        super().__init__()
        self.ids = _example_ids(ids, n_examples)
        self.device = torch.device(device)
        self.last = torch.full((n_examples,), -1, dtype=torch.int8, device=self.device)  # -1: not yet presented
        self.events = torch.zeros(n_examples, dtype=torch.int64, device=self.device)
        self.first_learned = torch.full((n_examples,), -1, dtype=torch.int64, device=self.device)  # -1: never
        self.presentations = torch.zeros(n_examples, dtype=torch.int64, device=self.device)
        self.epoch_events = torch.zeros((), dtype=torch.int64, device=self.device)

    def on_batch(self, indices, logits, targets, model=None, inputs=None) -> None:
        idx = indices.to(self.device)
        correct, _ = correct_and_margin(logits, targets)
        correct = correct.to(self.device)
        forgotten = (self.last[idx] == 1) & ~correct
        self.events[idx] += forgotten
        self.epoch_events += forgotten.sum()
        first = correct & (self.first_learned[idx] < 0)
        self.first_learned[idx] = torch.where(first, self.presentations[idx], self.first_learned[idx])
        self.presentations[idx] += 1
        self.last[idx] = correct.to(torch.int8)

    def scalars(self, epoch: int) -> dict[str, float]:
        n = max(1, len(self.ids))
        learned = self.first_learned >= 0
        values = {
            "forgetting_events": float(self.epoch_events),
            "learned_fraction": float(learned.sum()) / n,
            "unforgettable_fraction": float((learned & (self.events == 0)).sum()) / n,
        }
        self.epoch_events.zero_()
        return values

    def tensors(self) -> dict[str, Any]:
        return {"ids": torch.from_numpy(self.ids.copy()), "last": self.last.cpu(), "events": self.events.cpu(),
                "first_learned": self.first_learned.cpu(), "presentations": self.presentations.cpu(),
                "epoch_events": self.epoch_events.cpu()}

    def load_tensors(self, state: dict[str, Any]) -> None:
        if state["events"].shape != self.events.shape:
            raise ValueError(f"forgetting state for {state['events'].shape[0]} examples, not {len(self.ids)}")
        self.ids = state["ids"].numpy().astype(np.int64)
        for key in ("last", "events", "first_learned", "presentations", "epoch_events"):
            getattr(self, key).copy_(state[key])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids.copy(), "events": self.events.cpu().numpy(),
                "first_learned": self.first_learned.cpu().numpy(),
                "learned": (self.first_learned >= 0).cpu().numpy(),
                "presentations": self.presentations.cpu().numpy(),
                "epochs": np.asarray(len(self.epochs), dtype=np.int64)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.ids = arrays["ids"].astype(np.int64)
        n = len(self.ids)
        self.events = torch.as_tensor(arrays["events"], dtype=torch.int64, device=self.device)
        self.first_learned = torch.as_tensor(arrays["first_learned"], dtype=torch.int64, device=self.device)
        self.presentations = torch.as_tensor(arrays["presentations"], dtype=torch.int64, device=self.device)
        self.last = torch.full((n,), -1, dtype=torch.int8, device=self.device)  # not in the file: unused when read back
        self.epoch_events = torch.zeros((), dtype=torch.int64, device=self.device)


@dataclass
class ForgettingCounts:
    """One run's forgetting, as example_forgetting's counting (``RunForgetting``) takes it.

    ``first_learned`` is float with NaN for never-learned examples, as there."""

    ids: np.ndarray
    events: np.ndarray
    learned: np.ndarray
    first_learned: np.ndarray
    presentations: np.ndarray
    epochs: int
    source: str = ""


def load_forgetting_counts(path, epochs: int | None = None) -> ForgettingCounts:
    """The forgetting tracker's values from a compact file (``tracked.npz``), for counting.

    ``epochs`` (order_examples_by_forgetting's ``--epochs``): the original counts only the first
    ``epochs`` presentations of each example. The compact file holds counts, not histories, so it
    cannot be cut: a file whose examples were presented more often is refused with the number to
    pass; one presented at most ``epochs`` times counts exactly as the original would.
    """
    arrays = read_npz(path)
    keys = ("ids", "events", "first_learned", "learned", "presentations", "epochs")
    missing = [k for k in keys if f"forgetting.{k}" not in arrays]
    if missing:
        raise UserError(f"{path} holds no forgetting-tracker values (no forgetting.{missing[0]}); "
                        "it must come from a run with --track forgetting")
    ids, events, first, learned, shown = (arrays[f"forgetting.{k}"] for k in keys[:5])
    if not (len(ids) == len(events) == len(first) == len(learned) == len(shown)) or ids.ndim != 1:
        raise UserError(f"{path}: the forgetting arrays have different lengths; the file is damaged")
    most = int(shown.max()) if len(shown) else 0
    if epochs is not None and most > epochs:
        raise UserError(f"{path} counted up to {most} presentations per example, more than --epochs {epochs}; "
                        f"its counts cannot be cut: pass --epochs {most} or more")
    return ForgettingCounts(
        ids=ids.astype(np.int64), events=events.astype(np.int64), learned=learned.astype(bool),
        first_learned=np.where(first >= 0, first, np.nan).astype(np.float64),
        presentations=shown.astype(np.int64), epochs=int(arrays["forgetting.epochs"]), source=str(path),
    )


class MarginTracker(Tracker):
    """The misclassification margin: true-class logit minus the largest other logit, per example.

    Training: each example's margin at its latest presentation; epoch scalars over the examples
    presented in the epoch: ``margin_mean``, ``margin_median`` (the lower middle value for an
    even count, as ``torch.median``) and ``misclassified_fraction`` (margin < 0). Evaluation:
    ``eval_margin_mean`` and ``eval_misclassified_fraction`` over all evaluated examples of the
    epoch. The compact file holds ``margin.last`` (NaN: never presented) and ``margin.ids``.
    """

    name = "margin"

    def __init__(self, n_examples: int, device: torch.device | str = "cpu", ids: Any = None) -> None:
        super().__init__()
        self.ids = _example_ids(ids, n_examples)
        self.device = torch.device(device)
        dtype = accumulator_dtype(self.device)
        self.last = torch.full((n_examples,), float("nan"), dtype=dtype, device=self.device)
        self.seen = torch.zeros(n_examples, dtype=torch.bool, device=self.device)  # presented this epoch
        self.eval_sum = torch.zeros((), dtype=dtype, device=self.device)
        self.eval_negative = torch.zeros((), dtype=torch.int64, device=self.device)
        self.eval_count = torch.zeros((), dtype=torch.int64, device=self.device)

    def on_batch(self, indices, logits, targets, model=None, inputs=None) -> None:
        idx = indices.to(self.device)
        _, margin = correct_and_margin(logits, targets)
        self.last[idx] = margin.to(self.device, self.last.dtype)
        self.seen[idx] = True

    def on_eval(self, logits, targets, model=None) -> None:
        _, margin = correct_and_margin(logits, targets)
        margin = margin.to(self.device, self.eval_sum.dtype)
        self.eval_sum += margin.sum()
        self.eval_negative += (margin < 0).sum()
        self.eval_count += margin.numel()

    def scalars(self, epoch: int) -> dict[str, float]:
        values: dict[str, float] = {}
        if bool(self.seen.any()):
            m = self.last[self.seen]
            values.update(margin_mean=float(m.mean()), margin_median=float(m.median()),
                          misclassified_fraction=float((m < 0).sum()) / m.numel())
        count = int(self.eval_count)
        if count:
            values.update(eval_margin_mean=float(self.eval_sum) / count,
                          eval_misclassified_fraction=float(self.eval_negative) / count)
        self.seen.zero_()
        self.eval_sum.zero_()
        self.eval_negative.zero_()
        self.eval_count.zero_()
        return values

    def tensors(self) -> dict[str, Any]:
        return {"ids": torch.from_numpy(self.ids.copy()), "last": self.last.cpu(), "seen": self.seen.cpu(),
                "eval_sum": self.eval_sum.cpu(), "eval_negative": self.eval_negative.cpu(),
                "eval_count": self.eval_count.cpu()}

    def load_tensors(self, state: dict[str, Any]) -> None:
        if state["last"].shape != self.last.shape:
            raise ValueError(f"margin state for {state['last'].shape[0]} examples, not {len(self.ids)}")
        self.ids = state["ids"].numpy().astype(np.int64)
        for key in ("last", "seen", "eval_sum", "eval_negative", "eval_count"):
            getattr(self, key).copy_(state[key])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids.copy(), "last": self.last.cpu().numpy().astype(np.float64)}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.ids = arrays["ids"].astype(np.int64)
        self.last = torch.as_tensor(arrays["last"], dtype=self.last.dtype, device=self.device)
