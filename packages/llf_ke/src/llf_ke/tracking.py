"""``--track`` on ``train_KE_cls.py``: the shared trackers over every generation, and what each reset did.

One :class:`~forgetting_common.trackers.TrackerSet` runs through the whole run, across resets: the
forgetting tracker's "correct at the last presentation" carries over a reset, so an example right
at its last presentation before a reset and wrong at its first one after it is a forgetting event
at the boundary, by Toneva's rule unchanged. Every example is presented exactly once per epoch
(a permutation; CS-KD's anchors too; under torchrun the ranks' shares are gathered), so the
forgetting tracker's state at an epoch's end is each example's correctness in that epoch.

:class:`GenerationEvents` reads that state at each epoch's end and keeps, per generation ``g``
and example (arrays ``[num_generations, n_examples]``, ``generations.<field>`` in tracked.npz):

- ``first_correct`` / ``last_correct``: correct at the generation's first / last presentation
  (int8, -1: not reached yet);
- ``events``: forgetting events during generation g (for g >= 1 the boundary event included);
- ``learned``: correct at least once during generation g;
- ``reset_forgotten``: g >= 1, correct at the last presentation of g-1 and wrong at the first of g;
- ``relearned_epoch``: for those, the epoch of g (0-based) at which it is first correct again
  (-1: not (yet) relearned).

Only rank 0 writes; every rank keeps the same state (a resume may use another number of ranks).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from forgetting_common import distributed
from forgetting_common.distributed import Dist
from forgetting_common.errors import UserError
from forgetting_common.trackers import COMPACT_FILE, build_trackers, write_npz
from torch.utils.data import Dataset

from llf_ke.data import Splits, dataset_targets

#: The metrics.jsonl / TensorBoard prefix of the tracked values (``track/forgetting_events`` ...).
TRACK_PREFIX = "track/"
GENERATION_FIELDS = ("first_correct", "last_correct", "events", "learned", "reset_forgotten", "relearned_epoch")


class IndexedDataset(Dataset):
    """``dataset``'s items with their position appended: ``(image, label, index)``.

    The samplers draw exactly as over ``dataset`` (same length; ``targets`` for CS-KD's pairs),
    so wrapping changes nothing that is trained."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.targets = dataset_targets(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, label, index


def with_indices(splits: Splits, track: str | None) -> Splits:
    """The training split yielding example positions when ``--track`` is on (else unchanged)."""
    return dataclasses.replace(splits, train=IndexedDataset(splits.train)) if track else splits


class GenerationEvents:
    """Per generation and example: what the reset before it made the network forget (see the module doc)."""

    def __init__(self, forgetting, num_generations: int) -> None:
        self.forgetting = forgetting  # the run's ForgettingTracker (its last/events tensors are read)
        n, device = len(forgetting.ids), forgetting.events.device
        shape = (num_generations, n)
        self.first_correct = torch.full(shape, -1, dtype=torch.int8, device=device)
        self.last_correct = torch.full(shape, -1, dtype=torch.int8, device=device)
        self.events = torch.zeros(shape, dtype=torch.int64, device=device)
        self.learned = torch.zeros(shape, dtype=torch.bool, device=device)
        self.reset_forgotten = torch.zeros(shape, dtype=torch.bool, device=device)
        self.relearned_epoch = torch.full(shape, -1, dtype=torch.int64, device=device)
        self.events_at_start = torch.zeros(n, dtype=torch.int64, device=device)
        self.before_reset = torch.full((n,), -1, dtype=torch.int8, device=device)

    def start_generation(self) -> None:
        """Before generation g's first step: where the counts stand, and the correctness before the reset."""
        self.events_at_start = self.forgetting.events.clone()
        self.before_reset = self.forgetting.last.clone()

    def end_epoch(self, g: int, epoch: int) -> dict[str, float]:
        now = self.forgetting.last
        if epoch == 0:
            self.first_correct[g] = now
            if g >= 1:
                self.reset_forgotten[g] = (self.before_reset == 1) & (now == 0)
        back = self.reset_forgotten[g] & (self.relearned_epoch[g] < 0) & (now == 1)
        self.relearned_epoch[g] = torch.where(back, torch.full_like(self.relearned_epoch[g], epoch),
                                              self.relearned_epoch[g])
        self.last_correct[g] = now
        self.learned[g] |= now == 1
        self.events[g] = self.forgetting.events - self.events_at_start
        if g == 0:
            return {}
        return {"reset_forgotten": float(self.reset_forgotten[g].sum()),
                "reset_relearned": float((self.relearned_epoch[g] >= 0).sum())}

    _STATE = (*GENERATION_FIELDS, "events_at_start", "before_reset")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key).cpu() for key in self._STATE}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key in self._STATE:
            if state[key].shape != getattr(self, key).shape:
                raise UserError(f"--resume: the checkpoint's per-generation tracking has shape "
                                f"{tuple(state[key].shape)}, this run {tuple(getattr(self, key).shape)}")
            getattr(self, key).copy_(state[key])

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"generations.{key}": getattr(self, key).cpu().numpy() for key in GENERATION_FIELDS}


class RunTracking:
    """The ``--track`` trackers of one run and their per-generation record, fed by the training loop."""

    def __init__(self, track: str, model: torch.nn.Module, device: torch.device, n_examples: int,
                 num_classes: int, num_generations: int, dist: Dist) -> None:
        self.track, self.model, self.dist, self.num_classes = track, model, dist, num_classes
        # built on the starting weights (init_distance measures from them); they only read
        self.trackers = build_trackers(track, n_examples=n_examples, model=model, device=device)
        forgetting = self.trackers.get("forgetting")
        self.generations = GenerationEvents(forgetting, num_generations) if forgetting is not None else None
        self._eval: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_step(self, positions: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                inputs: torch.Tensor) -> None:
        """After ``optimizer.step()``: the batch the gradient came from (every rank calls it, even an empty share)."""
        positions, logits, targets = distributed.gather_batch(positions, logits, targets.to(logits.device), self.dist)
        if len(targets):
            self.trackers.on_batch(positions, logits, targets, model=self.model, inputs=inputs)

    def on_eval_batch(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self._eval.append((logits.detach(), targets))

    def eval_done(self) -> None:
        """The validation pass's logits (every rank's, gathered once) to the trackers."""
        if not self._eval:  # a rank whose share of the split is empty
            logits = torch.empty((0, self.num_classes), device=self.dist.device)
            targets = torch.empty(0, dtype=torch.long, device=self.dist.device)
        else:
            logits, targets = (torch.cat(parts) for parts in zip(*self._eval))
        self._eval = []
        positions = torch.zeros(len(targets), dtype=torch.long, device=logits.device)  # unused by on_eval
        _, logits, targets = distributed.gather_batch(positions, logits, targets, self.dist)
        if len(targets):
            self.trackers.on_eval(logits, targets, model=self.model)

    def start_generation(self) -> None:
        if self.generations is not None:
            self.generations.start_generation()

    def end_epoch(self, g: int, epoch: int, global_epoch: int) -> dict[str, float]:
        """The epoch's tracked values, ``track/``-prefixed, for its metrics row."""
        values = self.trackers.end_epoch(global_epoch)
        if self.generations is not None:
            values.update(self.generations.end_epoch(g, epoch))
        return {TRACK_PREFIX + k: v for k, v in values.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"track": self.track, "trackers": self.trackers.state_dict(),
                "generations": self.generations.state_dict() if self.generations is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """A checkpoint's tracking; one line if it was written with other ``--track`` names."""
        if state is None or state.get("track") != self.track:
            was = None if state is None else state.get("track")
            raise UserError(f"--resume: the run was started with --track {was!r}, not {self.track!r}; "
                            "resume it with the same --track")
        self.trackers.load_state_dict(state["trackers"])
        if self.generations is not None:
            self.generations.load_state_dict(state["generations"])

    def save(self, exp_dir: Path) -> Path:
        """``tracked.npz`` in the run folder: the trackers' compact arrays and the per-generation record."""
        arrays = self.trackers.compact()
        if self.generations is not None:
            arrays.update(self.generations.arrays())
        return write_npz(Path(exp_dir) / COMPACT_FILE, arrays)


def check_resume_track(track: str | None, resume_state: dict | None) -> None:
    """A resume with other ``--track`` names than the checkpoint's (or none): refused in one line,
    before anything is written (the tracked values could not continue)."""
    if resume_state is None:
        return
    was = (resume_state.get("tracking") or {}).get("track")
    if was != (track or None):
        raise UserError(f"--resume: the run was started with --track {was!r}, not {track or None!r}; "
                        "resume it with the same --track")
