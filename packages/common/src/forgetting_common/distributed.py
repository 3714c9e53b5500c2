"""Several processes (``torchrun --nproc_per_node N script.py <flags>``), or one, with one code path.

:func:`init` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Without it the world has one process, nothing is initialised
and every function here is an identity or a no-op, so a single-process run computes and writes
exactly what it did before this module existed.

Data parallelism keeps the original's global batch: every rank draws the same permutation (same
seed) and takes its contiguous share of each minibatch (:func:`rank_share`); DDP averages the
gradients over ranks, and :func:`share_weight` corrects for unequal shares, so an update equals
the single-process one up to BatchNorm statistics (``sync_bn`` in :func:`wrap_model` makes those
equal too) and float rounding.

Failure: a rank that raises exits through ``run_main`` with its one line; the others, blocked in a
collective whose peer is gone, get a backend error that :func:`collective_failures` turns into the
one line ``rank R: stopped: another rank failed (...)``. Collectives time out (``timeout``) rather
than hang forever.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from forgetting_common.errors import UserError

#: How long a collective waits for the other ranks before failing. Rank 0 alone writes the
#: outputs (a 200-epoch statistics pickle takes a while) while the others wait at the next
#: collective, so this is generous; it only matters when a rank hangs without dying.
DEFAULT_TIMEOUT_S = 1800.0

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class PeerFailure(UserError):
    """A collective failed because another rank died or stopped answering (one line, exit 2)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the world; ``world_size == 1`` without torchrun."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_current: Dist | None = None
# Small CPU-side decisions (a stop flag every minibatch, a broadcast object) go through gloo even
# when the tensors go through NCCL: reading an NCCL result on the host would wait for the GPU
# every minibatch.
_control: Any = None


def _env_int(name: str) -> int:
    text = os.environ.get(name)
    if text is None:
        raise UserError(f"torchrun environment incomplete: {name} is not set (set {', '.join(_ENV)}, "
                        "MASTER_ADDR and MASTER_PORT, or start the script with torchrun)")
    try:
        return int(text)
    except ValueError:
        raise UserError(f"torchrun environment: {name}={text!r} is not an integer") from None


def init(device_hint: torch.device | str | None = None, timeout: float | None = None) -> Dist:
    """The world this process belongs to; initialises the process group under torchrun.

    ``device_hint`` is the device the script resolved from its flags. Under torchrun a CUDA hint
    (or no hint on a CUDA machine) becomes ``cuda:LOCAL_RANK`` with NCCL; a CPU hint, or a
    machine without CUDA, gives the CPU with gloo. Idempotent: a second call returns the first
    call's world. A malformed environment is a :class:`UserError` (one line).
    """
    global _current, _control
    if _current is not None:
        return _current
    hint = torch.device(device_hint) if device_hint is not None else None
    world_text = os.environ.get("WORLD_SIZE")
    if world_text is None:
        return Dist(0, 1, 0, hint or torch.device("cpu"))
    world = _env_int("WORLD_SIZE")
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise UserError(f"torchrun environment: RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world}")
    if world == 1:  # torchrun --nproc_per_node 1: one process, nothing to coordinate
        return Dist(0, 1, 0, hint or torch.device("cpu"))
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UserError(f"torchrun environment incomplete: {name} is not set")
    use_cuda = torch.cuda.is_available() and (hint is None or hint.type == "cuda")
    if hint is not None and hint.type not in ("cuda", "cpu"):
        raise UserError(f"several processes run on CUDA or the CPU, not on {hint.type} (use --device cuda or cpu)")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()} "
                            "(start torchrun with --nproc_per_node at most that)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    seconds = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    with collective_failures(rank):
        tdist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                 timeout=datetime.timedelta(seconds=seconds))
        _control = tdist.new_group(backend="gloo") if use_cuda else None
    _current = Dist(rank, world, local_rank, device)
    return _current


def shutdown() -> None:
    """Leave the process group (if one was initialised); a later :func:`init` starts afresh."""
    global _current, _control
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
    _current, _control = None, None


@contextlib.contextmanager
def collective_failures(rank: int | Dist) -> Iterator[None]:
    """Turn a collective's backend error (a peer died, or stopped answering) into one line.

    A pass-through for a world of one: there every error keeps the meaning (and the traceback)
    it had before this module existed.
    """
    if isinstance(rank, Dist) and not rank.enabled:
        yield
        return
    r = rank.rank if isinstance(rank, Dist) else rank
    try:
        yield
    except RuntimeError as err:  # DistError (and its backend, network, store errors) is a RuntimeError
        if not _is_backend_failure(err):
            raise
        detail = re.sub(r"\[[^\]]*\.(?:cc|cpp|h)(?::\d+)?\]\s*", "", " ".join(str(err).split()))
        detail = detail.split(". ")[0]
        if len(detail) > 120:
            detail = detail[:117] + "..."
        raise PeerFailure(f"rank {r}: stopped: another rank failed ({detail})") from err


def _is_backend_failure(err: BaseException) -> bool:
    if isinstance(err, getattr(tdist, "DistError", ())):
        return True
    text = str(err).lower()
    return any(key in text for key in ("gloo", "nccl", "connection closed", "connection reset", "broken pipe",
                                       "timed out", "socket", "tcpstore", "process group"))


def rank_share(global_batch: int, dist: Dist) -> slice:
    """This rank's contiguous share of a global batch: sizes differ by at most one, the first
    ranks take the larger ones (10 over 4 ranks: 3, 3, 2, 2), and the shares in rank order make
    up the batch. A rank's share may be empty when the batch is smaller than the world."""
    base, extra = divmod(global_batch, dist.world_size)
    start = dist.rank * base + min(dist.rank, extra)
    return slice(start, start + base + (1 if dist.rank < extra else 0))


def shard_indices(n: int, dist: Dist) -> range:
    """This rank's contiguous share of ``n`` evaluation examples (the split of :func:`rank_share`)."""
    share = rank_share(n, dist)
    return range(share.start, share.stop)


def share_weight(local_n: int, global_n: int, dist: Dist) -> float:
    """Factor for a rank's mean-reduced loss so that DDP's average over ranks of the gradients
    equals the gradient of the global batch's mean loss: ``local_n * world / global_n``."""
    return local_n * dist.world_size / global_n


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) whose gradient is the all_reduce(SUM) of the incoming gradients (every
    rank's loss depends on every rank's input through the synced statistics)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = tensor.clone()
        tdist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = grad.clone()
        tdist.all_reduce(out)
        return out


class RankSyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the examples of all ranks, on any device.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one is used where it does (the CPU,
    gloo). One all_reduce of the per-channel count, sum and sum of squares (float64) in the
    forward pass and one of their gradients in the backward pass; the batch statistics and the
    running-statistics update are those of ``F.batch_norm`` on the concatenated global batch
    (biased variance to normalise, unbiased for the running estimate).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [d for d in range(x.dim()) if d != 1]
        xd = x.double()
        count = torch.full((x.shape[1],), x.numel() / max(1, x.shape[1]), dtype=torch.float64, device=x.device)
        stats = _SumOverRanks.apply(torch.stack([count, xd.sum(dims), (xd * xd).sum(dims)]))
        n, total, squares = stats[0], stats[1], stats[2]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = ((xd - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)).to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach().to(self.running_var.dtype), alpha=factor)
        return y


def _convert_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm*d becomes a :class:`RankSyncedBatchNorm` holding the same parameters and
    buffers (so an optimizer built before still updates them)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, RankSyncedBatchNorm):
        synced = RankSyncedBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        synced.running_mean, synced.running_var = module.running_mean, module.running_var
        synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, _convert_batchnorm(child))
    return module


def wrap_model(model: nn.Module, dist: Dist, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``dist.device``) when there are
    several ranks, its BatchNorm layers synchronised first when ``sync_bn`` (torch's
    ``SyncBatchNorm`` on CUDA, :class:`RankSyncedBatchNorm` elsewhere). Identity for one process.
    The parameters stay the same objects, so an optimizer built on ``model`` keeps working;
    :func:`unwrap` gives the module back for ``state_dict``."""
    if not dist.enabled:
        return model
    if sync_bn:
        model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if dist.device.type == "cuda"
                 else _convert_batchnorm(model))
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    with collective_failures(dist):
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (its ``state_dict`` keys are the single-process ones)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module, dist: Dist, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics) to every rank.

    Without synchronised BatchNorm each rank's last training step leaves running statistics of
    its own share; DDP only re-broadcasts them at the next training forward. Call this before an
    evaluation sharded over ranks so every shard sees the statistics rank 0 holds (and saves).
    """
    if not dist.enabled:
        return
    with collective_failures(dist):
        for buffer in unwrap(model).buffers():
            tdist.broadcast(buffer, src=src)


def all_reduce_sum(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Sum ``t`` over ranks, in place, and return it (identity for one process)."""
    if dist.enabled:
        with collective_failures(dist):
            tdist.all_reduce(t)
    return t


def any_rank(flag: bool, dist: Dist) -> bool:
    """True on every rank when ``flag`` is true on some rank (e.g. a stop request that reached
    only some processes), so that all ranks take the same branch."""
    if not dist.enabled:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)  # on the CPU: see _control
    with collective_failures(dist):
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX, group=_control)
    return bool(t.item())


def gather_rows(index: torch.Tensor, rows: torch.Tensor, dist: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' ``(index, rows)`` concatenated in rank order, returned on every rank.

    Lengths may differ between ranks (``rows.shape[0] == index.shape[0]`` on each); the result
    lives on ``dist.device``. For one process: the inputs themselves.
    """
    if index.shape[0] != rows.shape[0]:
        raise ValueError(f"gather_rows: {index.shape[0]} indices for {rows.shape[0]} rows")
    if not dist.enabled:
        return index, rows
    device = dist.device
    index, rows = index.to(device), rows.to(device)
    with collective_failures(dist):
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.world_size)]
        tdist.all_gather(sizes, torch.tensor([index.shape[0]], dtype=torch.int64, device=device))
        counts = [int(s.item()) for s in sizes]
        longest = max(counts)
        padded_index = index.new_zeros((longest, *index.shape[1:]))
        padded_index[: index.shape[0]] = index
        padded_rows = rows.new_zeros((longest, *rows.shape[1:]))
        padded_rows[: rows.shape[0]] = rows
        all_index = [torch.empty_like(padded_index) for _ in counts]
        all_rows = [torch.empty_like(padded_rows) for _ in counts]
        tdist.all_gather(all_index, padded_index)
        tdist.all_gather(all_rows, padded_rows)
    return (torch.cat([t[:c] for t, c in zip(all_index, counts)]),
            torch.cat([t[:c] for t, c in zip(all_rows, counts)]))


def gather_batch(positions: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                 dist: Dist | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every rank's ``(positions, logits, targets)`` of one step, in rank order (the global
    minibatch's order), on every rank; one process: the inputs, the logits detached.

    What per-example trackers need under torchrun: each example of a global minibatch once per
    step. The targets travel as a float64 column beside the float64 logits (integers and float32
    values round-trip it exactly), so one collective carries both."""
    logits = logits.detach()
    if dist is None or not dist.enabled:
        return positions, logits, targets
    rows = torch.cat([logits.double(), targets.double().unsqueeze(1)], dim=1)
    index, rows = gather_rows(positions.to(rows.device), rows, dist)  # NCCL gathers device tensors only
    device = logits.device
    return index.to(device), rows[:, :-1].to(device, logits.dtype), rows[:, -1].to(device, torch.long)


def broadcast_object(obj: Any, dist: Dist, src: int = 0) -> Any:
    """``src``'s ``obj`` on every rank (a picklable value: a decision, a small array)."""
    if not dist.enabled:
        return obj
    box = [obj if dist.rank == src else None]
    with collective_failures(dist):
        tdist.broadcast_object_list(box, src=src, group=_control, device=torch.device("cpu"))
    return box[0]


def barrier(dist: Dist) -> None:
    """Wait until every rank arrives (no-op for one process)."""
    if dist.enabled:
        with collective_failures(dist):
            if dist.device.type == "cuda":
                tdist.barrier(device_ids=[dist.device.index])
            else:
                tdist.barrier()


def main_only(dist: Dist) -> bool:
    """Whether this process writes outputs, logs and checkpoints (rank 0)."""
    return dist.is_main
