"""Dead units: hidden units whose output is exactly zero.

The units are the input features (channels, for convolutions) of every ``Linear``/``Conv``
layer except those reading the network's input: in a ReLU network, the hidden units after their
nonlinearity (for upgd's fully connected nets exactly its ``n_units``; a unit feeding several
layers, as a ResNet block's input feeds a conv and the shortcut, counts once per layer). A unit
is *inactive* on an example when all its outputs for that example are 0 (every position of a
channel's map; a zero from dropout counts as one from the ReLU). A layer reads the network's
input when its input shares the input's storage (a view, such as a flatten, does); a layer
behind an input transform (input dropout, normalisation inside the network) counts as hidden. Forward pre-hooks read the training forward pass whose logits ``on_batch`` then
receives; they only read, so training is unchanged.

Epoch scalars: ``dead_units`` = the mean over presented examples of the fraction of inactive
units (upgd's per-step ``n_dead_units`` at its batch size 1; upgd reads it from its post-update
forward pass, here it is the training pass's), and ``dead_units_epoch`` = the fraction of units
inactive on every training example of the epoch (dead in the sense of Dohare et al.).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from forgetting_common.errors import UserError
from forgetting_common.trackers.base import Tracker, accumulator_dtype

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_untracked = contextvars.ContextVar("untracked_forward", default=False)


@contextlib.contextmanager
def untracked_forward() -> Iterator[None]:
    """Forward passes inside are not seen by dead-unit hooks (a tracker's own extra pass)."""
    token = _untracked.set(True)
    try:
        yield
    finally:
        _untracked.reset(token)


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class DeadUnitsTracker(Tracker):
    name = "dead_units"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _LAYERS)]
        if not layers:
            raise UserError("--track dead_units needs a network with Linear or Conv layers")
        self._input = -1
        self._captured: dict[str, torch.Tensor] = {}  # layer -> [B, units] bool, the latest pass
        self._handles = [model.register_forward_pre_hook(self._network_input)]
        self._handles += [m.register_forward_pre_hook(self._hook(name)) for name, m in layers]
        self.units: dict[str, int] = {}  # layer -> its unit count (known after the first pass)
        self.ever_active: dict[str, torch.Tensor] = {}  # layer -> [units] bool, this epoch
        dtype = accumulator_dtype(self.device)
        self.inactive_sum = torch.zeros((), dtype=dtype, device=self.device)  # Σ over examples of the fraction
        self.examples = 0

    def _network_input(self, _module: nn.Module, args: tuple) -> None:
        if not _untracked.get() and args and isinstance(args[0], torch.Tensor):
            self._input = _storage(args[0])

    def _hook(self, name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            if _untracked.get() or not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            if _storage(x) == self._input:  # the network's input (or a view of it) is not a unit
                return
            x = x.detach()
            active = (x != 0) if x.dim() == 2 else (x != 0).flatten(2).any(dim=2)
            self._captured[name] = active
        return hook

    def remove(self) -> None:
        """Detach the hooks from the network."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def on_batch(self, indices, logits, targets, model=None, inputs=None) -> None:
        if not self._captured:
            raise RuntimeError("dead_units: on_batch without a forward pass of the tracked network before it")
        inactive = torch.zeros(len(indices), dtype=self.inactive_sum.dtype, device=self.device)
        total = 0
        for name, active in self._captured.items():
            if active.shape[0] != len(indices):
                raise RuntimeError(f"dead_units: layer {name} saw {active.shape[0]} examples, the batch has "
                                   f"{len(indices)}")
            width = active.shape[1]
            self.units[name] = width
            inactive += (~active).sum(dim=1).to(self.device, inactive.dtype)
            any_active = active.any(dim=0).to(self.device)
            seen = self.ever_active.get(name)
            self.ever_active[name] = any_active if seen is None else seen | any_active
            total += width
        self._captured = {}
        self.inactive_sum += (inactive / max(total, 1)).sum()
        self.examples += len(indices)

    def on_eval(self, logits, targets, model=None) -> None:
        self._captured = {}  # an evaluation pass is not a training presentation

    def scalars(self, epoch: int) -> dict[str, float]:
        values: dict[str, float] = {}
        if self.examples:
            total = sum(self.units.values())
            never = sum(int((~seen).sum()) for seen in self.ever_active.values())
            values = {"dead_units": float(self.inactive_sum) / self.examples,
                      "dead_units_epoch": never / max(total, 1)}
        self.inactive_sum.zero_()
        self.examples = 0
        self.ever_active = {}
        return values

    def tensors(self) -> dict[str, Any]:
        return {"units": dict(self.units), "ever_active": {k: v.cpu() for k, v in self.ever_active.items()},
                "inactive_sum": self.inactive_sum.cpu(), "examples": int(self.examples)}

    def load_tensors(self, state: dict[str, Any]) -> None:
        self.units = {k: int(v) for k, v in state["units"].items()}
        self.ever_active = {k: v.to(self.device) for k, v in state["ever_active"].items()}
        self.inactive_sum.copy_(state["inactive_sum"])
        self.examples = int(state["examples"])
