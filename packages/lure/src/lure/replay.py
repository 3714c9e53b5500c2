"""Which ids a state trains and validates on: the chunk arithmetic and the replay modes.

Chunk ``k`` (1-based) of a meta-batch of ``M`` examples holds ``mt = floor(0.9 M)`` train ids
``[(k-1) mt, k mt)`` and ``mv = M - mt`` validation ids from the validation pool's offset on, in
the dataset's order, exactly as the original.
"""

from __future__ import annotations

import random
import warnings

from forgetting_common.errors import UserError


def split_sizes(meta_batch_size: int) -> tuple[int, int]:
    """``(mt, mv)``: 90% of a meta-batch for training (floored), the rest for validation."""
    mt = (meta_batch_size * 9) // 10
    return mt, meta_batch_size - mt


def chunk_ids(k: int, meta_batch_size: int, val_offset: int) -> tuple[list[int], list[int]]:
    """Train and validation ids of chunk ``k`` (1-based), in the dataset's order."""
    mt, mv = split_sizes(meta_batch_size)
    train = list(range((k - 1) * mt, k * mt))
    val = list(range(val_offset + (k - 1) * mv, val_offset + k * mv))
    return train, val


def replay_mode(cfg) -> str:
    """The replay mode of a run (a :class:`lure.cli.Config`): ``no``, ``one``, ``buffer`` or ``full`` (the default)."""
    chosen = [name for name, flag in (("no", cfg.no_replay), ("one", cfg.one_replay), ("buffer", cfg.buffer_replay))
              if flag]
    if len(chosen) > 1:
        raise UserError(
            "conflicting replay flags: " + " and ".join(f"-{c}_replay" for c in chosen)
            + " (give at most one; none means full replay)"
        )
    mode = chosen[0] if chosen else "full"
    if cfg.dataset == "cifar100" and mode in ("one", "buffer"):
        warnings.warn(
            f"-{mode}_replay is not available for cifar100 in the original and falls back to full replay",
            stacklevel=2,
        )
        mode = "full"
    return mode


class ReplayPlan:
    """The train and validation id lists of every state, with the growing buffer of buffer replay."""

    def __init__(self, mode: str, meta_batch_size: int, val_offset: int,
                 buffer_size_train: int = 182, buffer_size_val: int = 182, seed: int = 0) -> None:
        self.mode = mode
        self.meta_batch_size = meta_batch_size
        self.val_offset = val_offset
        self.buffer_size_train = buffer_size_train
        self.buffer_size_val = buffer_size_val
        self.rng = random.Random(seed)
        self.buffer_train: list[int] = []
        self.buffer_val: list[int] = []

    def state(self, k: int) -> tuple[list[int], list[int]]:
        """The lists of state ``k`` (call in order k = 1, 2, …: buffer replay updates its buffer)."""
        span = {"no": range(k, k + 1), "one": range(max(1, k - 1), k + 1), "full": range(1, k + 1),
                "buffer": range(k, k + 1)}[self.mode]
        train: list[int] = []
        val: list[int] = []
        for j in span:
            t, v = chunk_ids(j, self.meta_batch_size, self.val_offset)
            train += t
            val += v
        if self.mode == "buffer":
            train = train + self.buffer_train
            val = val + self.buffer_val
            self.buffer_train += self._sample(train, self.buffer_size_train, "train")
            self.buffer_val += self._sample(val, self.buffer_size_val, "val")
        return train, val

    def _sample(self, ids: list[int], size: int, what: str) -> list[int]:
        if size > len(ids):
            warnings.warn(
                f"--buffer_size_{what} {size} is larger than the state's {what} list ({len(ids)}); "
                f"adding all {len(ids)} ids instead", stacklevel=3)
            size = len(ids)
        return self.rng.sample(ids, size)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate(), "buffer_train": list(self.buffer_train), "buffer_val": list(self.buffer_val)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
        self.buffer_train = list(state["buffer_train"])
        self.buffer_val = list(state["buffer_val"])
