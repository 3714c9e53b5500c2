"""Kill a real run (SIGKILL, SIGTERM), resume it with --resume, compare with an uninterrupted run.

The run: LLF on a 4-class ``Folder`` set, 2 generations x 3 epochs, validation (and so a
checkpoint) every 2 epochs and at every generation end. The kill lands in generation 1 once
its epoch-2 row is logged, i.e. after the checkpoint of generation 1 epoch 1: the resumed run
must cut away what the killed process wrote after it and end with the same files.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from forgetting_common.runlog import read_metrics
from forgetting_common.testing import (
    metrics_rows_without_time,
    run_until_then_kill,
    tensorboard_scalars,
)
from llf_ke.cli import parse_args
from llf_ke.fake import tiny_run_argv
from llf_ke.outputs import read_csv


def _argv(data, ckpt, *extra):
    return tiny_run_argv(data, ckpt, "kill", *extra, epochs=3, test_interval=2)


@pytest.fixture(scope="module")
def reference(script, data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("reference")
    script.main(_argv(data, ckpt))
    return Path(parse_args(_argv(data, ckpt)).exp_dir)


TRACK = ("--track", "forgetting,margin,ece,init_distance")


@pytest.fixture(scope="module")
def tracked_reference(script, data, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("tracked_reference")
    script.main(_argv(data, ckpt, *TRACK))
    return Path(parse_args(_argv(data, ckpt, *TRACK)).exp_dir)


def _log_lines(exp):
    """train_log.txt without timestamps and without the lines that name this run's folders."""
    lines = [ln[20:] for ln in (exp / "train_log.txt").read_text().splitlines()]
    return [ln for ln in lines if not ln.startswith(("INFO output folder", "INFO config:"))]


def _rel(exp, files):
    return sorted(str(p.relative_to(exp)) for p in files)


def assert_same_run(ours, ref):
    ours, ref = Path(ours), Path(ref)
    assert metrics_rows_without_time(ours) == metrics_rows_without_time(ref)
    points = tensorboard_scalars(ours / "tensorboard")
    assert points == tensorboard_scalars(ref / "tensorboard")
    assert len(points) == len(set((tag, step) for tag, step, _ in points))  # no duplicated point
    assert [list(r.values())[1:] for r in read_csv(next(ours.glob("*.csv")))] == \
        [list(r.values())[1:] for r in read_csv(next(ref.glob("*.csv")))]
    s_ours, s_ref = (json.loads((d / "summary.json").read_text()) for d in (ours, ref))
    for s, d in ((s_ours, ours), (s_ref, ref)):
        for row in s["generations"]:
            row["run_dir"] = str(Path(row["run_dir"]).relative_to(d))
    assert s_ours == s_ref and s_ours["finished"]
    assert _log_lines(ours) == _log_lines(ref)
    c_ours, c_ref = (json.loads((d / "config.json").read_text()) for d in (ours, ref))
    for c in (c_ours, c_ref):
        for key in ("resume", "checkpoints_dir", "exp_dir"):
            c.pop(key)
    assert c_ours == c_ref
    k_ours, k_ref = (torch.load(d / "checkpoint_last.pth", weights_only=True) for d in (ours, ref))
    assert k_ours["generation"] == k_ref["generation"] == 1 and k_ours["finished"]
    assert all(torch.equal(k_ours["model"][k], v) for k, v in k_ref["model"].items())
    assert _rel(ours, ours.rglob("gen_*/**/*")) == _rel(ref, ref.rglob("gen_*/**/*"))
    assert not list(ours.rglob("*.tmp"))  # no half-written file left


def _rows(exp):
    path = exp / "metrics.jsonl"
    return [(r["generation"], r["epoch"]) for r in read_metrics(path)] if path.exists() else []


def _kill_after_row(argv, exp, helpers, sig, row=(1, 2)):
    """Run the script until metrics.jsonl holds the row (generation, epoch), then send ``sig``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return run_until_then_kill([str(helpers.script_path), *argv], lambda: row in _rows(exp), env=env,
                               timeout=300, sig=sig)


def test_killed_run_resumes_to_the_uninterrupted_result(script, data, reference, tmp_path, helpers):
    argv = _argv(data, tmp_path / "ckpt")
    exp = Path(parse_args(argv).exp_dir)
    assert _kill_after_row(argv, exp, helpers, signal.SIGKILL) == -signal.SIGKILL
    state = torch.load(exp / "checkpoint_last.pth", weights_only=True)
    assert (state["generation"], state["generation_done"], state["gen_state"]["next_epoch"]) == (1, False, 2)
    with pytest.raises(Exception, match="already holds a run"):
        script.main(argv)  # without --resume nothing is touched
    script.main([*argv, "--resume"])
    assert_same_run(exp, reference)
    with pytest.raises(Exception, match="finished run"):
        script.main([*argv, "--resume"])
    (exp / "checkpoint_last.pth").unlink()
    with pytest.raises(Exception, match="finished run"):  # even without its checkpoint
        script.main([*argv, "--resume"])


def test_killed_tracked_run_resumes_to_the_uninterrupted_result(script, data, tracked_reference, tmp_path, helpers):
    argv = _argv(data, tmp_path / "ckpt", *TRACK)
    exp = Path(parse_args(argv).exp_dir)
    assert _kill_after_row(argv, exp, helpers, signal.SIGKILL) == -signal.SIGKILL
    state = torch.load(exp / "checkpoint_last.pth", weights_only=True)
    assert (state["generation"], state["generation_done"], state["gen_state"]["next_epoch"]) == (1, False, 2)
    # the trackers' state is the checkpoint's: 12 examples, 3 epochs of generation 0 and 2 of generation 1
    assert state["tracking"]["track"] == "forgetting,margin,ece,init_distance"
    assert state["tracking"]["trackers"]["forgetting"]["state"]["presentations"].tolist() == [5] * 12
    for other in (["--track", "forgetting"], []):  # other trackers, or none: one line, nothing touched
        with pytest.raises(Exception, match=r"--resume: the run was started with --track 'forgetting,margin,ece,"):
            script.main([*argv[:-2], *other, "--resume"])
    script.main([*argv, "--resume"])
    assert_same_run(exp, tracked_reference)  # the track/ values in metrics.jsonl and TensorBoard too
    assert (exp / "tracked.npz").read_bytes() == (tracked_reference / "tracked.npz").read_bytes()


def test_sigterm_says_so_keeps_the_checkpoint_and_exits_143(data, tmp_path, helpers):
    argv = _argv(data, tmp_path / "ckpt")
    exp = Path(parse_args(argv).exp_dir)
    assert _kill_after_row(argv, exp, helpers, signal.SIGTERM, row=(0, 2)) == 143
    log = (exp / "train_log.txt").read_text()
    assert "WARNING interrupted in generation " in log
    assert "checkpoint_last.pth holds generation 0 " in log and "; continue with --resume" in log
    state = torch.load(exp / "checkpoint_last.pth", weights_only=True)
    assert state["generation"] == 0
    assert not list(exp.rglob(".*.tmp"))  # a graceful stop leaves no half-written file


def test_resume_without_a_checkpoint_restarts_cleanly(script, data, reference, tmp_path):
    """A folder killed before its first checkpoint: --resume starts again from nothing."""
    argv = _argv(data, tmp_path)
    exp = Path(parse_args(argv).exp_dir)
    (exp / "gen_0" / "1" / "0000_g0").mkdir(parents=True)
    (exp / "gen_1" / "2").mkdir(parents=True)
    (exp / "config.json").write_text("{}")
    (exp / "metrics.jsonl").write_text('{"step": 0, "time": 1.0, "train/loss": 9.0}\n')
    (exp / "train_log.txt").write_text("old lines\n")
    (exp / f"{parse_args(argv).exp_name}.csv").write_text("header\nstale row\n")
    script.main([*argv, "--resume"])
    assert_same_run(exp, reference)


def test_resume_refuses_a_hostile_checkpoint(script, data, tmp_path, capsys):
    """A pickle that would run code is refused by --resume and --pretrained, in one line."""
    from forgetting_common.errors import run_main

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Exploit()}, evil)
    for flag in ("--resume", "--pretrained"):
        with pytest.raises(SystemExit) as info:
            run_main(lambda flag=flag: script.main(_argv(data, tmp_path / "ckpt", flag, str(evil))),
                     prog="train_KE_cls.py")
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is refused" in err[0] and str(evil) in err[0], err
    assert not marker.exists()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # run_main installed its handler in this process
