"""Launchers: run a sweep's runs locally N at a time, or as a Slurm job array through submitit.

Both call :func:`forgetting.execute.execute_run`; progress is read back from the sweep folder,
so a launcher never holds state that the folder does not. A run stopped by a signal
(interrupted) is started again, resumed, up to ``retries`` times.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from queue import Queue

from forgetting_common import UserError

from forgetting.execute import SlurmRun, execute_run
from forgetting.sweep import FAILED, FINISHED, INTERRUPTED, PENDING, SweepDir

Progress = Callable[[str, str], None]  # (run name, final state)

#: the cores a run of a local sweep may use (its share when several run at once)
CPUS_ENV = "FORGETTING_CPUS"


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else those nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


@dataclass
class LocalLauncher:
    """N runs at a time on this machine: each on its own GPUs (pinned by CUDA_VISIBLE_DEVICES), else its cores.

    ``gpus_per_run`` above one gives each run that many GPUs and starts it through torchrun, one
    process per GPU; ``procs_per_run`` sets the torchrun processes where there is no GPU (CPU, gloo).
    """

    jobs: int | None = None
    retries: int = 1
    gpus_per_run: int = 0
    procs_per_run: int | None = None

    def slots(self) -> list[dict[str, str]]:
        gpus = visible_gpus()
        if self.gpus_per_run and not gpus:
            raise UserError(f"--gpus_per_run {self.gpus_per_run}: this machine shows no GPU "
                            "(CUDA_VISIBLE_DEVICES / nvidia-smi); use --procs_per_run for processes on the CPU")
        if gpus:
            per = max(1, self.gpus_per_run)
            if per > len(gpus):
                raise UserError(f"--gpus_per_run {per}: only {len(gpus)} GPUs are visible ({','.join(gpus)})")
            groups = [gpus[i:i + per] for i in range(0, len(gpus) - per + 1, per)]
            n = self.jobs or len(groups)
            return [{"CUDA_VISIBLE_DEVICES": ",".join(groups[i % len(groups)])} for i in range(n)]
        procs = self.procs_per_run or 1
        cores = os.cpu_count() or 1
        n = self.jobs or max(1, cores // procs)
        # each CPU process gets its share of the cores, so N runs do not fight over threads; a run
        # that decides by itself how many helper processes to start reads its share too
        threads = str(max(1, cores // (n * procs)))
        share = str(max(1, cores // n))
        return [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                 CPUS_ENV: share}] * n

    def procs(self) -> int | None:
        """Processes per run, when this launch sets it for every run (else each run's own GPUs decide)."""
        if self.procs_per_run:
            return self.procs_per_run
        return self.gpus_per_run or None

    def launch(self, sweep_dir: SweepDir, names: list[str], progress: Progress) -> None:
        slots = self.slots()
        free: Queue[dict[str, str]] = Queue()
        for slot in slots:
            free.put(slot)
        stopping = threading.Event()
        running: dict[str, subprocess.Popen] = {}

        def one(name: str) -> str:
            slot = free.get()
            try:
                if stopping.is_set():  # the sweep was stopped while this run waited for a slot
                    return PENDING
                return execute_run(str(sweep_dir.root), name, env=slot, procs=self.procs(),
                                   started=lambda proc: running.__setitem__(name, proc))
            finally:
                running.pop(name, None)
                free.put(slot)

        tries = dict.fromkeys(names, 0)
        pool = ThreadPoolExecutor(max_workers=len(slots))
        futures = {pool.submit(one, n): n for n in names}
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = futures.pop(fut)
                    state = fut.result()
                    if state == "interrupted" and tries[name] < self.retries:
                        tries[name] += 1
                        futures[pool.submit(one, name)] = name
                    else:
                        progress(name, state)
        except BaseException:
            # Stopped (Ctrl-C, SIGTERM, a failure here): start nothing more, and see that the runs in
            # progress stop and leave their checkpoints; the queued ones stay pending for the next call.
            stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            _stop_runs(running, [f for f in futures if not f.cancelled()])
            raise
        finally:
            pool.shutdown(wait=True)


#: seconds the runs in progress get to stop by themselves once the sweep is stopped (a signal sent to
#: the process group reached them too) before they are sent SIGTERM (one sent to this process alone)
STOP_GRACE_S = 10.0


def _stop_runs(running: dict[str, subprocess.Popen], in_flight: list) -> None:
    """Wait for the runs in progress to end, passing them SIGTERM if they do not within the grace
    period, so that each is recorded as interrupted with its checkpoint, never left running alone."""
    _, pending = wait(in_flight, timeout=STOP_GRACE_S)
    if not pending:
        return
    for proc in list(running.values()):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    wait(pending)


@dataclass
class SlurmLauncher:
    """A submitit job array on a Slurm cluster; killed or requeued jobs resume in their folders."""

    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    procs_per_run: int | None = None
    time_min: int = 60
    parallelism: int = 256
    retries: int = 2
    poll_s: float = 2.0

    def check(self) -> None:
        for tool in ("sbatch", "squeue", "sinfo"):
            if shutil.which(tool) is None:
                raise UserError(f"--launcher slurm needs Slurm's `{tool}` on PATH; none was found "
                                "(use --launcher local on this machine)")
        if self.partition:
            out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
            known = sorted(set(out.stdout.split()))
            if out.returncode != 0:
                raise UserError(f"sinfo failed: {(out.stderr.strip().splitlines() or ['no output'])[-1]}")
            if self.partition not in known:
                raise UserError(f"unknown Slurm partition {self.partition!r}; sinfo lists: {', '.join(known) or 'none'}")

    def _submit(self, sweep_dir: SweepDir, names: list[str]) -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=sweep_dir.root / "slurm" / "%j", cluster="slurm")
        params = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_run,
                  "slurm_array_parallelism": self.parallelism, "name": f"forgetting-{sweep_dir.root.name}"}
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            params["slurm_partition"] = self.partition
        executor.update_parameters(**params)
        # one Slurm task per run: torchrun inside it starts one process per GPU (gpus_per_run > 1)
        procs = self.procs_per_run or (self.gpus_per_run or None)
        try:
            jobs = executor.map_array(SlurmRun(), [str(sweep_dir.root)] * len(names), names, [procs] * len(names))
        except Exception as err:  # noqa: BLE001 - sbatch's complaint, in one line
            lines = [ln for ln in str(err).splitlines() if ln.strip()]
            raise UserError(f"sbatch refused the sweep: {lines[-1] if lines else type(err).__name__}") from err
        for name, job in zip(names, jobs):
            prior = sweep_dir.state(name) or {}
            sweep_dir.write_state(name, **{**prior, "state": "submitted", "slurm_job": job.job_id,
                                           "attempts": int(prior.get("attempts", 0))})

    def launch(self, sweep_dir: SweepDir, names: list[str], progress: Progress) -> None:
        self.check()
        self._submit(sweep_dir, names)
        tries = dict.fromkeys(names, 0)
        waiting = set(names)
        while waiting:
            time.sleep(self.poll_s)
            again = []
            for name in sorted(waiting):
                status = sweep_dir.status(name)
                if status.state in (FINISHED, FAILED):
                    waiting.discard(name)
                    progress(name, status.state)
                elif status.state == INTERRUPTED:
                    if tries[name] < self.retries:
                        tries[name] += 1
                        again.append(name)
                    else:
                        waiting.discard(name)
                        progress(name, INTERRUPTED)
            if again:
                self._submit(sweep_dir, again)


def stages(sweep_dir: SweepDir, names: list[str]) -> list[list[str]]:
    """``names`` grouped by stage, in stage order (stage k needs every run of the stages before it)."""
    stage_of = {r["name"]: int(r.get("stage", 0)) for r in sweep_dir.manifest()["runs"]}
    return [[n for n in names if stage_of[n] == k] for k in sorted({stage_of[n] for n in names})]


def pending_names(sweep_dir: SweepDir) -> tuple[list[str], list[str]]:
    """(runs to start, runs already finished) of a sweep folder; a run still running is an error."""
    todo, done = [], []
    for s in sweep_dir.statuses():
        if s.state == FINISHED:
            done.append(s.name)
        elif s.state in (PENDING, INTERRUPTED, FAILED):
            todo.append(s.name)
        else:
            raise UserError(f"run {s.name} in {sweep_dir.root} is running ({s.detail}); wait for it or stop it first")
    return todo, done
