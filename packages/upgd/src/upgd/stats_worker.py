"""The per-step statistics of ``run_stats`` on a second thread, overlapping the next training step.

After the update of step ``t`` the main thread copies the weights into a free *shadow* network,
hands it over with the step's gradients, input, target, output and loss, and trains step ``t+1``
while the worker runs the post-update forward pass (plasticity, dead units) and the
weight/gradient statistics on the shadow. The shadow holds the same values as the network had,
and both threads run torch with one intra-op thread, so every value is the one the inline
computation gives, bit for bit (tests/test_overlap.py compares result files and every per-step
value). torch's operators release the GIL, so the two threads can use two cores.

Values for step ``t`` are written into the per-step tensors by the worker; the loop calls
:meth:`StatsWorker.drain` before anything reads them (task-boundary log, checkpoint, the end).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch

from upgd.stats import RankCache


class _Shadow:
    """A network of the run's architecture holding a copy of the real one's weights, and the
    real gradients themselves: ``zero_grad`` sets them to None and the next backward pass
    makes new ones, so the tensors handed over are never written again."""

    def __init__(self, factory: Callable[[], torch.nn.Module]) -> None:
        self.net = factory()
        self.net.requires_grad_(False)
        self.params = list(self.net.parameters())

    def fill(self, sources: list[torch.Tensor]) -> None:
        torch._foreach_copy_(self.params, sources)

    def take_grads(self, grads: list[torch.Tensor | None]) -> None:
        for shadow_p, g in zip(self.params, grads):
            shadow_p.grad = g


class StatsWorker:
    """Computes step ``i``'s values from its output and loss and, on the updated network, its
    plasticity, dead-unit fraction and (when asked) weight and gradient statistics.

    ``compute(net, x, y, out, loss, i, with_weight_stats, cache)`` does the work on a shadow
    network; ``depth`` shadows let the main thread run that many steps ahead.
    """

    def __init__(self, net: torch.nn.Module, factory: Callable[[], torch.nn.Module], compute: Callable,
                 depth: int = 4) -> None:
        self.params = list(net.parameters())
        self.sources = [p.detach() for p in self.params]  # views: they follow the in-place updates
        self.shadows = [_Shadow(factory) for _ in range(depth)]
        self.compute = compute
        self.cache = RankCache()  # used by the worker thread only
        # C-level queues: the hand-over happens every step
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for k in range(depth):
            self.free.put(k)
        self.todo: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.threads = torch.get_num_threads()
        self.thread = threading.Thread(target=self._work, name="upgd-stats", daemon=True)
        self.thread.start()

    def submit(self, i: int, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, loss: torch.Tensor,
               with_weight_stats: bool) -> None:
        k = self.free.get()  # waits while the worker is `depth` steps behind
        self._raise()
        self.shadows[k].fill(self.sources)
        self.todo.put((k, [p.grad for p in self.params], i, x, y, out, loss, with_weight_stats))

    def drain(self) -> None:
        """Wait until every submitted step is written; re-raise a failure of the worker."""
        done = threading.Event()
        self.todo.put(done)  # the worker sets it after everything submitted before
        done.wait()
        self._raise()

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join(timeout=60)

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _work(self) -> None:
        torch.set_num_threads(self.threads)  # the OpenMP thread count is per thread: match the main one
        while True:
            item = self.todo.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            k, grads, i, x, y, out, loss, with_weight_stats = item
            try:
                if self.error is None:
                    self.shadows[k].take_grads(grads)
                    self.compute(self.shadows[k].net, x, y, out, loss, i, with_weight_stats, self.cache)
            except BaseException as err:  # handed to the main thread at its next submit/drain
                self.error = err
            finally:
                self.free.put(k)
