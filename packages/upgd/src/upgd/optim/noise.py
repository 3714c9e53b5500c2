"""Gaussian noise of the next step drawn ahead on another thread, the same numbers in the same order.

Drawing the perturbation (``torch.randn`` per parameter tensor, from the run's own generator)
is about a sixth of a UPGD step on the CPU and does not depend on the data. After step ``t``
the prefetcher draws, on a helper thread, the tensors step ``t`` asked for (same shapes, same
order, same generator), so that they are ready when step ``t+1`` asks, while the main thread runs
the forward and backward pass. A draw is one ``torch.randn`` call per tensor exactly as without
prefetching (drawing one block and splitting it would give other numbers). If a step asks for
something else than what was drawn ahead (another shape, more or fewer tensors), the generator
is put back to its state before the batch and the draws are replayed, so the sequence is always
that of the straightforward loop; a checkpoint stores the state before the batch.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch

#: what one draw is: shape, dtype, device and the factor σ it is multiplied by
Key = tuple[tuple[int, ...], torch.dtype, torch.device, float]


class NoisePrefetcher:
    """``depth`` steps of noise drawn ahead, in order, by one helper thread."""

    def __init__(self, generator: torch.Generator, depth: int = 2) -> None:
        self.gen, self.depth = generator, depth
        threads = torch.get_num_threads()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="upgd-noise",
                                       initializer=lambda: torch.set_num_threads(threads))
        self.drawn: list[Key] = []  # what the current step has asked for so far
        # batches drawn ahead, oldest first: (keys, future of (generator state before, tensors))
        self.batches: deque[tuple[list[Key], Future]] = deque()
        self.taken = 0  # tensors of the oldest batch handed out in the current step

    def _randn(self, key: Key) -> torch.Tensor:
        shape, dtype, device, sigma = key
        xi = torch.randn(shape, generator=self.gen, dtype=dtype, device=device)
        return xi.mul_(sigma) if sigma != 1.0 else xi

    def _draw_batch(self, keys: list[Key]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.gen.get_state(), [self._randn(k) for k in keys]

    def randn_all(self, likes: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
        """σ·N(0, 1) shaped like each of ``likes``, in order (one step's draws at once)."""
        keys = [(tuple(like.shape), like.dtype, like.device, sigma) for like in likes]
        if self.batches and self.taken == 0 and self.batches[0][0] == keys:
            self.drawn.extend(keys)
            self.taken = len(keys)
            return self.batches[0][1].result()[1]
        return [self.randn(like, sigma) for like in likes]

    def randn(self, like: torch.Tensor, sigma: float) -> torch.Tensor:
        """σ·N(0, 1) shaped like ``like``."""
        key = (tuple(like.shape), like.dtype, like.device, sigma)
        self.drawn.append(key)
        if self.batches:
            keys, future = self.batches[0]
            if self.taken < len(keys) and keys[self.taken] == key:
                self.taken += 1
                return future.result()[1][self.taken - 1]
            self._undo()
        return self._randn(key)

    def _undo(self) -> None:
        """Forget every batch: the generator as if only the tensors taken had been drawn."""
        if not self.batches:
            return
        for _, future in self.batches:
            future.result()
        keys, future = self.batches[0]
        self.gen.set_state(future.result()[0])
        for key in keys[: self.taken]:
            self._randn(key)
        self.batches.clear()
        self.taken = 0

    def step_done(self) -> None:
        """The step is over: keep ``depth`` steps of what it asked for drawn ahead."""
        if self.batches:
            if self.taken < len(self.batches[0][0]):
                self._undo()
            else:
                self.batches.popleft()
                self.taken = 0
        keys, self.drawn = self.drawn, []
        if not keys:
            self._undo()
            return
        while len(self.batches) < self.depth:
            self.batches.append((keys, self.pool.submit(self._draw_batch, keys)))

    def generator_state(self) -> torch.Tensor:
        """The generator's state as the straightforward loop would have it now (nothing ahead)."""
        if self.batches and self.taken == 0:
            return self.batches[0][1].result()[0].clone()
        self._undo()
        return self.gen.get_state()

    def reset(self) -> None:
        """Drop what was drawn ahead without using it (before the generator is set anew)."""
        for _, future in self.batches:
            future.result()
        self.batches.clear()
        self.taken, self.drawn = 0, []

    def close(self) -> None:
        self.reset()
        self.pool.shutdown(wait=True)
