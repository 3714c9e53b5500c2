"""Executing one run of a sweep: the function the local pool and the Slurm jobs call.

The run is its original script, started with ``sys.executable`` in the package's folder; its
state is written to the sweep folder before it starts and after it ends. A run interrupted
before (a killed job, a preempted node, a stopped sweep) is started again in its own folder
with the sweep's resume arguments; without them, its partial output is set aside first.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import submitit

from forgetting.claims import find
from forgetting.sweep import FINISHED, RUNNING, SweepDir

# A script that catches SIGINT/SIGTERM exits 128 + signal (run_main's KeyboardInterrupt exit is
# 130): those are interruptions (scancel, preemption, Ctrl-C), not failures of the run.
STOPPED_EXITS = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGKILL}


TORCHRUN_SIGNAL = re.compile(r"SignalException: Process \d+ got signal: (\d+)")


def last_lines(path: Path, limit: int = 20000) -> str:
    """The end of a log, at most ``limit`` bytes ("" when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def last_line(path: Path, limit: int = 20000) -> str:
    """The last non-empty line of a log (progress bars' carriage returns count as line ends)."""
    text = last_lines(path, limit)
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1][:300] if lines else ""


def torchrun_argv(procs: int, argv: list[str]) -> list[str]:
    """``argv`` under torchrun with ``procs`` processes on this node; the run's own flags are unchanged.

    ``--standalone`` gives each run its own rendezvous on a free port, so several multi-process
    runs share a machine; ``python -m torch.distributed.run`` is torchrun without relying on PATH.
    """
    return ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(procs), *argv]


def failure_line(path: Path, distributed: bool) -> str:
    """The line that says why a run failed; under torchrun, a rank's own one-line error, not torchrun's summary."""
    if distributed:
        text = last_lines(path, 200_000)
        errors = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ": error: " in ln]
        if errors:
            return errors[-1][:300]
    return last_line(path)


def execute_run(root: str, name: str, env: dict[str, str] | None = None, slurm_job: str | None = None,
                procs: int | None = None, started: Callable[[subprocess.Popen], None] | None = None) -> str:
    """Run ``name`` of the sweep in ``root`` unless it is finished; return its final state.

    ``procs`` processes (default: the run's GPUs) start it through torchrun when above one.
    ``started`` is told the run's process once it runs (a launcher passes a stop on to it).
    """
    sweep_dir = SweepDir(Path(root))
    manifest = sweep_dir.manifest()
    entry = next(r for r in manifest["runs"] if r["name"] == name)
    claim = find(manifest["claims"][0])
    assert claim.sweep is not None
    run = next(r for r in claim.sweep.runs(manifest["scale"]) if r.name == name)

    prior = sweep_dir.state(name) or {}
    if prior.get("state") == FINISHED and (sweep_dir.run_dir(name) / "values.json").exists():
        return FINISHED
    attempts = int(prior.get("attempts", 0)) + 1
    # Any earlier attempt that left no end state was interrupted (this may be its own requeued job).
    interrupted = prior.get("state") in (RUNNING, "interrupted")
    argv = list(entry["argv"])
    resumed = False
    if interrupted and claim.sweep.resume_args and run.resume:
        argv += list(claim.sweep.resume_args)
        resumed = True
    elif prior.get("state") in (RUNNING, "interrupted", "failed"):
        sweep_dir.set_aside_partial_output(name)
    run_dir = sweep_dir.run_dir(name)
    sweep_dir.run_out(name).mkdir(parents=True, exist_ok=True)
    procs = max(1, run.gpus) if procs is None else procs
    launch = torchrun_argv(procs, argv) if procs > 1 else argv

    child_env = {**os.environ, **(env or {})}
    child_env.setdefault("MPLBACKEND", "Agg")
    common = {"host": socket.gethostname(), "attempts": attempts, "argv": argv, "resumed": resumed,
              "slurm_job": slurm_job, "env": env or {}, "procs": procs}
    with open(run_dir / "stdout.log", "ab") as out, open(run_dir / "stderr.log", "ab") as err:
        err.write(f"--- attempt {attempts}{' (resumed)' if resumed else ''}: {' '.join(launch)}\n".encode())
        err.flush()
        proc = subprocess.Popen([sys.executable, *launch], cwd=manifest["package_dir"], env=child_env,
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sweep_dir.write_state(name, state=RUNNING, pid=proc.pid, started=time.time(), **common)
        if started is not None:
            started(proc)
        try:
            # wait4 rather than wait: the kernel's account of the run's own CPU time and peak memory
            _, status, usage = os.wait4(proc.pid, 0)
            rc = proc.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    ended = {"started": sweep_dir.state(name).get("started"), "ended": time.time(), "rc": rc,
             "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "max_rss_mib": round(usage.ru_maxrss / 1024, 1),
             **common}
    if procs > 1 and rc == 1:  # torchrun stopped by a signal exits 1 and names the signal
        stopped = TORCHRUN_SIGNAL.findall(last_lines(run_dir / "stderr.log"))
        if stopped:
            rc = 128 + int(stopped[-1])
    if rc < 0 or rc in STOPPED_EXITS:  # stopped by a signal (scancel, preemption, Ctrl-C): start it again later
        signal_number = -rc if rc < 0 else rc - 128
        sweep_dir.write_state(name, state="interrupted", last_line=f"stopped by signal {signal_number}", **ended)
        return "interrupted"
    if rc != 0:
        sweep_dir.write_state(name, state="failed", last_line=failure_line(run_dir / "stderr.log", procs > 1) or f"exit {rc}", **ended)
        return "failed"
    try:
        values = claim.sweep.read(run.as_dict(), sweep_dir.run_out(name))
    except Exception as error:  # noqa: BLE001 - any reading failure is this run's failure, in one line
        sweep_dir.write_state(name, state="failed", last_line=f"reading outputs: {type(error).__name__}: {error}", **ended)
        return "failed"
    from forgetting_common.atomic import atomic_write_json

    atomic_write_json(run_dir / "values.json", values)
    sweep_dir.write_state(name, state=FINISHED, **ended)
    return FINISHED


class SlurmRun(submitit.helpers.Checkpointable):
    """One run as a Slurm job: requeued on preemption or timeout, then resumed in its folder."""

    def __call__(self, root: str, name: str, procs: int | None = None) -> str:
        job = submitit.JobEnvironment().job_id
        return execute_run(root, name, slurm_job=str(job), procs=procs)
