"""The tracker base class and the compact file's format (an ``.npz`` written byte-for-byte
reproducibly, read without unpickling)."""

from __future__ import annotations

import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from forgetting_common.atomic import atomic_open
from forgetting_common.errors import UserError

#: A fixed timestamp for the zip members: the same tracked values give the same file bytes, so
#: a resumed run's compact file equals an uninterrupted run's (np.savez stamps the wall clock).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """``arrays`` as an uncompressed ``.npz`` (readable by ``np.load``), atomically, reproducibly."""
    with atomic_open(path) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
    return Path(path)


def read_npz(path: str | os.PathLike[str], what: str = "tracked-values file") -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; object arrays (pickles) are refused, never loaded."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError as err:
        raise UserError(f"{what} {path} does not exist") from err
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        first = " ".join(str(err).split())[:200]
        raise UserError(f"{what} {path} is not a readable .npz file of plain arrays ({first})") from err


class Tracker(ABC):
    """One measurement. Subclasses set :attr:`name`, override the events they use (the others
    are ignored on purpose: a tracker is told about every event and takes what it needs), and
    :meth:`scalars`. The base keeps the per-epoch history of the scalars, which the compact
    file and the checkpoint carry."""

    name = ""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []

    # ----- events
    def on_batch(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,  # noqa: B027
                 model: nn.Module | None = None, inputs: torch.Tensor | None = None) -> None:
        """After a training step: its forward pass's logits; ``inputs`` only for plasticity."""

    def on_eval(self, logits: torch.Tensor, targets: torch.Tensor,  # noqa: B027 (ignored unless used)
                model: nn.Module | None = None) -> None:
        """After an evaluation (may be called several times per epoch: the values accumulate)."""

    @abstractmethod
    def scalars(self, epoch: int) -> dict[str, float]:
        """This epoch's values (called once per epoch by :meth:`end_epoch`); resets the epoch's sums."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        values = self.scalars(epoch)
        self.epochs.append(int(epoch))
        for key, value in values.items():
            self.history.setdefault(key, []).append(float(value))
        return values

    # ----- checkpoints (tensors and plain values only: they load with weights_only=True)
    def tensors(self) -> dict[str, Any]:
        """The tracker's own state; the base adds the history."""
        return {}

    def load_tensors(self, state: dict[str, Any]) -> None:  # noqa: B027 (no state of its own)
        """Inverse of :meth:`tensors`."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "epochs": list(self.epochs),
                "history": {k: list(v) for k, v in self.history.items()}, "state": self.tensors()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"tracker state of {state.get('name')!r} given to the {self.name!r} tracker")
        self.epochs = [int(e) for e in state["epochs"]]
        self.history = {k: [float(x) for x in v] for k, v in state["history"].items()}
        self.load_tensors(state["state"])

    # ----- the compact file: keys ``<tracker>.<field>``
    def arrays(self) -> dict[str, np.ndarray]:
        """Per-example arrays (if any) for the compact file; the base adds the history."""
        return {}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 (no arrays of its own)
        """Inverse of :meth:`arrays` (for reading a finished run's file back)."""

    def compact(self) -> dict[str, np.ndarray]:
        out = {f"{self.name}.{k}": v for k, v in self.arrays().items()}
        out[f"{self.name}.history_epochs"] = np.asarray(self.epochs, dtype=np.int64)
        for key, values in self.history.items():
            out[f"{self.name}.history.{key}"] = np.asarray(values, dtype=np.float64)
        return out

    def load_compact_arrays(self, arrays: Mapping[str, np.ndarray], source: str = "") -> None:
        prefix = f"{self.name}."
        mine = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        if f"{self.name}.history_epochs" not in arrays:
            raise UserError(f"{source or 'the file'} holds no values of the {self.name} tracker")
        self.epochs = [int(e) for e in mine.pop("history_epochs")]
        self.history = {k[len("history."):]: [float(x) for x in v] for k, v in mine.items()
                        if k.startswith("history.")}
        self.load_arrays({k: v for k, v in mine.items() if not k.startswith("history.")})

    def save_compact(self, path: str | os.PathLike[str]) -> Path:
        return write_npz(path, self.compact())

    def load_compact(self, path: str | os.PathLike[str]) -> None:
        self.load_compact_arrays(read_npz(path), source=str(path))


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 sums, except on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64
