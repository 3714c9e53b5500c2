"""Resolve a ``--device`` string to a :class:`torch.device`, with a clear error if absent."""

from __future__ import annotations

import re

import torch

from forgetting_common.errors import UserError

DEVICE_CHOICES_HELP = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into a device.

    Raises :class:`UserError` for a malformed string or a device this machine does not have.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise UserError("--device mps: Apple MPS is not available on this machine (try --device cpu)")
        return torch.device("mps")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UserError(f"--device {spec!r} is not a device; use {DEVICE_CHOICES_HELP}")
    if not torch.cuda.is_available():
        raise UserError(f"--device {spec}: CUDA is not available on this machine (try --device cpu or auto)")
    index = int(match.group(1)) if match.group(1) is not None else None
    if index is not None and index >= torch.cuda.device_count():
        raise UserError(
            f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0"
        )
    return torch.device("cuda" if index is None else f"cuda:{index}")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (for timing); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory: the CUDA allocator's peak on CUDA (resettable), else the process's max RSS.

    The max RSS covers the whole life of the process (the torch runtime included) and cannot
    be reset, so a benchmark that compares configurations on the CPU measures each one in its
    own process (for example a ``multiprocessing`` child with the ``fork`` start method).
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def reset_peak_memory(device: torch.device) -> None:
    """Reset the CUDA peak counter (the RSS peak of a process cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
