"""``--track NAME[,NAME...]`` on ``LURE_main.py`` / ``ALMA.py``: the shared trackers of
:mod:`forgetting_common.trackers` fed by the anytime loop, and per-state snapshots for the
learn / unlearn / relearn analysis (:mod:`lure.events_analysis`).

The trackers see every training step's logits (after ``optimizer.step()``, the step's example
ids = positions in the full training set), every epoch's validation logits (``on_eval``), and
close one epoch per ``(state, epoch)``. Their examples are the train ids the protocol can
present, ``0 .. meta_batch_number·train_chunk − 1``; each is presented at most once per epoch.

Beside them, for every state ``k`` (rows of ``states.*`` in ``tracked.npz``), measured in eval
mode (no augmentation, no random draw, no weight touched) on the examples trained so far:

* ``correct_start`` / ``margin_start``: the state's starting model, *after* its interventions
  (SNIP unlearning, resets); rows of state 1 and of warm start hold the untouched model;
* ``correct_end`` / ``margin_end``: the state's selected (best-validation) model;
* with ``forgetting``: ``events_first_epoch`` / ``events_end`` (each example's forgetting events
  so far, after the state's first and last epoch) and ``last_end`` (correct at its latest
  presentation), so an example's event in a state's first epoch is the one at the state change;
* with ``margin``: ``train_margin_end`` (its training margin at its latest presentation).

``correct_*`` is −1 and ``margin_*`` NaN where an example was not evaluated. Under torchrun the
ranks' logits are gathered so that every rank's trackers see each whole minibatch once; the
trackers that read each rank's own forward pass are refused there in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from forgetting_common import distributed
from forgetting_common.errors import UserError
from forgetting_common.trackers import (
    COMPACT_FILE,
    TrackerSet,
    build_trackers,
    correct_and_margin,
)
from forgetting_common.trackers.base import write_npz
from torch import nn

from lure.metrics import predict
from lure.replay import split_sizes

if TYPE_CHECKING:
    from lure.cli import Config
    from lure.train import RunContext

#: metrics.jsonl keys (and TensorBoard tags) of the tracked values: ``track/<key>``.
TRACK_PREFIX = "track/"
STATES_PREFIX = "states."


class RunTracking:
    """The run's trackers and per-state snapshots; checkpointed with the resume file."""

    def __init__(self, trackers: TrackerSet, n_examples: int, n_states: int) -> None:
        self.trackers = trackers
        self.n = n_examples
        self.seen = torch.zeros(n_examples, dtype=torch.bool)  # trained in an earlier or the current state
        self.snapshots: dict[str, torch.Tensor] = {}
        shape = (n_states, n_examples)
        for key in ("correct_start", "correct_end"):
            self.snapshots[key] = torch.full(shape, -1, dtype=torch.int8)
        for key in ("margin_start", "margin_end"):
            self.snapshots[key] = torch.full(shape, float("nan"), dtype=torch.float32)
        if trackers.get("forgetting") is not None:
            for key in ("events_first_epoch", "events_end"):
                self.snapshots[key] = torch.full(shape, -1, dtype=torch.int32)
            self.snapshots["last_end"] = torch.full(shape, -1, dtype=torch.int8)
        if trackers.get("margin") is not None:
            self.snapshots["train_margin_end"] = torch.full(shape, float("nan"), dtype=torch.float32)

    # ----- the loop's events
    def on_batch(self, ctx: RunContext, ids: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                 inputs: torch.Tensor) -> None:
        """After ``optimizer.step()``: this rank's share of the step (``ids`` in the full training set)."""
        positions, logits, targets = distributed.gather_batch(ids.to(logits.device), logits, targets, ctx.dist)
        self.trackers.on_batch(positions, logits, targets, model=ctx.model, inputs=inputs)

    def end_epoch(self, ctx: RunContext, k: int, epoch: int, val_logits: torch.Tensor,
                  val_labels: torch.Tensor) -> None:
        """The epoch's validation, its row ``{"state": k, "track/<key>": …}`` and the first-epoch snapshot."""
        self.trackers.on_eval(val_logits, val_labels, model=ctx.model)
        step = (k - 1) * ctx.cfg.epochs + epoch
        values = self.trackers.end_epoch(step)
        ctx.log.log({"state": k, **{TRACK_PREFIX + key: v for key, v in values.items()}}, step=step)
        forgetting = self.trackers.get("forgetting")
        if epoch == 0 and forgetting is not None:
            self.snapshots["events_first_epoch"][k - 1] = forgetting.events.cpu().to(torch.int32)

    def state_started(self, ctx: RunContext, k: int, train_list: list[int]) -> None:
        """After state ``k``'s interventions, before its first epoch: its starting model, evaluated."""
        ids = torch.as_tensor(train_list, dtype=torch.long)
        self.seen[ids[ids < self.n]] = True
        self._evaluate(ctx, k, "start")

    def state_ended(self, ctx: RunContext, k: int) -> None:
        """After state ``k``'s best model is selected (and loaded)."""
        self._evaluate(ctx, k, "end")
        forgetting, margin = self.trackers.get("forgetting"), self.trackers.get("margin")
        if forgetting is not None:
            self.snapshots["events_end"][k - 1] = forgetting.events.cpu().to(torch.int32)
            self.snapshots["last_end"][k - 1] = forgetting.last.cpu()
        if margin is not None:
            self.snapshots["train_margin_end"][k - 1] = margin.last.cpu().float()

    def _evaluate(self, ctx: RunContext, k: int, when: str) -> None:
        ids = torch.nonzero(self.seen).squeeze(1)
        logits, labels = predict(ctx.model, ctx.data.pool, ids, ctx.cfg.batch_size, dist=ctx.dist)
        correct, margin = correct_and_margin(logits, labels.to(logits.device))
        self.snapshots[f"correct_{when}"][k - 1, ids] = correct.cpu().to(torch.int8)
        self.snapshots[f"margin_{when}"][k - 1, ids] = margin.cpu().float()

    # ----- outputs and checkpoints
    def compact(self) -> dict[str, np.ndarray]:
        out = self.trackers.compact()
        out.update({STATES_PREFIX + key: value.numpy() for key, value in self.snapshots.items()})
        return out

    def save(self, ctx: RunContext) -> None:
        if ctx.writes:
            write_npz(ctx.save_dir / COMPACT_FILE, self.compact())

    def state_dict(self) -> dict[str, Any]:
        return {"trackers": self.trackers.state_dict(), "seen": self.seen.clone(),
                "snapshots": {k: v.clone() for k, v in self.snapshots.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trackers.load_state_dict(state["trackers"])
        self.seen.copy_(state["seen"])
        for key, value in self.snapshots.items():
            value.copy_(state["snapshots"][key])


def start(cfg: Config, model: nn.Module, device: torch.device, resume_state: dict | None) -> RunTracking | None:
    """The run's tracking (None without ``--track``); built on the starting weights, then, on a
    resumed run, given the tracker state of the resume file."""
    if not cfg.track:
        return None
    n = cfg.meta_batch_number * split_sizes(cfg.meta_batch_size)[0]
    trackers = build_trackers(cfg.track, n_examples=n, model=model, device=device)
    tracking = RunTracking(trackers, n, cfg.meta_batch_number)
    if resume_state is not None:
        state = resume_state.get("tracking")
        if state is None:
            raise UserError("--resume: the resume file holds no tracker state (the run was started without --track); "
                            "resume it without --track")
        tracking.load_state_dict(state)
    return tracking


# ----- the training loop's hooks: one line each in lure.train, nothing without --track
def on_batch(ctx: RunContext, ids: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
             inputs: torch.Tensor) -> None:
    if ctx.tracking is not None:
        ctx.tracking.on_batch(ctx, ids, logits, targets, inputs)


def end_epoch(ctx: RunContext, k: int, epoch: int, val_logits: torch.Tensor, val_labels: torch.Tensor) -> None:
    if ctx.tracking is not None:
        ctx.tracking.end_epoch(ctx, k, epoch, val_logits, val_labels)


def state_started(ctx: RunContext, k: int, train_list: list[int]) -> None:
    if ctx.tracking is not None:
        ctx.tracking.state_started(ctx, k, train_list)


def state_ended(ctx: RunContext, k: int) -> None:
    """After state ``k``'s selection; after the last state, ``tracked.npz`` is written (nothing the
    closing evaluations do is tracked)."""
    if ctx.tracking is not None:
        ctx.tracking.state_ended(ctx, k)
        if k == ctx.cfg.meta_batch_number:
            ctx.tracking.save(ctx)
