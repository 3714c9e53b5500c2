"""Seeding: everything at once, named generators for separate streams, and RNG checkpoints."""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and every CUDA device).

    ``deterministic=True`` also asks cuDNN and torch for deterministic kernels (slower).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed derived from ``(seed, name)``; stable across runs, machines and versions."""
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def make_generator(seed: int, name: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for one named random stream (``init``, ``data``, ``mask``, ``noise`` …).

    Separate streams keep, say, the data order unchanged when a masking option draws more numbers.
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(stream_seed(seed, name))
    return gen


def make_numpy_rng(seed: int, name: str) -> np.random.Generator:
    """A NumPy generator for one named random stream."""
    return np.random.default_rng(stream_seed(seed, name))


class Generators:
    """Named torch generators created on first use from one base seed."""

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = torch.device(device)
        self._gens: dict[str, torch.Generator] = {}

    def __getitem__(self, name: str) -> torch.Generator:
        if name not in self._gens:
            self._gens[name] = make_generator(self.seed, name, self.device)
        return self._gens[name]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: gen.get_state() for name, gen in self._gens.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self[name].set_state(value)


def get_rng_state() -> dict[str, Any]:
    """All global RNG states (Python, NumPy, torch CPU and CUDA), for a checkpoint.

    Only tensors and plain values, so that the checkpoint loads with ``weights_only=True``
    (NumPy's key array is stored as an int64 tensor).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA state only where CUDA is present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    if isinstance(keys, torch.Tensor):
        keys = keys.numpy()
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
