"""forget_train.py checkpoint and resume: a run killed part-way and resumed equals the uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from forgetting_common import testing
from forgetting_common.errors import UserError

SCRIPT = Path(__file__).resolve().parents[1] / "forget_train.py"
# 200 iterations, generations of 100; the first checkpoint (150) comes after a boundary with an
# ease-of-teaching evaluation, a random-mask re-initialisation of the sender (global RNG) and a
# full receiver reset (new optimisers); trackers and weight snapshots are on.
ARGV = ["--fname", "r", "--seed", "0", "--no_wandb", "--trainIters", "200", "--resetNum", "2",
        "--eot_receivers", "2", "--eot_iters", "20", "--eot_every", "1", "--checkpoint_every", "150", "--quiet",
        "--num_threads", "1", "--device", "cpu", "--forget_sender", "--sender_keep_perc", "0.5",
        "--reset_receiver", "--track_examples", "--save_weights"]
TIMING = "seconds"


def _scalars(logdir):
    """TensorBoard points with NaN made comparable (NaN != NaN)."""
    return [(tag, step, "nan" if math.isnan(value) else value)
            for tag, step, value in testing.tensorboard_scalars(logdir)]


def _in_process(argv, cwd, monkeypatch):
    from ease_of_teaching.train import main

    monkeypatch.chdir(cwd)
    return main(list(argv))


def _drop_timing(obj):
    if isinstance(obj, dict):
        return {k: _drop_timing(v) for k, v in obj.items() if k != TIMING}
    if isinstance(obj, list):
        return [_drop_timing(v) for v in obj]
    return obj


def assert_same_outputs(first: Path, second: Path) -> None:
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert "checkpoint.pt" not in names and "seed0_example_tracker.h5" in names
    for name in names:
        a, b = first / name, second / name
        if name == "metrics.jsonl":
            assert testing.metrics_rows_without_time(a) == testing.metrics_rows_without_time(b)
        elif name in ("summary.json", "eot.json"):  # they record how long the evaluations took
            assert _drop_timing(json.loads(a.read_text())) == _drop_timing(json.loads(b.read_text()))
        elif name == "tensorboard":
            sa, sb = _scalars(a), _scalars(b)
            assert sa == sb  # the same points in the same order: nothing of the killed run repeated
        else:
            assert a.read_bytes() == b.read_bytes(), name


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch, sig):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    _in_process(ARGV, whole, monkeypatch)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    code = testing.run_until_then_kill([str(SCRIPT), *ARGV], testing.exists(cut / "r/checkpoint.pt"),
                                       cwd=cut, env=env, sig=sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 143)
    assert not (cut / "r/summary.json").exists()  # really stopped part-way
    state = torch.load(cut / "r/checkpoint.pt", weights_only=True)  # tensors and plain values only
    assert 150 <= state["next_iter"] <= 200 and len(state["eval_acc"]) == 1
    if sig == signal.SIGKILL:  # the checkpoint belongs to these flags: another seed is refused
        with pytest.raises(UserError, match=r"was started with --seed 0, not 3"):
            _in_process(ARGV + ["--resume", "--seed", "3"], cut, monkeypatch)
    _in_process(ARGV + ["--resume"], cut, monkeypatch)
    assert_same_outputs(whole / "r", cut / "r")


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path):
    """SIGTERM behaves as Ctrl-C: a message naming the checkpoint, the checkpoint, exit 143."""
    argv = [a if a != "200" else "200000" for a in ARGV] + ["--checkpoint_every", "0"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *argv], cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    metrics = tmp_path / "r/metrics.jsonl"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 2:  # inside the training loop
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 143
    assert lines[0] == "forget_train.py: writing to r"
    assert lines[-1] == "forget_train.py: terminated (SIGTERM)"
    assert lines[-2].startswith("forget_train.py: checkpoint r/checkpoint.pt after iteration ") and "--resume" in lines[-2]
    state = torch.load(tmp_path / "r/checkpoint.pt", weights_only=True)
    assert state["next_iter"] > 0 and state["traces"]["trainAcc"].shape == (state["next_iter"],)


def test_resume_refuses_a_finished_run_and_overwrite(tmp_path, monkeypatch, capsys):
    short = ["--fname", "s", "--trainIters", "40", "--resetNum", "2", "--no_eot", "--quiet", "--no_wandb"]
    _in_process(short, tmp_path, monkeypatch)
    with pytest.raises(UserError, match=r"--resume: s holds a finished run"):
        _in_process(short + ["--resume"], tmp_path, monkeypatch)
    with pytest.raises(UserError, match=r"--resume continues a run and --overwrite replaces it"):
        _in_process(short + ["--resume", "--overwrite"], tmp_path, monkeypatch)
    with pytest.raises(UserError, match=r"s already holds .*; continue it with --resume, or replace it with --overwrite"):
        _in_process(short, tmp_path, monkeypatch)



def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path, monkeypatch, capsys):
    short = ["--fname", "s", "--trainIters", "40", "--resetNum", "2", "--no_eot", "--quiet", "--no_wandb"]
    (tmp_path / "s").mkdir()
    (tmp_path / "s/config.json").write_text("{}")  # killed before its first checkpoint
    (tmp_path / "s/metrics.jsonl").write_text('{"step": 0, "time": 0.1, "Iter": 0}\n')
    _in_process(short + ["--resume"], tmp_path, monkeypatch)
    assert "no checkpoint in s; starting from the beginning" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _in_process(short, fresh, monkeypatch)
    assert testing.metrics_rows_without_time(tmp_path / "s/metrics.jsonl") == \
        testing.metrics_rows_without_time(fresh / "s/metrics.jsonl")


MIXED_SCRIPT = SCRIPT.parent / "mixed_language_forget_samebatch.py"
MIXED = ["--fname", "m", "--seed", "0", "--no_wandb", "--trainIters", "300", "--keep_perc", "0.5",
         "--checkpoint_every", "50", "--quiet", "--num_threads", "1", "--device", "cpu", "--group_vars", "seed"]


def test_mixed_language_killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """Random masks and re-initialisation draw from the global RNG at every iteration: restored."""
    from ease_of_teaching.mixed_language import main

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    monkeypatch.chdir(whole)
    main(list(MIXED))
    code = testing.run_until_then_kill([str(MIXED_SCRIPT), *MIXED], testing.exists(cut / "m/seed0/checkpoint.pt"),
                                       cwd=cut, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert code == -signal.SIGKILL and not (cut / "m/seed0/summary.json").exists()
    monkeypatch.chdir(cut)
    main(MIXED + ["--resume"])
    first, second = whole / "m/seed0", cut / "m/seed0"
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) and "checkpoint.pt" not in names
    for name in names:
        if name == "metrics.jsonl":
            assert testing.metrics_rows_without_time(first / name) == testing.metrics_rows_without_time(second / name)
        elif name == "tensorboard":
            assert _scalars(first / name) == _scalars(second / name)
        else:
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
