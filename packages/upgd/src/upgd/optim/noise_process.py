"""UPGD's Gaussian noise drawn ahead by a forked *process*, the same numbers in the same order.

:class:`upgd.optim.noise.NoisePrefetcher` draws the next steps' noise on a helper thread. At
batch size 1 that thread and the training thread take turns on the interpreter lock: every torch
call of either hands it over, which costs the training thread more than the draws themselves
(measured on an idle 2-core CPU: the statistics process with the noise thread 1.98 × the bare
loop, with the noise drawn inline 1.76 ×). Here a forked child owns a copy of the run's noise
generator and fills ``depth`` slots of shared memory, one step's tensors each, in the order the
straightforward loop would draw them: one ``torch.randn`` per tensor (into the slot's view of the
same shape: the same kernel on the same number of values gives the same numbers), times σ.

Protocol: the child writes one byte into ``ready`` per filled slot; the parent reads them when it
needs a slot and writes one byte into ``free`` when the step that used it is over. Each slot also
holds the generator's state before its draws, which is what a checkpoint stores.

The child is forked at the end of the first step that drew noise (the parent draws that step
itself and learns the shapes). A step that asks for anything else than what the child draws (other
shapes, more or fewer tensors) puts the generator where the straightforward loop would have it and
hands the rest of the run to the thread prefetcher, so the sequence is always the straightforward
loop's. :meth:`reset` (before a checkpoint's generator state is loaded) stops the child; the next
step forks a new one.
"""

from __future__ import annotations

import math
import os
import select
import signal

import torch

from upgd import stats_process
from upgd.optim.noise import Key, NoisePrefetcher

DEPTH = 8  # steps drawn ahead, handed back to the child four at a time


def usable(generator: torch.Generator) -> bool:
    """Fork available (Linux) and a second CPU to run the child on."""
    if generator.device.type != "cpu" or not stats_process.available():
        return False
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) >= 2


class NoiseProcess:
    """The interface of :class:`NoisePrefetcher` (``randn_all``, ``randn``, ``step_done``,
    ``generator_state``, ``reset``, ``close``), the draws in a forked process."""

    def __init__(self, generator: torch.Generator, depth: int = DEPTH) -> None:
        self.gen, self.depth = generator, depth
        self.keys: list[Key] | None = None  # one step's draws, as the child makes them
        self.pid: int | None = None
        self.views: list[list[torch.Tensor]] = []
        self.states: torch.Tensor | None = None
        self.ready_r = self.free_w = None
        self.ready = self.handed = 0  # slots the child has reported filled / the parent has used up
        self.taken = 0  # tensors of the current slot handed out in the current step
        self.owed = 0  # slots used up and not yet handed back
        self.batch = max(1, depth // 2)
        self.drawn: list[Key] = []  # without a child: what the current step drew inline
        self.fallback: NoisePrefetcher | None = None

    # --- the interface ------------------------------------------------------------------------

    def randn_all(self, likes: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
        """σ·N(0, 1) shaped like each of ``likes``, in order (one step's draws at once)."""
        if self.fallback is not None:
            return self.fallback.randn_all(likes, sigma)
        keys = [_key(like, sigma) for like in likes]
        if self.pid is not None and self.taken == 0 and keys == self.keys:
            self.taken = len(keys)
            return list(self.views[self._slot()])
        return [self.randn(like, sigma) for like in likes]

    def randn(self, like: torch.Tensor, sigma: float) -> torch.Tensor:
        """σ·N(0, 1) shaped like ``like``."""
        if self.fallback is not None:
            return self.fallback.randn(like, sigma)
        key = _key(like, sigma)
        if self.pid is None:
            self.drawn.append(key)
            return _draw(self.gen, key)
        if self.taken < len(self.keys) and self.keys[self.taken] == key:
            self.taken += 1
            return self.views[self._slot()][self.taken - 1]
        self._fall_back()
        return self.fallback.randn(like, sigma)

    def step_done(self) -> None:
        """The step is over: its slot goes back to the child (or, the first time, the child starts)."""
        if self.fallback is not None:
            self.fallback.step_done()
        elif self.pid is None:
            keys, self.drawn = self.drawn, []
            if keys:
                self._start(keys)
        elif self.taken == len(self.keys):
            self.handed += 1
            self.taken = 0
            self.owed += 1
            if self.owed >= self.batch:  # slots go back in batches: one wake-up of the child per batch
                os.write(self.free_w, b"\x01" * self.owed)
                self.owed = 0
        elif self.taken:  # fewer tensors than the child drew
            self._fall_back()
            self.fallback.step_done()
        # taken == 0: a step without noise; the slot is the next step's

    def generator_state(self) -> torch.Tensor:
        """The generator's state as the straightforward loop would have it now (nothing ahead)."""
        if self.fallback is not None:
            return self.fallback.generator_state()
        if self.pid is None:
            return self.gen.get_state()
        if self.taken:  # not between steps (checkpoints are): the straightforward state, the thread after
            self._fall_back()
            return self.fallback.generator_state()
        return self.states[self._slot()].clone()

    def reset(self) -> None:
        """Drop what was drawn ahead without using it (before the generator is set anew)."""
        if self.fallback is not None:
            self.fallback.reset()
        self._stop()
        self.taken, self.drawn = 0, []

    def close(self) -> None:
        self._stop()
        if self.fallback is not None:
            self.fallback.close()

    # --- parent side --------------------------------------------------------------------------

    def _start(self, keys: list[Key]) -> None:
        dtypes = {dtype for _, dtype, _, _ in keys}
        if any(device.type != "cpu" for _, _, device, _ in keys) or len(dtypes) != 1:
            self.fallback = NoisePrefetcher(self.gen)  # noise the slots cannot hold
            return
        (dtype,) = dtypes
        numel = sum(math.prod(shape) for shape, _, _, _ in keys)
        state_size = self.gen.get_state().numel()
        free = stats_process.shared_memory_free()
        need = self.depth * (numel * torch.empty((), dtype=dtype).element_size() + state_size)
        if free is not None and free < need + need // 4:  # a full /dev/shm kills with SIGBUS
            self.fallback = NoisePrefetcher(self.gen)
            return
        arena = stats_process.SharedArena()
        ids = [[arena.reserve(shape, dtype) for shape, _, _, _ in keys] for _ in range(self.depth)]
        state_id = arena.reserve((self.depth, state_size), torch.uint8)
        views = arena.build()
        self.views = [[views[j] for j in slot] for slot in ids]
        self.states = views[state_id]
        self.keys = keys
        self.ready = self.handed = self.taken = self.owed = 0
        threads = torch.get_num_threads()
        free_r, self.free_w = os.pipe()
        self.ready_r, ready_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 0
            try:
                os.close(self.free_w)
                os.close(self.ready_r)
                self._serve(free_r, ready_w, parent, threads)
            except BaseException:  # noqa: BLE001 - the parent sees the closed pipe
                code = 1
            finally:
                os._exit(code)
        self.pid = pid
        os.close(free_r)
        os.close(ready_w)

    def _slot(self) -> int:
        """The slot of the current step, once the child has filled it."""
        while self.ready <= self.handed:
            data = os.read(self.ready_r, 4096)
            if not data:
                self._stop()
                raise RuntimeError("the noise process ended unexpectedly")
            self.ready += len(data)
        return self.handed % self.depth

    def _fall_back(self) -> None:
        """The generator where the straightforward loop has it (the slot's start, then the tensors
        this step took), the child stopped, the thread prefetcher from here on."""
        slot = self._slot()
        self.gen.set_state(self.states[slot].clone())
        taken = self.keys[: self.taken]
        for key in taken:
            _draw(self.gen, key)
        self._stop()
        self.fallback = NoisePrefetcher(self.gen)
        self.fallback.drawn = list(taken)  # what its step_done must learn for this step

    def _stop(self) -> None:
        if self.pid is None:
            return
        for fd in (self.free_w, self.ready_r):
            os.close(fd)
        self.free_w = self.ready_r = None
        try:
            os.kill(self.pid, signal.SIGKILL)  # it holds nothing but numbers drawn ahead
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        self.pid = None
        self.keys, self.views, self.states = None, [], None

    # --- child side ---------------------------------------------------------------------------

    def _serve(self, free_r: int, ready_w: int, parent: int, threads: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the parent handles them and stops the child
        torch.set_num_threads(threads)
        poll = select.poll()
        poll.register(free_r, select.POLLIN)
        credits, step = self.depth, 0
        while True:
            while credits == 0:
                if not poll.poll(1000):
                    if os.getppid() != parent:  # the parent died without closing the pipe
                        return
                    continue
                data = os.read(free_r, 4096)
                if not data:  # the parent is gone
                    return
                credits += len(data)
            slot = step % self.depth
            self.states[slot].copy_(self.gen.get_state())
            for view, key in zip(self.views[slot], self.keys):
                _draw(self.gen, key, out=view)
            try:
                os.write(ready_w, b"\x01")
            except BrokenPipeError:  # the parent is gone
                return
            step += 1
            credits -= 1


def _key(like: torch.Tensor, sigma: float) -> Key:
    return (tuple(like.shape), like.dtype, like.device, sigma)


def _draw(gen: torch.Generator, key: Key, out: torch.Tensor | None = None) -> torch.Tensor:
    """One draw exactly as the straightforward loop makes it: ``torch.randn`` of the shape, times σ."""
    shape, dtype, device, sigma = key
    if out is None:
        xi = torch.randn(shape, generator=gen, dtype=dtype, device=device)
    else:
        xi = torch.randn(shape, generator=gen, dtype=dtype, out=out)
    return xi.mul_(sigma) if sigma != 1.0 else xi
