"""The per-step statistics of ``run_stats`` in a second *process*, fed through shared memory.

The thread of :mod:`upgd.stats_worker` shares the interpreter lock with the training thread: at
batch size 1 both spend most of their time in Python and torch's dispatcher, so they take turns
instead of running on two cores. Here a forked child process does the same work on its own
interpreter. The parent and the child share (``share_memory_``) ``depth`` slots, each a network
of the run's architecture with gradient buffers and room for one step's input, target, output and
loss, and the per-step result tensors the loop reads. After the update of step ``t`` the parent
copies the weights, gradients and the step's tensors into the next free slot and writes 24 bytes
(slot, step, whether the weight statistics are due) into a pipe; the child runs the post-update
forward pass and the statistics on the slot and writes the values into the shared result tensors,
then hands the slot back through a second pipe. One copy of weights and gradients per step; the
slots bound the memory (and how far the parent may run ahead).

The child runs the same kernels on the same values with one intra-op thread, so every value is the
one the inline computation gives, bit for bit (tests/test_overlap.py). It needs ``fork`` (Linux):
it inherits the run's objects (the network copies, the criterion, the result tensors) instead of
rebuilding them. It ignores the terminal's and the scheduler's signals (the parent handles them and
checkpoints) and ends when the parent closes the pipe or dies.

Opt-in (``--stats_worker process``): on the loaded 2-core machine where it was measured it did not
beat the thread (README, "Speed"); the lock it avoids costs most on an idle machine. The fork
happens before the first step, while the noise thread is idle, and the child never touches what
other threads of the parent may hold (the noise generator, the log writers).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import struct
import traceback
from collections.abc import Callable

import psutil
import torch

from upgd.stats import RankCache

MESSAGE = struct.Struct("qqq")  # slot (or a command), step, weight statistics due
DRAIN, STOP = -1, -2
ERROR = -3  # child -> parent: a failure; the message's second field is the length of its text
MAX_DEPTH, MEMORY = 8, 32 << 20  # slots: at most 8, at most 32 MiB of weights and gradients (at least 4)


#: ``--stats_worker auto`` keeps shorter runs on the threads: a fork and the look at the cores cost more
#: than they save there
AUTO_MIN_SAMPLES = 20_000


def choose(setting: str, n_samples: int) -> str:
    """``thread`` or ``process`` for ``--stats_worker setting`` (``auto``: the processes where two of
    the run's cores are idle now; on a busy machine the threads lose less to the scheduler: README,
    "Speed")."""
    if setting != "auto":
        return setting
    if n_samples < AUTO_MIN_SAMPLES or not available():
        return "thread"
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return "thread"
    share = os.environ.get("FORGETTING_CPUS", "")  # a `forgetting reproduce` sweep's share of the cores
    if len(cores) < 2 or (share.isdigit() and int(share) < 2):
        return "thread"
    busy = psutil.cpu_percent(interval=0.25, percpu=True)
    idle = sum(100.0 - busy[c] for c in cores if c < len(busy)) / 100.0
    return "process" if idle >= 1.5 else "thread"


def available() -> bool:
    """The process worker needs ``fork`` (Linux, not macOS' fork-unsafe system libraries)."""
    return hasattr(os, "fork") and "fork" in multiprocessing.get_all_start_methods() and os.uname().sysname == "Linux"


def default_depth(params: list[torch.Tensor]) -> int:
    """Slots: 4 made the parent wait on a loaded CPU, 32 fall out of the caches; at most 32 MiB."""
    slot_bytes = 2 * sum(p.numel() * p.element_size() for p in params)
    return max(4, min(MAX_DEPTH, MEMORY // max(slot_bytes, 1)))


def shared_bytes(params: list[torch.Tensor], results: list[torch.Tensor]) -> int:
    """What the worker puts into shared memory: its slots (weights and gradients) and the results."""
    slots = default_depth(params) * 2 * sum(p.numel() * p.element_size() for p in params)
    return slots + sum(t.numel() * t.element_size() for t in results)


def shared_memory_free(path: str = "/dev/shm") -> int | None:
    """Bytes free where torch's shared memory lives (a container's /dev/shm is often 64 MiB), or None."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class SharedArena:
    """One shared-memory buffer per dtype, cut into 64-byte-aligned tensors (one file descriptor
    each, however many slots: torch keeps one open per shared storage)."""

    ALIGN = 64

    def __init__(self) -> None:
        self.plan: list[tuple[torch.Size, torch.dtype, int]] = []
        self.sizes: dict[torch.dtype, int] = {}

    def reserve(self, shape, dtype: torch.dtype) -> int:
        item = torch.empty((), dtype=dtype).element_size()
        step = self.ALIGN // item
        offset = -(-self.sizes.get(dtype, 0) // step) * step
        self.sizes[dtype] = offset + int(torch.Size(shape).numel())
        self.plan.append((torch.Size(shape), dtype, offset))
        return len(self.plan) - 1

    def build(self) -> list[torch.Tensor]:
        buffers = {dtype: torch.zeros(size, dtype=dtype).share_memory_() for dtype, size in self.sizes.items()}
        return [buffers[dtype][offset : offset + shape.numel()].view(shape) for shape, dtype, offset in self.plan]


class _Slot:
    """One step's hand-over: a network copy, gradient buffers and the step's tensors, all views
    of the shared arena."""

    def __init__(self, factory: Callable[[], torch.nn.Module], params: list[torch.nn.Parameter],
                 example: tuple[torch.Tensor, ...], arena: SharedArena) -> None:
        self.net = factory()
        self.net.requires_grad_(False)
        self.named = [(module, name) for module in self.net.modules() for name in module._parameters
                      if module._parameters[name] is not None]
        self.ids = [arena.reserve(p.shape, p.dtype) for p in params]  # weights
        self.ids += [arena.reserve(p.shape, p.dtype) for p in params]  # gradients
        self.ids += [arena.reserve(t.shape, t.dtype) for t in example]  # x, y, out, loss
        self.ids.append(arena.reserve((len(params),), torch.bool))  # which gradients exist

    def bind(self, views: list[torch.Tensor]) -> None:
        mine = [views[j] for j in self.ids]
        n = len(self.named)
        for (module, name), view in zip(self.named, mine[:n]):  # the shadow's weights are the shared views
            module._parameters[name] = torch.nn.Parameter(view, requires_grad=False)
        self.params = mine[:n]
        self.grads = mine[n : 2 * n]
        self.x, self.y, self.out, self.loss = mine[2 * n : 2 * n + 4]
        self.has_grad = mine[-1]
        self.present: list[bool] | None = None  # parent: the gradients last marked present
        self.attached: list[bool] | None = None  # child: the gradients last attached

    def fill(self, sources: list[torch.Tensor], grads: list[torch.Tensor | None], x, y, out, loss) -> None:
        torch._foreach_copy_(self.params, sources)
        present = [g is not None for g in grads]
        if all(present):
            torch._foreach_copy_(self.grads, grads)
        else:
            for buf, g in zip(self.grads, grads):
                if g is not None:
                    buf.copy_(g)
        if present != self.present:
            self.has_grad.copy_(torch.tensor(present))
            self.present = present
        torch._foreach_copy_([self.x, self.y, self.out, self.loss], [x, y, out, loss])

    def attach_grads(self) -> None:
        """In the child: the shadow's ``.grad`` are the shared buffers (None where the step had none)."""
        present = self.has_grad.tolist()
        if present != self.attached:
            for (module, name), buf, has in zip(self.named, self.grads, present):
                module._parameters[name].grad = buf if has else None
            self.attached = present


class StatsProcess:
    """The interface of :class:`upgd.stats_worker.StatsWorker` (``submit``, ``drain``, ``close``),
    with the work in a forked process. ``compute`` must write its values into tensors that are in
    shared memory (the caller moves the result tensors there before building this)."""

    def __init__(self, net: torch.nn.Module, factory: Callable[[], torch.nn.Module], compute: Callable,
                 example: tuple[torch.Tensor, ...], depth: int | None = None) -> None:
        self.params = list(net.parameters())
        depth = default_depth(self.params) if depth is None else depth
        self.sources = [p.detach() for p in self.params]  # views: they follow the in-place updates
        arena = SharedArena()
        self.slots = [_Slot(factory, self.params, example, arena) for _ in range(depth)]
        views = arena.build()
        for slot in self.slots:
            slot.bind(views)
        self.compute = compute
        self.next_slot, self.busy = 0, [False] * depth
        self.threads = torch.get_num_threads()
        todo_r, self.todo = os.pipe()
        self.done, done_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            os.close(self.todo)
            os.close(self.done)
            code = 0
            try:
                self._serve(todo_r, done_w)
            except BaseException:  # noqa: BLE001 - a broken pipe: the parent is gone (its failures are sent)
                code = 1
            finally:
                os._exit(code)
        os.close(todo_r)
        os.close(done_w)
        self.poll = select.poll()
        self.poll.register(self.done, select.POLLIN)

    # --- parent side -------------------------------------------------------------------------

    def submit(self, i: int, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor, loss: torch.Tensor,
               with_weight_stats: bool) -> None:
        k = self.next_slot
        while self.busy[k]:  # the child is `depth` steps behind: wait for this slot
            self._receive()
        self.slots[k].fill(self.sources, [p.grad for p in self.params], x, y, out, loss)
        self.busy[k] = True
        self.next_slot = (k + 1) % len(self.slots)
        os.write(self.todo, MESSAGE.pack(k, i, int(with_weight_stats)))

    def drain(self) -> None:
        """Wait until every submitted step is written; re-raise a failure of the child."""
        os.write(self.todo, MESSAGE.pack(DRAIN, 0, 0))
        while not self._receive():
            pass

    def close(self) -> None:
        if self.todo is None:
            return
        try:
            os.write(self.todo, MESSAGE.pack(STOP, 0, 0))
        except OSError:  # the child is gone already
            pass
        os.close(self.todo)
        os.close(self.done)
        self.todo = self.done = None
        if self.pid is not None:
            os.waitpid(self.pid, 0)
            self.pid = None

    def _receive(self) -> bool:
        """Wait for the child's next messages and take them all: freed slots are marked free;
        True when the drain mark came back."""
        while not self.poll.poll(1000):
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = None
                raise RuntimeError("the statistics process ended unexpectedly")
        data = os.read(self.done, 1 << 16)
        if not data:
            raise RuntimeError("the statistics process ended unexpectedly")
        drained = False
        for pos in range(0, len(data), MESSAGE.size):  # the child writes whole messages, at most 64 KiB at once
            kind, size, _ = MESSAGE.unpack_from(data, pos)
            if kind == ERROR:  # its text follows it
                text = data[pos + MESSAGE.size :]
                text += _read(self.done, size - len(text)) if size > len(text) else b""
                raise RuntimeError(f"the statistics process failed:\n{text.decode('utf-8', 'replace')}")
            if kind == DRAIN:
                drained = True
            else:
                self.busy[kind] = False
        return drained

    # --- child side --------------------------------------------------------------------------

    def _serve(self, todo: int, done: int) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the parent handles them; the child ends with the pipe
        torch.set_num_threads(self.threads)
        cache = RankCache()
        failed = False
        pending = b""
        while True:
            pending += os.read(todo, 1 << 12)  # what the parent has sent so far (waits for one message)
            if not pending:  # the parent is gone
                return
            whole = len(pending) - len(pending) % MESSAGE.size
            messages, pending = pending[:whole], pending[whole:]
            replies = []
            for pos in range(0, len(messages), MESSAGE.size):
                k, i, with_weight_stats = MESSAGE.unpack_from(messages, pos)
                if k == STOP:
                    return
                if k >= 0 and not failed:
                    slot = self.slots[k]
                    try:
                        slot.attach_grads()
                        self.compute(slot.net, slot.x, slot.y, slot.out, slot.loss, i, bool(with_weight_stats), cache)
                    except BaseException:  # noqa: BLE001 - handed to the parent at its next submit/drain
                        failed = True
                        text = traceback.format_exc().encode("utf-8", "replace")
                        replies.append(MESSAGE.pack(ERROR, len(text), 0))
                        _write(done, b"".join(replies))  # the error last, its text after it
                        replies = []
                        _write(done, text)
                        continue
                replies.append(MESSAGE.pack(k, 0, 0))  # a freed slot, or the drain mark
            if replies:
                _write(done, b"".join(replies))


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
