"""The `forgetting` command end to end: list, run, ledger --check, reproduce (local and Slurm), status, bad input.

The sweeps are real: `upgd.label_permuted` at smoke scale runs the original run_stats.py four
times (2 learners x seed 0, label-permuted scikit-learn digits, 20k samples each).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLAIM = "upgd.label_permuted"
RUNS = ["sgd_seed0", "upgd_fo_global_seed0"]
ENV = {**os.environ, "MPLBACKEND": "Agg"}


def forgetting(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgetting", *args], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


def state(sweep: Path, name: str) -> dict:
    return json.loads((sweep / "runs" / name / "state.json").read_text())


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "sweep"
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--launcher", "local", "--jobs", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_list_shows_papers_commands_and_claims():
    r = forgetting("list")
    assert r.returncode == 0, r.stderr
    for text in ("upgd.usgd: python core/run/run_stats.py --task label_permuted_cifar10_stats --learner usgd",
                 "upgd.label_permuted [smoke,cpu,paper] Fig. 5/6", "lure.final_accuracy",
                 "example_forgetting.unforgettable_cifar10", "ours not run"):
        assert text in r.stdout, text


def test_run_appends_extra_flags_in_the_package_folder():
    r = forgetting("run", "upgd.usgd", "--", "--print_config")
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout.strip().splitlines()[-1])
    assert config["learner"] == "usgd" and config["seed"] == 19 and config["n_samples"] == 1000000


def test_reproduce_smoke_draws_the_figure_and_measures(local_sweep):
    record = json.loads((local_sweep / f"{CLAIM}.json").read_text())
    assert (local_sweep / f"{CLAIM}.png").stat().st_size > 10_000
    m = record["measured"]
    # SGD loses plasticity on this stream, UPGD does not (the paper's direction); bounds are loose
    assert m["sgd_acc_last20"] < m["sgd_acc_first20"] - 0.1
    assert m["upgd_acc_last20"] > m["sgd_acc_last20"] + 0.2
    assert record["verdict"] == "reproduced" and record["scale"] == "smoke" and record["runs"] == 2
    row = (local_sweep / f"{CLAIM}.md").read_text()
    assert "forgetting reproduce upgd.label_permuted --scale smoke" in row and "reproduced (smoke scale)" in row
    r = forgetting("status", str(local_sweep))
    assert r.returncode == 0 and "2 finished, 0 running, 0 failed, 0 interrupted, 0 pending" in r.stdout


def test_reproduce_skips_finished_runs(local_sweep):
    before = {n: state(local_sweep, n) for n in RUNS}
    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--out", str(local_sweep), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "2 of 2 runs already finished" in r.stderr
    assert {n: state(local_sweep, n) for n in RUNS} == before  # nothing ran again


def test_interrupted_sweep_resumes_and_keeps_finished_runs(tmp_path, local_sweep):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "forgetting", "reproduce", CLAIM, "--scale", "smoke", "--jobs", "1",
                             "--out", str(out), "--quiet"], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait for one finished run and the next one running
            states = {}
            for n in RUNS:
                p = out / "runs" / n / "state.json"
                if p.exists():
                    try:
                        states[n] = json.loads(p.read_text())["state"]
                    except (json.JSONDecodeError, KeyError):
                        pass
            running = [n for n, st in states.items() if st == "running"]
            # kill once the running run has written its first checkpoint (10k of its 20k samples)
            if "finished" in states.values() and running and \
                    any((out / "runs" / running[0] / "out").rglob("checkpoint.pt")):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never had a finished run and a running one with a checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_first = [n for n in RUNS if states.get(n) == "finished"]
    killed = [n for n in RUNS if states.get(n) == "running"]
    r = forgetting("status", str(out))
    assert "interrupted" in r.stdout and any(f"{k} " in r.stdout for k in killed)

    r = forgetting("reproduce", CLAIM, "--scale", "smoke", "--jobs", "2", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(finished_first)} of 2 runs already finished" in r.stderr
    for n in finished_first:
        assert state(out, n)["attempts"] == 1
    for n in killed:
        s = state(out, n)
        assert s["state"] == "finished" and s["attempts"] == 2
        assert s["resumed"] and s["argv"][-1] == "--resume"  # run_stats.py's resume flag, in its own folder
        assert not (out / "runs" / n / "out.interrupted-1").exists()
        log = (out / "runs" / n / "stderr.log").read_text()
        assert "resuming from sample 10000 of 20000" in log, log[-1000:]
    # same seeds, same results as the uninterrupted sweep, the resumed run included
    for n in RUNS:
        a = json.loads((out / "runs" / n / "values.json").read_text())
        b = json.loads((local_sweep / "runs" / n / "values.json").read_text())
        assert a == b, n


def test_failed_run_reports_its_last_line(tmp_path):
    out = tmp_path / "sweep"
    # a data root without MNIST: the original script stops with its one-line error
    r = forgetting("reproduce", "upgd.input_permuted", "--scale", "smoke", "--data", str(tmp_path), "--out", str(out),
                   "--quiet")
    assert r.returncode == 1
    s = forgetting("status", str(out))
    assert "2 failed" in s.stdout and "run_stats.py: error:" in s.stdout


def test_ledger_check_passes_on_the_repository():
    r = forgetting("ledger", "--check")
    assert r.returncode == 0, r.stderr


def test_ledger_check_catches_each_disagreement(tmp_path):
    from forgetting.ledger import LEDGER, RESULTS_DIR

    results = tmp_path / "results"
    shutil.copytree(RESULTS_DIR, results)
    ledger = tmp_path / "REPRODUCIBILITY.md"
    ledger.write_text(LEDGER.read_text())
    args = ("ledger", "--check", "--results", str(results), "--file", str(ledger))
    assert forgetting(*args).returncode == 0

    ledger.write_text(LEDGER.read_text().replace("reproduced (cpu scale)", "reproduced (paper scale)", 1))
    r = forgetting(*args)
    assert r.returncode == 1 and "is not what the claims and results give" in r.stderr
    ledger.write_text(LEDGER.read_text())

    path = results / "upgd.label_permuted.json"
    record = json.loads(path.read_text())
    record["measured"]["upgd_acc_last20"] = 0.0  # the numbers no longer support "reproduced"
    path.write_text(json.dumps(record))
    r = forgetting(*args)
    assert r.returncode == 1 and "recorded verdict 'reproduced', the rule gives 'not reproduced'" in r.stderr

    path.unlink()
    (results / "upgd.no_such_claim.json").write_text(json.dumps({"claim": "upgd.no_such_claim"}))
    r = forgetting(*args)
    assert r.returncode == 1 and "names no declared claim" in r.stderr

    # writing the ledger from these results, then checking, agrees again (the dropped row says "not run")
    (results / "upgd.no_such_claim.json").unlink()
    assert forgetting("ledger", "--results", str(results), "--file", str(ledger)).returncode == 0
    assert forgetting(*args).returncode == 0
    assert "| not run |" in ledger.read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("reproduce", "upgd.nope", "--out", "{tmp}/x"), "unknown claim 'upgd.nope'"),
    (("reproduce", CLAIM, "--scale", "huge", "--out", "{tmp}/x"), "invalid choice: 'huge'"),
    (("reproduce", "example_forgetting.unforgettable_cifar10", "--out", "{tmp}/x"), "has no runnable grid"),
    (("reproduce", "upgd.student_tables", "--scale", "paper", "--out", "{tmp}/x", "--data", "{tmp}"), "has no scale 'paper'"),
    (("reproduce", CLAIM, "--out", "{tmp}/x", "--launcher", "slurm"), "needs Slurm's `sbatch` on PATH"),
    (("reproduce", CLAIM, "--out", "{tmp}/notasweep"), "exists and is not a sweep folder"),
    (("reproduce", CLAIM, "--out", "{tmp}/x", "--time", "soon"), "neither minutes nor HH:MM:SS"),
    (("status", "{tmp}"), "is not a sweep folder"),
    (("run", "upgd.nope"), "unknown command line 'upgd.nope'"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "notasweep").mkdir()
    (tmp_path / "notasweep" / "precious.txt").write_text("keep me")
    env = {**ENV, "PATH": "/nonexistent"} if "slurm" in args else ENV  # no Slurm on this PATH
    r = forgetting(*(a.replace("{tmp}", str(tmp_path)) for a in args), env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert (tmp_path / "notasweep" / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "x").exists()


def test_another_sweep_in_the_same_folder_is_refused(local_sweep):
    r = forgetting("reproduce", CLAIM, "--scale", "cpu", "--out", str(local_sweep))
    assert r.returncode == 2 and "holds sweep upgd.label_permuted_digits at scale smoke" in r.stderr


SLURM_UP = os.environ.get("FORGETTING_SLURM") == "1"


@pytest.mark.skipif(not SLURM_UP, reason="needs a running Slurm (CI: .ci/slurm.sh start, then FORGETTING_SLURM=1)")
def test_unknown_partition_is_one_line(tmp_path):
    r = forgetting("reproduce", CLAIM, "--out", str(tmp_path / "x"), "--launcher", "slurm", "--partition", "nope")
    assert r.returncode == 2 and "unknown Slurm partition 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not SLURM_UP, reason="needs a running Slurm (CI: .ci/slurm.sh start, then FORGETTING_SLURM=1)")
def test_slurm_sweep_survives_a_killed_job(tmp_path, local_sweep):
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "forgetting", "reproduce", CLAIM, "--scale", "smoke",
                             "--launcher", "slurm", "--time", "10", "--out", str(out), "--quiet"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline:
        for n in RUNS:
            p = out / "runs" / n / "state.json"
            try:
                s = json.loads(p.read_text()) if p.exists() else {}
            except json.JSONDecodeError:
                continue
            if s.get("state") == "running" and s.get("slurm_job"):
                subprocess.run(["scancel", s["slurm_job"]], check=True)
                killed = n
                break
        time.sleep(0.3)
    assert killed is not None, "no job started running"
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-2000:]
    s = state(out, killed)
    assert s["state"] == "finished" and s["attempts"] == 2 and s["slurm_job"]
    for n in RUNS:  # the same results as the local sweep, the killed run included
        a = json.loads((out / "runs" / n / "values.json").read_text())
        b = json.loads((local_sweep / "runs" / n / "values.json").read_text())
        assert a["acc_last20"] == pytest.approx(b["acc_last20"], abs=1e-9), n
    assert json.loads((out / f"{CLAIM}.json").read_text())["verdict"] == "reproduced"


def test_every_smoke_grid_parses_with_the_scripts_of_today(tmp_path):
    """Each sweep's smoke runs, one per script, with the sweep's resume flag, through the script's own
    --print_config (flags may drift)."""
    from forgetting.claims import papers

    checked = set()
    for paper in papers().values():
        for claim in paper.claims:
            sweep = claim.sweep
            if sweep is None or "smoke" not in sweep.grids:
                continue
            for run in sweep.runs("smoke"):
                key = (sweep.id, run.script, run.labels.get("role"))
                if key in checked or run.script == "-m":
                    continue
                checked.add(key)
                argv = run.argv(tmp_path / "out", str(tmp_path / "data"), tmp_path / "shared")
                # with the resume flag an interrupted run gets: the script must accept it
                resume = list(sweep.resume_args) if run.resume else []
                r = subprocess.run([sys.executable, *argv, *resume, "--print_config"], cwd=sweep.package_dir,
                                   capture_output=True, text=True, env=ENV, timeout=120)
                assert r.returncode == 0, (sweep.id, run.name, r.stderr[-500:])
    assert len(checked) >= 10
