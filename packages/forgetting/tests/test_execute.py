"""One run's life in a sweep folder, with a tiny script standing in for a paper's script (fast, in-process)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from forgetting import execute
from forgetting.claims import Claim, Sweep, rule
from forgetting.sweep import FAILED, FINISHED, INTERRUPTED, PENDING, RUNNING, SweepDir

SCRIPT = '''
import json, os, sys
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
mode = sys.argv[sys.argv.index("--mode") + 1]
out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(json.dumps(sys.argv[1:]))
if mode == "fail":
    print("progress 10%\\rprogress 20%", file=sys.stderr)
    print("tiny.py: error: no data under /nowhere", file=sys.stderr)
    sys.exit(2)
if mode == "sigterm":
    sys.exit(143)
(out / "result.json").write_text(json.dumps({"value": 7}))
'''


def make_claim(tmp_path: Path, resume: tuple[str, ...], mode: str, run_resumes: bool = True) -> Claim:
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / "tiny.py").write_text(SCRIPT)
    grid = lambda: [{"name": "r1", "script": "tiny.py", "args": ["--out", "{out}", "--mode", mode],  # noqa: E731
                     "resume": run_resumes}]
    read = lambda run, out: json.loads((out / "result.json").read_text())  # noqa: E731
    sweep = Sweep(id="tiny.s", package_dir=tmp_path / "pkg", grids={"smoke": grid}, read=read, resume_args=resume)
    return Claim(id="tiny.c", paper="Tiny", statement="s", source="Fig. 0", paper_value="7",
                 verdict=rule(("within", "value", 7, 0)), sweep=sweep, measure=lambda v: {"value": v["r1"]["value"]})


@pytest.fixture
def sweep_of(tmp_path, monkeypatch):
    def make(resume: tuple[str, ...] = (), mode: str = "ok", run_resumes: bool = True) -> SweepDir:
        claim = make_claim(tmp_path, resume, mode, run_resumes)
        monkeypatch.setattr(execute, "find", lambda cid: claim)
        sd = SweepDir(tmp_path / f"sweep_{mode}_{len(resume)}_{run_resumes}")
        sd.create_or_check(claim, "smoke", claim.sweep.runs("smoke"), "")
        return sd
    return make


def fake_interrupted(sd: SweepDir) -> None:
    """What a killed run leaves: a "running" state whose process is gone, and a partial output."""
    sd.run_out("r1").mkdir(parents=True)
    (sd.run_out("r1") / "partial.txt").write_text("half")
    sd.write_state("r1", state=RUNNING, pid=2**22 + 12345, host=socket.gethostname(), attempts=1)


def test_finished_only_after_exit_0_and_reading(sweep_of):
    sd = sweep_of()
    assert sd.status("r1").state == PENDING
    assert execute.execute_run(str(sd.root), "r1") == FINISHED
    assert json.loads((sd.run_dir("r1") / "values.json").read_text()) == {"value": 7}
    state = json.loads((sd.run_dir("r1") / "state.json").read_text())
    assert state["state"] == FINISHED and state["rc"] == 0 and state["attempts"] == 1
    mtime = (sd.run_dir("r1") / "state.json").stat().st_mtime_ns
    assert execute.execute_run(str(sd.root), "r1") == FINISHED  # skipped: nothing rewritten
    assert (sd.run_dir("r1") / "state.json").stat().st_mtime_ns == mtime


def test_interrupted_run_resumes_with_the_claims_resume_args(sweep_of):
    sd = sweep_of(resume=("--resume",))
    fake_interrupted(sd)
    assert sd.status("r1").state == INTERRUPTED
    assert execute.execute_run(str(sd.root), "r1") == FINISHED
    argv = json.loads((sd.run_out("r1") / "argv.json").read_text())
    assert argv[-1] == "--resume"
    assert (sd.run_out("r1") / "partial.txt").exists()  # resumed in its own folder
    assert json.loads((sd.run_dir("r1") / "state.json").read_text())["attempts"] == 2


def test_interrupted_run_without_resume_flag_restarts_and_keeps_the_partial_output(sweep_of):
    sd = sweep_of()
    fake_interrupted(sd)
    assert execute.execute_run(str(sd.root), "r1") == FINISHED
    assert "--resume" not in json.loads((sd.run_out("r1") / "argv.json").read_text())
    assert (sd.run_dir("r1") / "out.interrupted-1" / "partial.txt").read_text() == "half"
    assert not (sd.run_out("r1") / "partial.txt").exists()


def test_a_run_marked_resume_false_restarts_although_its_sweep_resumes(sweep_of):
    """A helper step (a sorting script, a data export) whose script has no resume flag."""
    sd = sweep_of(resume=("--resume",), run_resumes=False)
    fake_interrupted(sd)
    assert execute.execute_run(str(sd.root), "r1") == FINISHED
    assert "--resume" not in json.loads((sd.run_out("r1") / "argv.json").read_text())
    assert (sd.run_dir("r1") / "out.interrupted-1" / "partial.txt").read_text() == "half"
    assert json.loads((sd.run_dir("r1") / "state.json").read_text())["resumed"] is False


def test_failure_keeps_the_last_stderr_line(sweep_of):
    sd = sweep_of(mode="fail")
    assert execute.execute_run(str(sd.root), "r1") == FAILED
    s = sd.status("r1")
    assert s.state == FAILED and s.detail == "tiny.py: error: no data under /nowhere"
    assert not (sd.run_dir("r1") / "values.json").exists()


def test_exit_by_sigterm_is_an_interruption_not_a_failure(sweep_of):
    sd = sweep_of(mode="sigterm")
    assert execute.execute_run(str(sd.root), "r1") == INTERRUPTED
    assert sd.status("r1").state == INTERRUPTED and "signal 15" in sd.status("r1").detail


def test_a_live_run_is_running(sweep_of):
    sd = sweep_of()
    sd.write_state("r1", state=RUNNING, pid=os.getpid(), host=socket.gethostname(), attempts=1)
    assert sd.status("r1").state == RUNNING


def test_last_line_splits_progress_bars(tmp_path):
    log = tmp_path / "stderr.log"
    log.write_bytes(b"first\n 10%|#  |\r 90%|#########|\r\n\n")
    assert execute.last_line(log) == "90%|#########|"
    assert execute.last_line(tmp_path / "missing.log") == ""


def test_rules_from_data():
    assert rule(("greater", "a", "b"))({"a": 2, "b": 1}) == "reproduced"
    assert rule(("greater", "a", "b", 1.5))({"a": 2, "b": 1}) == "not reproduced"
    assert rule(("within", "x", 0.9, 0.05))({"x": 0.86}) == "reproduced"
    assert rule(("within", "x", 0.9, 0.05))({"x": 0.84}) == "not reproduced"
    both = rule(("all", ("greater", "a", "b"), ("within", "x", 1, 0)))
    assert both({"a": 2, "b": 1, "x": 1}) == "reproduced" and both({"a": 2, "b": 1, "x": 2}) == "not reproduced"
    with pytest.raises(ValueError):
        rule(("between", "a"))


STAGED = '''
import json, sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
shared, out = Path(args["--shared"]), Path(args["--out"])
shared.mkdir(parents=True, exist_ok=True)
out.mkdir(parents=True, exist_ok=True)
if args["--role"] == "part":
    if args["--value"] == "bad":
        sys.exit("staged.py: error: bad part")
    (shared / f"part_{args['--value']}.txt").write_text(args["--value"])
else:  # the next stage reads what every run of the first one left
    total = sum(int(p.read_text()) for p in shared.glob("part_*.txt"))
    (out / "result.json").write_text(json.dumps({"total": total}))
'''


def staged_claim(tmp_path: Path, first_values: list[str]) -> Claim:
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / "staged.py").write_text(STAGED)
    common = ["--shared", "{shared}", "--out", "{out}"]
    grid = lambda: [  # noqa: E731
        *({"name": f"part{v}", "script": "staged.py", "stage": 0, "args": [*common, "--role", "part", "--value", v]}
          for v in first_values),
        {"name": "sum", "script": "staged.py", "stage": 1, "args": [*common, "--role", "sum", "--value", "0"]},
    ]

    def read(run, out):
        return json.loads((out / "result.json").read_text()) if run["name"] == "sum" else {}

    sweep = Sweep(id="tiny.staged", package_dir=tmp_path / "pkg", grids={"smoke": grid}, read=read)
    return Claim(id="tiny.staged", paper="Tiny", statement="s", source="Fig. 0", paper_value="5",
                 verdict=rule(("within", "total", 5, 0)), sweep=sweep,
                 measure=lambda v: {"total": float(v["sum"]["total"])}, summary=lambda m: f"total {m['total']:.0f}")


def run_cli_with(monkeypatch, claim: Claim, argv: list[str]) -> int:
    from forgetting import cli
    from forgetting.claims import Paper

    monkeypatch.setattr(execute, "find", lambda cid: claim)
    monkeypatch.setattr(cli, "find", lambda cid: claim)
    monkeypatch.setattr(cli, "papers", lambda: {"tiny": Paper("tiny", "Tiny", claim.sweep.package_dir, {}, (claim,))})
    return cli.main(argv)


def test_a_later_stage_reads_what_the_earlier_stage_left(tmp_path, monkeypatch, capsys):
    claim = staged_claim(tmp_path, ["2", "3"])
    out = tmp_path / "sweep"
    assert run_cli_with(monkeypatch, claim, ["reproduce", "tiny.staged", "--out", str(out), "--jobs", "2", "--quiet"]) == 0
    record = json.loads((out / "tiny.staged.json").read_text())
    assert record["measured"] == {"total": 5.0} and record["verdict"] == "reproduced" and record["summary"] == "total 5"
    assert sorted(p.name for p in (out / "shared").iterdir()) == ["part_2.txt", "part_3.txt"]


def test_a_failed_stage_leaves_the_next_one_pending(tmp_path, monkeypatch, capsys):
    claim = staged_claim(tmp_path, ["2", "bad"])
    out = tmp_path / "sweep"
    assert run_cli_with(monkeypatch, claim, ["reproduce", "tiny.staged", "--out", str(out), "--jobs", "2", "--quiet"]) == 1
    sd = SweepDir(out)
    assert sd.status("partbad").state == FAILED and sd.status("partbad").detail == "staged.py: error: bad part"
    assert sd.status("part2").state == FINISHED
    assert sd.status("sum").state == PENDING  # never started: its input is incomplete
    assert "fix and run the same command again" in capsys.readouterr().err


def test_every_sweeps_reader_resolves_what_it_imports(tmp_path):
    """Readers import their package's library lazily: a renamed module shows up here, not mid-sweep."""
    from forgetting.claims import papers
    from forgetting_common import UserError

    sweeps = {c.sweep.id: c.sweep for p in papers().values() for c in p.claims if c.sweep is not None}
    assert len(sweeps) >= 10
    for sweep in sweeps.values():
        for scale in sweep.grids:
            runs = sweep.runs(scale)
            assert runs, (sweep.id, scale)
            for run in runs[-1:]:  # the last run of a staged grid is one that is read
                with pytest.raises((FileNotFoundError, ValueError, UserError)):  # an empty output folder, not an ImportError
                    sweep.read(run.as_dict(), tmp_path / "empty")


RANKED = '''
import json, os, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
mode = sys.argv[sys.argv.index("--mode") + 1]
rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({"world": world, "local_rank": os.environ.get("LOCAL_RANK")}))
if mode == "fail" and rank == 1:
    print("ranked.py: error: rank 1 cannot read /nowhere/batch_1", file=sys.stderr)
    sys.exit(2)
if mode == "fail":
    time.sleep(30)  # rank 0 would wait in a collective; torchrun must stop it when rank 1 fails
if rank == 0:
    (out / "result.json").write_text(json.dumps({"value": world}))
'''


def ranked_sweep(tmp_path: Path, monkeypatch, mode: str, gpus: int) -> SweepDir:
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / "ranked.py").write_text(RANKED)
    grid = lambda: [{"name": "r1", "script": "ranked.py", "args": ["--out", "{out}", "--mode", mode],  # noqa: E731
                     "gpus": gpus}]
    read = lambda run, out: json.loads((out / "result.json").read_text())  # noqa: E731
    sweep = Sweep(id="tiny.ranked", package_dir=tmp_path / "pkg", grids={"smoke": grid}, read=read)
    claim = Claim(id="tiny.ranked", paper="Tiny", statement="s", source="Fig. 0", paper_value="2",
                  verdict=rule(("within", "value", 2, 0)), sweep=sweep, measure=lambda v: v["r1"])
    monkeypatch.setattr(execute, "find", lambda cid: claim)
    sd = SweepDir(tmp_path / f"sweep_{mode}_{gpus}")
    sd.create_or_check(claim, "smoke", claim.sweep.runs("smoke"), "")
    return sd


def test_a_run_asking_for_two_gpus_starts_through_torchrun(tmp_path, monkeypatch):
    sd = ranked_sweep(tmp_path, monkeypatch, "ok", gpus=2)
    assert execute.execute_run(str(sd.root), "r1", env={"CUDA_VISIBLE_DEVICES": ""}) == FINISHED
    ranks = {p.name: json.loads(p.read_text()) for p in sd.run_out("r1").glob("rank*.json")}
    assert ranks == {"rank0.json": {"world": 2, "local_rank": "0"}, "rank1.json": {"world": 2, "local_rank": "1"}}
    state = json.loads((sd.run_dir("r1") / "state.json").read_text())
    assert state["procs"] == 2 and json.loads((sd.run_dir("r1") / "values.json").read_text()) == {"value": 2}
    assert "torch.distributed.run --standalone --nnodes 1 --nproc_per_node 2 ranked.py" in \
        (sd.run_dir("r1") / "stderr.log").read_text()


def test_the_launch_can_set_the_processes_of_every_run(tmp_path, monkeypatch):
    sd = ranked_sweep(tmp_path, monkeypatch, "ok", gpus=0)
    assert execute.execute_run(str(sd.root), "r1", procs=2) == FINISHED
    assert json.loads((sd.run_dir("r1") / "values.json").read_text()) == {"value": 2}


def test_one_failing_rank_stops_the_run_and_its_line_is_the_reason(tmp_path, monkeypatch):
    sd = ranked_sweep(tmp_path, monkeypatch, "fail", gpus=2)
    import time

    start = time.monotonic()
    assert execute.execute_run(str(sd.root), "r1", env={"CUDA_VISIBLE_DEVICES": ""}) == FAILED
    assert time.monotonic() - start < 25  # rank 0 was stopped, not waited for
    assert sd.status("r1").detail == "ranked.py: error: rank 1 cannot read /nowhere/batch_1"


def test_a_torchrun_stopped_by_sigterm_is_an_interruption(tmp_path, monkeypatch):
    import signal
    import threading
    import time

    sd = ranked_sweep(tmp_path, monkeypatch, "fail", gpus=0)  # rank 0 sleeps; procs=1 here: no rank fails
    (tmp_path / "pkg" / "ranked.py").write_text(RANKED.replace('mode == "fail" and rank == 1', "False"))

    def stop_when_running() -> None:
        for _ in range(200):
            s = sd.state("r1") or {}
            if s.get("state") == RUNNING and len(list(sd.run_out("r1").glob("rank*.json"))) == 2:
                os.kill(s["pid"], signal.SIGTERM)  # the torchrun process, as scancel would
                return
            time.sleep(0.1)

    threading.Thread(target=stop_when_running, daemon=True).start()
    assert execute.execute_run(str(sd.root), "r1", procs=2) == INTERRUPTED
    assert "signal 15" in sd.status("r1").detail


def test_an_analysis_parses_without_verdict_and_stays_out_of_the_ledger(tmp_path):
    from forgetting.aggregate import result_record
    from forgetting.claims import parse_paper

    grid = lambda: [{"name": "r1", "script": "tiny.py", "args": []}]  # noqa: E731
    paper = parse_paper({"name": "tiny", "title": "Tiny", "package_dir": tmp_path,
                         "sweeps": {"s": {"grids": {"smoke": grid}, "read": lambda run, out: {}}},
                         "analyses": [{"name": "events", "question": "which examples?", "sweep": "s",
                                       "measure": lambda v: {"n": 1.0}}]})
    (analysis,) = paper.analyses
    assert analysis.id == "tiny.events" and analysis.is_analysis and paper.claims == ()
    record = result_record(analysis, "smoke", {"n": 1.0}, 1)
    assert record["command"] == "forgetting analyse tiny.events --scale smoke" and record["rule"] == ""
    with pytest.raises(ValueError, match="needs a sweep"):
        parse_paper({"name": "tiny", "title": "Tiny", "package_dir": tmp_path,
                     "analyses": [{"name": "x", "question": "?", "sweep": "missing", "measure": len}]})
