"""Checkpoint and resume: a run killed part-way and resumed equals the uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from forgetting_common import testing
from forgetting_common.errors import UserError
from forgetting_common.trackers import TRACKER_NAMES

SCRIPT = Path(__file__).resolve().parents[1] / "mixed_group_training.py"

# Tiny but real: 300 synthetic examples = 2 batches per epoch, so a checkpoint every 20
# iterations lands mid-epoch and at epoch ends; random labels, random masks and re-init draws.
ARGV = ["--data_source", "synthetic", "--train_limit", "300", "--train_iters", "120", "--print_every", "5",
        "--checkpoint_every", "20", "--no_wandb", "--keep_perc", "0.5", "--random_perc", "0.2",
        "--save_path", "runs", "--fname", "a", "--quiet", "--num_threads", "1"]
TIMING = ("seconds", "iterations_per_second")
ALL = ",".join(TRACKER_NAMES)


def _scalars(logdir):
    """TensorBoard points with NaN made comparable (NaN != NaN)."""
    return [(tag, step, "nan" if math.isnan(value) else value)
            for tag, step, value in testing.tensorboard_scalars(logdir)]


def _in_process(argv, cwd, monkeypatch):
    from targeted_forgetting.train import main

    monkeypatch.chdir(cwd)
    return main(list(argv))


def _assert_same_outputs(first: Path, second: Path) -> None:
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert "checkpoint.pt" not in names
    for name in names:
        a, b = first / name, second / name
        if name == "metrics.jsonl":
            assert testing.metrics_rows_without_time(a) == testing.metrics_rows_without_time(b)
        elif name == "summary.json":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            assert {k: v for k, v in ja.items() if k not in TIMING} == {k: v for k, v in jb.items() if k not in TIMING}
        elif name == "tensorboard":
            sa, sb = _scalars(a), _scalars(b)
            assert sa == sb and len(sa) == len(set(sa))  # same points, none twice
        else:
            assert a.read_bytes() == b.read_bytes(), name


@pytest.mark.parametrize("sig,track", [(signal.SIGKILL, []), (signal.SIGTERM, []), (signal.SIGKILL, ["--track", ALL, "--checkpoint_every", "15"])],  # 15: mid-epoch (2 steps an epoch)
                         ids=["SIGKILL", "SIGTERM", "SIGKILL-track"])
def test_killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, sig, track):
    argv = ARGV + track
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    _in_process(argv, whole, monkeypatch)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = testing.run_until_then_kill([str(SCRIPT), *argv], testing.exists(cut / "runs/a/checkpoint.pt"),
                                       cwd=cut, env=env, sig=sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    assert not (cut / "runs/a/summary.json").exists()  # really stopped part-way
    state = torch.load(cut / "runs/a/checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert 0 < state["iterations"] < 120
    if sig == signal.SIGKILL:  # the checkpoint belongs to these flags: another seed is refused
        with pytest.raises(UserError, match=r"was started with --seed 0, not 3"):
            _in_process(argv + ["--resume", "--seed", "3"], cut, monkeypatch)
    if track:  # the tracked values continue where they were: the trackers must be the same
        assert set(state["trackers"]) == set(TRACKER_NAMES)
        assert int(state["trackers"]["forgetting"]["state"]["presentations"].sum()) == 128 * state["iterations"]
        with pytest.raises(UserError, match=r"was started with --track '[a-z_,]+', not 'forgetting'"):
            _in_process(argv + ["--resume", "--track", "forgetting"], cut, monkeypatch)
    _in_process(argv + ["--resume"], cut, monkeypatch)
    _assert_same_outputs(whole / "runs/a", cut / "runs/a")  # tracked.npz byte for byte, the rows as they were
    if track:
        assert (cut / "runs/a/tracked.npz").is_file()
        assert any("track/forgetting_events" in r for r in testing.metrics_rows_without_time(cut / "runs/a/metrics.jsonl"))


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path):
    """SIGTERM behaves as Ctrl-C: a message naming the checkpoint, the checkpoint, exit 143."""
    import subprocess
    import sys
    import time

    argv = [a if a != "120" else "100000" for a in ARGV] + ["--checkpoint_every", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "runs/a/metrics.jsonl").exists() or not (tmp_path / "runs/a/metrics.jsonl").stat().st_size:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    lines = err.strip().splitlines()
    assert lines[-1] == "mixed_group_training.py: terminated (SIGTERM)"
    assert "checkpoint.pt at iteration" in lines[-2] and "--resume" in lines[-2]
    state = torch.load(tmp_path / "runs/a/checkpoint.pt", weights_only=True)
    assert state["iterations"] > 0 and len(state["records"]) == state["iterations"] // 5


def test_resume_refuses_a_finished_run(tmp_path, monkeypatch):
    short = [a if a != "120" else "10" for a in ARGV]
    _in_process(short, tmp_path, monkeypatch)
    with pytest.raises(UserError, match=r"--resume: runs/a holds a finished run"):
        _in_process(short + ["--resume"], tmp_path, monkeypatch)



def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path, monkeypatch, capsys):
    short = [a if a != "120" else "10" for a in ARGV]
    run_dir = _in_process(short + ["--resume"], tmp_path, monkeypatch)
    assert "no checkpoint in runs/a; starting from the beginning" in capsys.readouterr().err
    assert len(testing.metrics_rows_without_time(run_dir / "metrics.jsonl")) == 2


def test_resume_path_pickle_cannot_run_code(run_cli, tmp_path):
    """A --resume_path file whose unpickling would create a file is refused before it can."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(UserError, match="evil.pt is refused"):
        run_cli(["--data_source", "synthetic", "--train_limit", "300", "--train_iters", "2", "--no_wandb",
                 "--resume_path", str(path)])
    assert not marker.exists()


def test_a_new_run_leaves_an_interrupted_one_alone_and_says_how_to_resume(tmp_path, capsys):
    from targeted_forgetting.train import fresh_run_dir

    (tmp_path / "a").mkdir()
    (tmp_path / "a/config.json").write_text("{}")
    (tmp_path / "a/checkpoint.pt").write_bytes(b"x")
    assert fresh_run_dir(tmp_path, "a") == tmp_path / "a_1"
    assert "holds an interrupted run; add --resume to continue it" in capsys.readouterr().err
