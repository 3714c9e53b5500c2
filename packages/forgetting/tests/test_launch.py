"""The local launcher's slots: GPUs grouped per run (torchrun inside), cores shared on a CPU."""

from __future__ import annotations

import pytest
from forgetting.launch import LocalLauncher
from forgetting_common import UserError


def test_gpus_are_grouped_per_run(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert [s["CUDA_VISIBLE_DEVICES"] for s in LocalLauncher(gpus_per_run=2).slots()] == ["0,1", "2,3"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in LocalLauncher(gpus_per_run=3).slots()] == ["0,1,2"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in LocalLauncher().slots()] == ["0", "1", "2", "3"]
    assert LocalLauncher(gpus_per_run=2).procs() == 2 and LocalLauncher().procs() is None


def test_more_gpus_than_visible_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(UserError, match="only 2 GPUs are visible"):
        LocalLauncher(gpus_per_run=4).slots()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UserError, match="shows no GPU"):
        LocalLauncher(gpus_per_run=2).slots()


def test_cpu_processes_share_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    slots = LocalLauncher(procs_per_run=2).slots()
    assert len(slots) == 4 and slots[0]["OMP_NUM_THREADS"] == "1" and slots[0]["FORGETTING_CPUS"] == "2"
    slots = LocalLauncher(jobs=1, procs_per_run=2).slots()
    assert len(slots) == 1 and slots[0]["OMP_NUM_THREADS"] == "4"


DRIVER = '''
import json, sys
from pathlib import Path
import forgetting.launch
from forgetting import execute
from forgetting.claims import Claim, Sweep, rule
from forgetting.launch import LocalLauncher
from forgetting.sweep import SweepDir
from forgetting_common.errors import run_main

root = Path(sys.argv[1])
forgetting.launch.STOP_GRACE_S = 2.0
grid = lambda: [{"name": f"r{i}", "script": "sleeper.py", "args": ["--out", "{out}"]} for i in range(4)]
sweep = Sweep(id="tiny.s", package_dir=root / "pkg", grids={"smoke": grid}, read=lambda run, out: {"value": 1},
              resume_args=("--resume",))
claim = Claim(id="tiny.c", paper="Tiny", statement="s", source="Fig. 0", paper_value="1",
              verdict=rule(("within", "value", 1, 0)), sweep=sweep, measure=lambda v: {"value": 1})
execute.find = lambda cid: claim
sd = SweepDir(root / "sweep")
sd.create_or_check(claim, "smoke", claim.sweep.runs("smoke"), "")
run_main(lambda: LocalLauncher(jobs=2).launch(sd, [r.name for r in claim.sweep.runs("smoke")],
                                               lambda name, state: print(name, state, flush=True)), prog="driver")
'''

SLEEPER = '''
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
def stop(signum, frame):
    with open(out / "signals", "a") as f:
        f.write("TERM\\n")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
(out / "started").write_text("")
time.sleep(120)
'''


@pytest.mark.parametrize("to", ["driver", "group"])
def test_a_stopped_local_sweep_starts_nothing_more_and_stops_its_runs_once(tmp_path, to):
    """SIGTERM to the driver alone (`kill PID`) or to its whole process group (Ctrl-C, a job's end):
    the queued runs are never started, each run in progress is stopped exactly once (passed on by
    the driver after its grace period only if it did not stop by itself) and recorded as
    interrupted, and the driver exits 143 without waiting for the rest of the grid."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from forgetting.sweep import INTERRUPTED, PENDING, SweepDir

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "sleeper.py").write_text(SLEEPER)
    (tmp_path / "driver.py").write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(tmp_path)], start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sd = SweepDir(tmp_path / "sweep")
    try:
        for _ in range(300):
            if sum((sd.run_out(f"r{i}") / "started").exists() for i in range(4)) == 2:
                break
            time.sleep(0.1)
        else:
            pytest.fail("two runs did not start")
        start = time.monotonic()
        if to == "driver":
            os.kill(driver.pid, signal.SIGTERM)
        else:
            os.killpg(driver.pid, signal.SIGTERM)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 143 and "driver: terminated (SIGTERM)" in err
    assert time.monotonic() - start < 30
    started = [i for i in range(4) if (sd.run_out(f"r{i}") / "started").exists()]
    assert started == [0, 1]
    for i in started:
        assert (sd.run_out(f"r{i}") / "signals").read_text() == "TERM\n"
        assert sd.status(f"r{i}").state == INTERRUPTED
    assert [sd.status(f"r{i}").state for i in (2, 3)] == [PENDING, PENDING]
