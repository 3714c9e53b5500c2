"""Resume = uninterrupted: kill real runs (SIGKILL, SIGTERM, an interrupt mid-state), resume, compare every file."""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch
from forgetting_common import testing
from forgetting_common.safeload import load_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]

#: A tiny LURE run that touches every kind of state a resume must restore: SNIP unlearning
#: (its own random streams), buffer replay (a python Random and a growing buffer), an LR
#: schedule within each state, and the per-epoch test evaluation.
TINY = ["--data_source", "synthetic", "--image_size", "8", "--test_limit", "32", "--meta_batch_size", "40",
        "--meta_batch_number", "3", "--epochs", "2", "--decreasing_lr", "1", "--gamma", "0.1", "--device", "cpu",
        "--quiet", "--batch_size", "16", "--seed", "3", "--use_snip", "-buffer_replay", "--buffer_size_train", "8",
        "--buffer_size_val", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: Wall-clock values, the resume bookkeeping and the folder names differ between runs by nature; nothing else may.
VOLATILE = {"time", "time_per_state", "elapsed", "runlog", "resume", "save_dir"}  # save_dir: the two folders


def _same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - VOLATILE
        assert keys == set(b) - VOLATILE, where
        for key in keys:
            _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_outputs(full: Path, resumed: Path) -> None:
    """Every file of the two run folders agrees (TensorBoard: the same scalar points, none repeated)."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "tensorboard" not in p.parts}

    assert files(full) == files(resumed)
    for name in sorted(files(full)):
        a, b = full / name, resumed / name
        if name.endswith(".jsonl"):
            assert testing.metrics_rows_without_time(a) == testing.metrics_rows_without_time(b), name
        elif name.endswith(".json"):
            _same(json.loads(a.read_text()), json.loads(b.read_text()), name)
        elif name.endswith(".png"):  # the figure is drawn from the results alone
            assert a.read_bytes() == b.read_bytes(), name
        else:
            _same(load_checkpoint(a), load_checkpoint(b), name)
    logs = "wb_offline/tensorboard"
    points = testing.tensorboard_scalars(full / logs)
    assert points and points == testing.tensorboard_scalars(resumed / logs)


def script(save: Path, *extra: str) -> list[str]:
    return [str(PACKAGE / "LURE_main.py"), "--save_dir", str(save), *TINY, *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The reference run, in-process (the killed runs below are real processes; CPU results agree bit for bit)."""
    from lure.cli import main

    save = tmp_path_factory.mktemp("full") / "S"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SNIP clamp warning, expected at this size
        assert main(["--save_dir", str(save), *TINY])["finished"] is True
    return save


def _resume(runner, save: Path) -> str:
    """Resume in-process (no second interpreter start-up); the killed run was a real process."""
    return runner.main(["--save_dir", save, *TINY, "--resume"])[1]


def test_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted(uninterrupted, runner, tmp_path):
    save = tmp_path / "S"
    code = testing.run_until_then_kill(script(save), testing.exists(save / "anytime_state.pth.tar"), cwd=PACKAGE,
                                       env=ENV)
    assert code == -signal.SIGKILL
    assert not (save / "3model_SA_best.pth.tar").exists()  # killed part-way, not at the end
    assert "resuming " in _resume(runner, save)
    assert_same_outputs(uninterrupted, save)
    assert not [p for p in save.rglob("*") if p.name.endswith(".tmp")]


def test_sigterm_says_where_the_checkpoint_is_exits_143_and_resumes(uninterrupted, runner, tmp_path):
    import subprocess
    import time

    save = tmp_path / "S"
    proc = subprocess.Popen([sys.executable, *script(save)], cwd=PACKAGE, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (save / "anytime_state.pth.tar").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-2:] == [
        f"LURE_main.py: stopped; the last checkpoint is {save / 'anytime_state.pth.tar'}: continue with --resume",
        "LURE_main.py: terminated (SIGTERM)"]
    _resume(runner, save)
    assert_same_outputs(uninterrupted, save)


#: ALMA.py has no interventions and no --gamma (its extension --alma_gamma plays that part).
ALMA_TINY = [a for a in TINY if a not in ("--use_snip", "--gamma")]
ALMA_TINY[ALMA_TINY.index("0.1")] = "--alma_gamma"
ALMA_TINY.insert(ALMA_TINY.index("--alma_gamma") + 1, "0.1")


@pytest.mark.parametrize("alma", [False, True], ids=["LURE_main", "ALMA"])
@pytest.mark.parametrize("stop_at,expect_rows,expect_note", [
    # state 1: epoch, epoch, state; state 2: epoch 0, then epoch 1 -> stop before its checkpoint
    (5, [(1, 0), (1, 1), (1, None), (2, 0), (2, 1)], "resuming in state 2 after epoch 1 (3 states in all)"),
    # before the very first checkpoint: --resume restarts from the beginning, logs emptied
    (1, [(1, 0)], "starting from the beginning"),
])
def test_interrupt_then_resume_equals_uninterrupted_and_cuts_the_logs_back(runner, tmp_path, monkeypatch, alma, stop_at,
                                                                          expect_rows, expect_note):
    """In-process and deterministic: stop after an epoch was logged but before its checkpoint, so the log
    holds a row the resume file does not cover; the resumed run must drop it and redo the epoch."""
    from lure import checkpoint

    argv = ALMA_TINY if alma else TINY
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    runner.main(["--save_dir", full_dir, *argv], alma=alma)
    real = checkpoint.save
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.main(["--save_dir", cut_dir, *argv], alma=alma)
    monkeypatch.setattr(checkpoint, "save", real)
    rows = testing.metrics_rows_without_time(cut_dir / "wb_offline" / "metrics.jsonl")
    assert [(r.get("state"), r.get("epoch")) for r in rows] == expect_rows
    _, out, _ = runner.main(["--save_dir", cut_dir, *argv, "--resume"], alma=alma)
    assert expect_note in out
    assert_same_outputs(full_dir, cut_dir)


def test_finished_run_is_refused_and_resume_of_finished_run_too(runner, tmp_path):
    runner.main(["--save_dir", tmp_path / "S", *TINY])
    code, err = runner.error(["--save_dir", tmp_path / "S", *TINY])
    assert code == 2 and "already holds a run" in err
    code, err = runner.error(["--save_dir", tmp_path / "S", *TINY, "--resume"])
    assert code == 2 and "already finished" in err


def test_resume_with_other_flags_is_refused(runner, tmp_path, monkeypatch):
    from lure import checkpoint

    real = checkpoint.save

    def stop_after_first(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        runner.main(["--save_dir", tmp_path / "S", *TINY])
    monkeypatch.setattr(checkpoint, "save", real)
    other = [*TINY, "--resume"]
    other[other.index("--epochs") + 1] = "3"
    code, err = runner.error(["--save_dir", tmp_path / "S", *other])
    assert code == 2 and err.strip() == (
        f"LURE_main.py: error: --resume: --epochs was 2 in the run that wrote {tmp_path / 'S' / 'anytime_state.pth.tar'}, "
        "now 3; resume with the same flags")
    code, err = runner.error(["--save_dir", tmp_path / "S", *[a for a in TINY if a != "-buffer_replay"], "--resume"])
    assert code == 2 and "-buffer_replay was True" in err
    # where the output goes and how much is printed may change
    _, out, _ = runner.main(["--save_dir", tmp_path / "S", *[a for a in TINY if a != "--quiet"], "--resume"])
    assert "resuming in state 1 after epoch 1" in out


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("kind,fragment", [
    ("code", "--resume checkpoint"),
    ("garbage", "--resume checkpoint"),
    ("original", "is not a resume file of this version"),
])
def test_hostile_or_foreign_checkpoint_is_refused(runner, tmp_path, monkeypatch, kind, fragment):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.pth.tar"
    if kind == "code":
        torch.save({"state_dict": _Payload()}, bad)
    elif kind == "garbage":
        bad.write_bytes(b"PK\x03\x04 a damaged zip, not a checkpoint" * 10)
    else:  # the original's {k}checkpoint layout: no resume information
        torch.save({"state": 1, "epoch": 1, "state_dict": {}, "best_sa": 0.0, "result": {}}, bad)
    code, err = runner.error(["--save_dir", tmp_path / "S", *TINY, "--resume", "--checkpoint", bad])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and str(bad) in lines[0], err
    assert not (tmp_path / "PWNED").exists()


def test_pickle_payload_is_really_refused_not_run():
    """The payload above would run if unpickled: make sure the test's file is a real threat."""
    assert b"system" in pickle.dumps(_Payload())
