"""Hostile files, file modes, one-line failures and resumable logs (issue 13's shared pieces)."""

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import torch
from forgetting_common import testing
from forgetting_common.atomic import atomic_torch_save, atomic_write_json
from forgetting_common.errors import UserError, run_main
from forgetting_common.runlog import EMPTY_STATE, RunLog, read_metrics
from forgetting_common.safeload import load_checkpoint, load_pickle
from forgetting_common.seeding import get_rng_state, set_rng_state


class _RunsCode:
    """Unpickling this calls a function named by the file: what an attacker's pickle does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_data_pickles_of_every_protocol_load(tmp_path):
    obj = {
        "forgetting counts": [np.arange(5, dtype=np.int64), np.float64(2.5)],
        "plain": (1, 2.0, "x", b"y", None, True, 2**80),
        "set": {1, 2},
        "ordered": OrderedDict(w=np.zeros((2, 3), np.float32)),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        out = load_pickle(path)
        assert np.array_equal(out["forgetting counts"][0], np.arange(5))
        assert out["plain"][-1] == 2**80 and out["set"] == {1, 2}
        assert out["ordered"]["w"].dtype == np.float32


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "sorting.pkl"
    path.write_bytes(pickle.dumps({"indices": _RunsCode(str(marker))}))
    with pytest.raises(UserError, match=r"sorting.pkl is refused: it asks for posix.mkdir"):
        load_pickle(path)
    assert not marker.exists()


def test_a_checkpoint_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": _RunsCode(str(marker))}, path)
    with pytest.raises(UserError, match=r"ckpt.pt is refused: .*posix.mkdir.*could run code"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "folder"])
def test_broken_checkpoints_are_one_line(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(1000)}, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif damage == "missing":
        path.unlink()
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value).strip() or damage in ("truncate", "garbage")
    assert str(path) in str(err.value)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    state = get_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    atomic_torch_save({"rng": state}, tmp_path / "c.pt")
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_atomic_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"k": 1})
        atomic_torch_save({"w": 1}, tmp_path / "b.pt")
        os.umask(0o027)
        atomic_write_json(tmp_path / "c.json", {"k": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("code, words", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left")])
def test_environment_os_errors_are_one_line(capsys, code, words):
    def main():
        raise OSError(code, os.strerror(code), "/runs/exp1/config.json")

    with pytest.raises(SystemExit) as stop:
        run_main(main, prog="script.py")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("script.py: error: /runs/exp1/config.json:")
    assert words in err


def test_sigterm_behaves_like_ctrl_c_and_exits_143(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, time
        from forgetting_common.errors import run_main
        def main():
            try:
                pathlib.Path({str(tmp_path / 'started')!r}).touch()
                while True:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                pathlib.Path({str(tmp_path / 'checkpoint')!r}).touch()
                raise
        run_main(main, prog="loop.py")
    """))
    code = testing.run_until_then_kill([str(script)], testing.exists(tmp_path / "started"), sig=signal.SIGTERM)
    assert code == 143
    assert (tmp_path / "checkpoint").exists()


def _log_steps(log, steps):
    for step in steps:
        log.log({"loss": 1.0 / (step + 1)}, step=step)
        log.tensorboard.add_scalar("train/loss", 1.0 / (step + 1), step)


def test_resume_cuts_metrics_and_tensorboard_back_to_the_checkpoint(tmp_path):
    straight = tmp_path / "straight"
    with RunLog.create(straight, {"a": 1}) as log:
        _log_steps(log, range(6))

    run = tmp_path / "run"
    log = RunLog.create(run, {"a": 1})
    _log_steps(log, range(3))
    state = log.checkpoint_state()
    _log_steps(log, range(3, 5))  # logged after the checkpoint, then the process dies
    log._metrics.flush()
    log.tensorboard.flush()
    # (no close: a killed process closes nothing)
    resumed = RunLog.create(run, {"a": 1}, resume=True, resume_state=state)
    _log_steps(resumed, range(3, 6))
    resumed.close()

    assert testing.metrics_rows_without_time(run) == testing.metrics_rows_without_time(straight)
    assert testing.tensorboard_scalars(run / "tensorboard") == testing.tensorboard_scalars(straight / "tensorboard")
    assert [r["step"] for r in read_metrics(run)] == list(range(6))


def test_resume_before_any_checkpoint_starts_the_logs_over(tmp_path):
    run = tmp_path / "run"
    log = RunLog.create(run, {"a": 1})
    _log_steps(log, range(2))
    log.close()
    again = RunLog.create(run, {"a": 1}, resume=True, resume_state=EMPTY_STATE)
    _log_steps(again, range(1))
    again.close()
    assert [r["step"] for r in read_metrics(run)] == [0]
    assert testing.tensorboard_scalars(run / "tensorboard") == [("loss", 0, 1.0), ("train/loss", 0, 1.0)]


def test_a_killed_process_can_be_detected_by_the_kill_helper(tmp_path):
    script = tmp_path / "fast.py"
    script.write_text("print('done')\n")
    with pytest.raises(AssertionError, match="ended"):
        testing.run_until_then_kill([str(script)], testing.exists(tmp_path / "never"), timeout=20)
    assert subprocess.run([sys.executable, str(script)], capture_output=True).returncode == 0


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("epoch 3 was good\n")
    with pytest.raises(UserError, match="notes.txt is not a checkpoint"):
        load_checkpoint(path)


def test_failed_atomic_writes_name_the_target_not_the_temporary(tmp_path, monkeypatch):
    from forgetting_common import atomic

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".a.json.x1y2.tmp"))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as err:
        atomic_write_json(tmp_path / "a.json", {})
    assert err.value.filename == str(tmp_path / "a.json") and err.value.errno == errno.EACCES


def test_deferred_stop_waits_for_the_step_then_raises_what_the_signal_would(tmp_path):
    script = tmp_path / "steps.py"
    script.write_text(textwrap.dedent(f"""
        import pathlib, time
        from forgetting_common.errors import run_main
        from forgetting_common.stopping import DeferredStop
        def main():
            with DeferredStop("steps.py") as stop:
                for step in range(10_000):
                    pathlib.Path({str(tmp_path / 'started')!r}).touch()
                    time.sleep(0.01)
                    pathlib.Path({str(tmp_path / 'done')!r}).write_text(str(step))
                    if stop.requested:
                        pathlib.Path({str(tmp_path / 'checkpoint')!r}).write_text(str(step))
                        stop.stop()
        run_main(main, prog="steps.py")
    """))
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        for name in ("started", "done", "checkpoint"):
            (tmp_path / name).unlink(missing_ok=True)
        assert testing.run_until_then_kill([str(script)], testing.exists(tmp_path / "started"), sig=sig) == code
        # The checkpoint holds the last finished step: the signal did not cut a step in half.
        assert (tmp_path / "checkpoint").read_text() == (tmp_path / "done").read_text()


def test_progress_draws_on_a_terminal_of_unknown_size(monkeypatch):
    from forgetting_common import runlog

    monkeypatch.setattr(runlog, "progress_enabled", lambda quiet=False: True)
    monkeypatch.setattr(runlog.os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    bar = runlog.progress(range(3))
    assert not bar.disable and bar.ncols == 80
    bar.close()


def test_a_closed_pipe_stops_quietly(tmp_path):
    script = tmp_path / "talk.py"
    script.write_text(textwrap.dedent("""
        from forgetting_common.errors import run_main
        def main():
            for i in range(200_000):
                print("line", i)
        run_main(main, prog="talk.py")
    """))
    proc = subprocess.run(f"{sys.executable} {script} | head -n 1", shell=True, capture_output=True, text=True)
    assert proc.stdout == "line 0\n"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def _unframed(data: bytes) -> bytes:
    """The opcodes of a protocol-5 pickle, its FRAME headers removed wherever they are."""
    import pickletools

    ops = [(op.name, pos) for op, _, pos in pickletools.genops(data)]
    ends = [pos for _, pos in ops[1:]] + [len(data)]
    return b"".join(data[pos:end] for (name, pos), end in zip(ops, ends) if name != "FRAME")


@pytest.mark.parametrize("n", [0, 1, 2, 999, 1000, 1001, 2000, 2345])
def test_atomic_pickle_dict_writes_the_opcodes_of_pickling_the_whole_dict(tmp_path, n):
    """Streamed pair by pair, the file loads as the dict and holds exactly the opcodes pickle.dump
    gives for it (batches of 1000 and the one-item special case included); values larger than a
    frame too."""
    import pickle
    import random

    from forgetting_common.atomic import atomic_pickle_dict
    from forgetting_common.safeload import load_pickle

    rng = random.Random(n)
    d = {}
    for k in range(n):
        d[rng.randrange(10**6) if k % 7 else k] = [[rng.random() for _ in range(rng.randrange(1, 40))],
                                                   [rng.randrange(2) for _ in range(30)], []]
    if n > 2:
        d["train"] = [[], [rng.random() for _ in range(20000)]]  # 180 kB: several frames
        d["test"] = [[], [99.5, 12]]
    path = atomic_pickle_dict(d.items(), tmp_path / "s.pkl")
    data = path.read_bytes()
    loaded = load_pickle(path, what="statistics file")
    assert loaded == d and list(loaded) == list(d)
    assert _unframed(data) == _unframed(pickle.dumps(d, protocol=5))
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
