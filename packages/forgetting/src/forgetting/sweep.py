"""A sweep's folder on disk: its runs, and each run's state (the only record of progress).

    DIR/sweep.json               claim, sweep, scale, and every run's argv (fixed at creation)
    DIR/runs/<name>/state.json   {"state": running|finished|failed|submitted, host, pid, ...}
    DIR/runs/<name>/out/         the run's own output folder ({out} in its flags)
    DIR/runs/<name>/values.json  what the claim read from out/ (written before "finished")
    DIR/runs/<name>/stderr.log   the run's stderr (its last line is the failure's reason)
    DIR/shared/                  what runs of one stage leave for a later stage ({shared} in flags)

A run is *finished* only when its process exited 0 and its outputs were read (values.json
exists); *running* while the process recorded in state.json is alive; *interrupted* when that
process is gone without an end state; *pending* when it never started.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from forgetting_common import UserError
from forgetting_common.atomic import atomic_write_json

from forgetting.claims import Claim, Run

FINISHED, RUNNING, FAILED, INTERRUPTED, PENDING = "finished", "running", "failed", "interrupted", "pending"
ORDER = (FINISHED, RUNNING, FAILED, INTERRUPTED, PENDING)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({err}); move it away to start that run again") from err


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: str
    detail: str  # the failure's last line, the host/pid or job of a running run
    attempts: int


class SweepDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- creation / identity -------------------------------------------------------------
    def manifest(self) -> dict:
        m = _read_json(self.root / "sweep.json")
        if m is None:
            raise UserError(f"{self.root} is not a sweep folder (no sweep.json)")
        return m

    def create_or_check(self, claim: Claim, scale: str, runs: list[Run], data: str) -> None:
        """Write sweep.json, or check that an existing one describes the same sweep."""
        assert claim.sweep is not None
        want = {
            "sweep": claim.sweep.id,
            "scale": scale,
            "package_dir": str(claim.sweep.package_dir),
            "runs": [{"name": r.name, "argv": r.argv(self.run_out(r.name), data, self.root / "shared"),
                      "labels": dict(r.labels), "stage": r.stage} for r in runs],
        }
        path = self.root / "sweep.json"
        have = _read_json(path)
        if have is None:
            if self.root.exists() and any(self.root.iterdir()):
                raise UserError(f"{self.root} exists and is not a sweep folder; choose another --out")
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {**want, "claims": [claim.id]})
            return
        if {k: have.get(k) for k in want} != want:
            raise UserError(f"{self.root} holds sweep {have.get('sweep')} at scale {have.get('scale')} with other "
                            f"runs; choose another --out (nothing there is overwritten)")
        if claim.id not in have.get("claims", []):
            atomic_write_json(path, {**have, "claims": [*have.get("claims", []), claim.id]})

    # --- paths -----------------------------------------------------------------------------
    def run_dir(self, name: str) -> Path:
        return self.root / "runs" / name

    def run_out(self, name: str) -> Path:
        return self.run_dir(name) / "out"

    def state(self, name: str) -> dict | None:
        return _read_json(self.run_dir(name) / "state.json")

    def write_state(self, name: str, **state) -> None:
        self.run_dir(name).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir(name) / "state.json", state)

    def values(self, name: str) -> dict:
        v = _read_json(self.run_dir(name) / "values.json")
        if v is None:
            raise UserError(f"run {name} in {self.root} is marked finished but has no values.json")
        return v

    def set_aside_partial_output(self, name: str) -> Path | None:
        """Move an interrupted run's partial output to out.interrupted-<n> (never deleted)."""
        out = self.run_out(name)
        if not out.exists():
            return None
        n = 1
        while (target := out.with_name(f"out.interrupted-{n}")).exists():
            n += 1
        shutil.move(str(out), str(target))
        return target

    # --- status ----------------------------------------------------------------------------
    def status(self, name: str) -> RunStatus:
        s = self.state(name)
        if s is None:
            return RunStatus(name, PENDING, "", 0)
        attempts = int(s.get("attempts", 0))
        kind = s.get("state")
        if kind == FINISHED and (self.run_dir(name) / "values.json").exists():
            return RunStatus(name, FINISHED, f"from record {s['from_record']}" if s.get("from_record") else "", attempts)
        if kind == FAILED:
            return RunStatus(name, FAILED, s.get("last_line", ""), attempts)
        if kind == INTERRUPTED:
            return RunStatus(name, INTERRUPTED, s.get("last_line", ""), attempts)
        if kind == "submitted":
            return (RunStatus(name, PENDING, f"queued as Slurm job {s['slurm_job']}", attempts)
                    if _slurm_job_alive(s.get("slurm_job")) else RunStatus(name, INTERRUPTED, "job gone before start", attempts))
        if kind == RUNNING:
            where = f"{s.get('host')} pid {s.get('pid')}" + (f", Slurm job {s['slurm_job']}" if s.get("slurm_job") else "")
            return RunStatus(name, RUNNING if _alive(s) else INTERRUPTED, where, attempts)
        return RunStatus(name, INTERRUPTED, f"unknown state {kind!r}", attempts)

    def statuses(self) -> list[RunStatus]:
        return [self.status(r["name"]) for r in self.manifest()["runs"]]


def _alive(state: dict) -> bool:
    if state.get("slurm_job") and not _slurm_job_alive(state["slurm_job"]):
        return False
    if state.get("host") != socket.gethostname():
        return True  # another node: only Slurm can tell, and it says the job is there
    try:
        os.kill(int(state["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed run whose parent is gone can linger as a zombie where nothing reaps it
        return Path(f"/proc/{int(state['pid'])}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _slurm_job_alive(job: str | None) -> bool:
    """Whether Slurm still knows the job as pending or running (False without squeue)."""
    if not job or shutil.which("squeue") is None:
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: do not start a second copy
    states = out.stdout.split()
    return out.returncode == 0 and any(s in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING",
                                             "SUSPENDED", "REQUEUE_HOLD", "RESIZING") for s in states)
