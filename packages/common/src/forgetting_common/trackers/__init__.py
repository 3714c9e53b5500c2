"""Trackers: the five papers' measurements, usable on any paper's training loop.

A tracker is told what happened and keeps its own running sums on the logits' device
(vectorised torch ops, no per-example Python, no host synchronisation before ``end_epoch``)::

    tracker.on_batch(indices, logits, targets, model=None, inputs=None)
        # after a training step: the step's example indices (positions 0..n_examples-1, distinct
        # within a batch), the logits of its forward pass (the ones the gradient came from) and
        # the targets; call it after optimizer.step(): plasticity then reads the updated `model`
        # on `inputs` (only plasticity needs inputs)
    tracker.on_eval(logits, targets, model=None)      # after an evaluation (calls accumulate)
    tracker.end_epoch(epoch) -> dict[str, float]      # the epoch's scalars (metrics.jsonl, TensorBoard)
    tracker.state_dict() / tracker.load_state_dict(s) # for checkpoints: tensors and plain values only
    tracker.save_compact(path) / tracker.load_compact(path)   # the compact per-run file (.npz)

:func:`build_trackers` parses ``--track NAME[,NAME...]`` into a :class:`TrackerSet`, which has
the same methods and calls its trackers in :data:`TRACKER_NAMES` order. The names:

- ``forgetting``: forgetting events, first-learned presentation, presentations per example
  (Toneva et al.; the original's rules, never-learned examples included) -- :mod:`.examples`
- ``margin``: true-class logit minus the largest other (example_forgetting's margin) -- :mod:`.examples`
- ``dead_units``: fraction of hidden units with zero output (upgd) -- :mod:`.units`
- ``weight_rank``: upgd's matrix-rank ratio of the weights -- :mod:`.weights`
- ``effective_rank``: Roy & Vetterli's effective rank of the weights -- :mod:`.weights`
- ``plasticity``: 1 − loss after the step / loss before it (upgd) -- :mod:`.plasticity`
- ``ece``: expected calibration error with lure's 15 bins -- :mod:`.calibration`
- ``init_distance``: distance of the parameters from their initial values -- :mod:`.weights`

The compact file (``tracked.npz``) holds every tracker's arrays under ``<tracker>.<field>``
and its per-epoch scalars under ``<tracker>.history.<key>`` (with ``<tracker>.history_epochs``);
the forgetting fields are ``ids, events, first_learned, learned, presentations, epochs``
(``first_learned`` −1 when never learned), read for counting by :func:`load_forgetting_counts`.
A tracker never changes what is trained: it only reads the logits and the weights (dead-unit
hooks only read; plasticity's extra pass restores the RNGs and buffers it could touch).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forgetting_common.errors import UserError
from forgetting_common.trackers.base import Tracker, read_npz, write_npz
from forgetting_common.trackers.calibration import ECETracker
from forgetting_common.trackers.examples import (
    ForgettingCounts,
    ForgettingTracker,
    MarginTracker,
    correct_and_margin,
    load_forgetting_counts,
)
from forgetting_common.trackers.plasticity import PlasticityTracker
from forgetting_common.trackers.units import DeadUnitsTracker, untracked_forward
from forgetting_common.trackers.weights import (
    EffectiveRankTracker,
    InitDistanceTracker,
    WeightRankTracker,
    effective_rank,
    weight_rank,
)

#: Every tracker name, in the order a :class:`TrackerSet` calls them (dead_units reads the
#: training pass before plasticity runs its own, which the hooks ignore anyway).
TRACKER_NAMES = ("forgetting", "margin", "dead_units", "weight_rank", "effective_rank", "plasticity", "ece",
                 "init_distance")
#: The compact file's name in a run folder.
COMPACT_FILE = "tracked.npz"


def _unknown(value: str) -> str | None:
    """What is wrong with a ``NAME[,NAME...]`` value (None: nothing)."""
    unknown = [n for n in (part.strip() for part in str(value).split(",")) if n not in TRACKER_NAMES]
    if unknown:
        return f"unknown tracker {unknown[0]!r}; the trackers are {','.join(TRACKER_NAMES)}"
    return None


def parse_track(value: str) -> tuple[str, ...]:
    """``NAME[,NAME...]`` -> the names in :data:`TRACKER_NAMES` order (repeats dropped)."""
    problem = _unknown(value)
    if problem:
        raise UserError(f"--track {value}: {problem}")
    names = {part.strip() for part in str(value).split(",")}
    return tuple(n for n in TRACKER_NAMES if n in names)


#: Trackers that read the network's own pass over the inputs (hooks, a second pass): under torchrun
#: each process would see only its share of a minibatch, so a data-parallel run refuses them.
PER_RANK_TRACKERS = ("dead_units", "plasticity")


def check_data_parallel(track: str | None, world_size: int, is_main: bool = True) -> None:
    """Refuse, in one line, a tracker a data-parallel run cannot feed whole minibatches.

    Only the main rank raises (one line in all, not one per rank); the others then stop at their next
    collective with "another rank failed". The other trackers take every rank's gathered logits
    (:func:`forgetting_common.distributed.gather_batch`)."""
    if not track or world_size <= 1 or not is_main:
        return
    local = [name for name in parse_track(track) if name in PER_RANK_TRACKERS]
    if local:
        raise UserError(f"--track {local[0]} is not available under torchrun: it reads the network's pass over each "
                        "process's share of a minibatch, not the whole minibatch; run it in one process (the other "
                        "trackers work under torchrun)")


def track_argument(value: str) -> str:
    """The argparse ``type`` of ``--track``: the names in :data:`TRACKER_NAMES` order, comma-joined
    (so config.json and a resume's flag check see one spelling); an unknown name is a usage error."""
    problem = _unknown(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return ",".join(parse_track(value))


def _build(name: str, n_examples: int | None, model: nn.Module | None, device: torch.device,
           ids: Any) -> Tracker:
    if name in ("forgetting", "margin"):
        if n_examples is None:
            raise ValueError(f"the {name} tracker needs n_examples")
        return (ForgettingTracker if name == "forgetting" else MarginTracker)(n_examples, device, ids)
    if name in ("plasticity", "ece"):
        return (PlasticityTracker if name == "plasticity" else ECETracker)(device)
    if model is None:
        raise ValueError(f"the {name} tracker needs the model")
    return {"dead_units": lambda: DeadUnitsTracker(model, device), "weight_rank": lambda: WeightRankTracker(model),
            "effective_rank": lambda: EffectiveRankTracker(model),
            "init_distance": lambda: InitDistanceTracker(model)}[name]()


class TrackerSet:
    """Several trackers behind the one interface; scalars merged (their keys never collide)."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def get(self, name: str) -> Tracker | None:
        return next((t for t in self.trackers if t.name == name), None)

    def on_batch(self, indices, logits, targets, model=None, inputs=None) -> None:
        for tracker in self.trackers:
            tracker.on_batch(indices, logits, targets, model=model, inputs=inputs)

    def on_eval(self, logits, targets, model=None) -> None:
        for tracker in self.trackers:
            tracker.on_eval(logits, targets, model=model)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        values: dict[str, float] = {}
        for tracker in self.trackers:
            values.update(tracker.end_epoch(epoch))
        return values

    def state_dict(self) -> dict[str, Any]:
        return {t.name: t.state_dict() for t in self.trackers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.names):
            raise ValueError(f"tracker states for {sorted(state)}, not {sorted(self.names)}")
        for tracker in self.trackers:
            tracker.load_state_dict(state[tracker.name])

    def compact(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for tracker in self.trackers:
            out.update(tracker.compact())
        return out

    def save_compact(self, path: str | os.PathLike[str]) -> Path:
        return write_npz(path, self.compact())

    def load_compact(self, path: str | os.PathLike[str]) -> None:
        arrays = read_npz(path)
        for tracker in self.trackers:
            tracker.load_compact_arrays(arrays, source=str(path))


def build_trackers(names: str | tuple[str, ...] | None, *, n_examples: int | None = None,
                   model: nn.Module | None = None, device: torch.device | str = "cpu",
                   ids: Any = None) -> TrackerSet:
    """The trackers ``--track`` names (a ``NAME[,NAME...]`` string or parsed names; None/"": none).

    Build it once the model is on its device and holds its starting weights (``init_distance``
    measures from them; ``dead_units`` hooks into the model). ``ids``: the original dataset id
    of each training position (default: the positions).
    """
    if not names:
        return TrackerSet([])
    parsed = parse_track(names) if isinstance(names, str) else parse_track(",".join(names))
    device = torch.device(device)
    return TrackerSet([_build(n, n_examples, model, device, ids) for n in parsed])


__all__ = [
    "COMPACT_FILE", "PER_RANK_TRACKERS", "TRACKER_NAMES", "DeadUnitsTracker", "ECETracker", "EffectiveRankTracker", "ForgettingCounts",
    "ForgettingTracker", "InitDistanceTracker", "MarginTracker", "PlasticityTracker", "Tracker", "TrackerSet",
    "WeightRankTracker", "build_trackers", "check_data_parallel", "correct_and_margin", "effective_rank", "load_forgetting_counts",
    "parse_track", "read_npz", "track_argument", "untracked_forward", "weight_rank", "write_npz",
]
