"""Helpers for the packages' tests: run a real script and kill it part-way, as a scheduler would.

The kill-and-resume tests of every package follow one pattern: start the script, wait until
its first checkpoint exists (or any condition on its outputs), ``SIGKILL`` it, start it again
with the resume flag, and compare the result with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def run_until_then_kill(
    argv: Sequence[str],
    until: Callable[[], bool],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    sig: int = signal.SIGKILL,
    poll: float = 0.02,
) -> int:
    """Run ``python argv...`` until ``until()`` is true, then send ``sig``; return the exit code.

    ``argv`` starts with the script path (run with this interpreter). Raises ``AssertionError``
    if the script finished before the condition held (the kill tested nothing) or if the
    condition never held within ``timeout`` seconds.
    """
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not until():
            if proc.poll() is not None:
                raise AssertionError(
                    f"the run ended (exit {proc.returncode}) before the kill condition held: "
                    f"{(proc.stderr.read() or '')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the kill condition did not hold within {timeout} s")
            time.sleep(poll)
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def torchrun(args: Sequence[object], cwd: str | os.PathLike[str], env: dict[str, str] | None = None,
             timeout: float = 240, nproc: int = 2) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node nproc -- args...`` on the CPU.

    One thread per process (the ranks share the machine's cores) and no inherited ``WORLD_SIZE``;
    ``--`` ends torchrun's own options, so an original flag such as ``--run`` is never read as an
    abbreviation of torchrun's ``--run-path`` (pytorch/pytorch#120601)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "--", *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def load_module(path: str | os.PathLike[str], name: str):
    """The Python file ``path`` (a script or a test helper beside the tests, not on ``sys.path``)
    imported as module ``name``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exists(path: str | os.PathLike[str]) -> Callable[[], bool]:
    """A kill condition: ``path`` exists (say, the first checkpoint)."""
    target = Path(path)
    return target.exists


def metrics_rows_without_time(path: str | os.PathLike[str]) -> list[dict]:
    """The rows of a ``metrics.jsonl`` without their wall-clock ``time``, for comparing runs."""
    from forgetting_common.runlog import read_metrics

    return [{k: v for k, v in row.items() if k != "time"} for row in read_metrics(path)]


def tensorboard_scalars(logdir: str | os.PathLike[str]) -> list[tuple[str, int, float]]:
    """Every scalar ``(tag, step, value)`` in a TensorBoard folder, in file then write order.

    Reads the raw event files (no TensorBoard purge logic), so a duplicated point shows.
    """
    import struct

    from tensorboardX.proto import event_pb2

    points: list[tuple[str, int, float]] = []
    for path in sorted(Path(logdir).glob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            start = offset + 12
            if start + length + 4 > len(data):
                break  # a torn last record
            event = event_pb2.Event.FromString(data[start : start + length])
            offset = start + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    points.append((value.tag, int(event.step), float(value.simple_value)))
    return points
