"""Checkpoint and ``--resume``: a killed run, resumed, equals an uninterrupted run bit for bit.

Each kill test starts the real script as a process, waits for its first checkpoint, kills it
with SIGKILL (or SIGTERM), resumes it with ``--resume`` and compares every output file with an
uninterrupted run of the same command: the statistics pickle, ``__best_acc.txt``, the changed
labels, the ``.t7`` file, ``config.json``, ``result.json`` (less its wall time), the
``metrics.jsonl`` rows (less ``time``) and the TensorBoard scalars (no duplicates).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from example_forgetting import stats
from example_forgetting.checkpoint import CHECKPOINT_NAME
from example_forgetting.cli import cifar_main, mnist_main
from forgetting_common import run_main, testing
from forgetting_common.errors import Terminated, UserError
from forgetting_common.trackers import TRACKER_NAMES

PACKAGE = Path(__file__).resolve().parents[1]
TINY = ["--data_source", "synthetic", "--test_limit", "64", "--device", "cpu", "--quiet", "--seed", "3"]
# permuted MNIST with dropout (torch's RNG in every step) and a random removal from a sorting file
MNIST = ["--dataset", "permuted_mnist", "--epochs", "5", "--train_limit", "256", "--batch_size", "16",
         "--sorting_file", "s", "--input_dir", "in", "--remove_n", "32", "--keep_lowest_n", "-1", *TINY]
MNIST_NAME = "dataset_permuted_mnist__no_dropout_False__seed_3__sorting_file_s__remove_n_32__keep_lowest_n_-1"
# augmentation, Cutout, a removal window, pixel and label noise: every random stream of run_cifar.py
CIFAR = ["--dataset", "cifar10", "--epochs", "6", "--train_limit", "64", "--batch_size", "16",
         "--data_augmentation", "--cutout", "--length", "8", "--sorting_file", "s", "--input_dir", "in",
         "--remove_n", "8", "--keep_lowest_n", "4", "--noise_percent_labels", "25", "--noise_percent_pixels", "10",
         "--noise_std_pixels", "30", *TINY]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(PACKAGE / "tests"))


def _workdir(path: Path, n: int) -> Path:
    """A working folder with the sorting file in ``in/`` (the runs write to ``out/``)."""
    (path / "in").mkdir(parents=True)
    order = np.random.RandomState(0).permutation(n)
    (path / "in" / "s.pkl").write_bytes(pickle.dumps({"indices": order, "forgetting counts": np.zeros(n)}))
    return path


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts}


def assert_same_outputs(a: Path, b: Path) -> None:
    """Every output of two runs is equal (time columns excepted); no checkpoint is left."""
    assert _files(a) == _files(b)
    runs = list((a / "runs").iterdir())
    assert len(runs) == 1
    for rel in sorted(_files(a)):
        if rel.endswith("result.json"):
            ra, rb = (json.loads((x / rel).read_text()) for x in (a, b))
            ra.pop("train_seconds"), rb.pop("train_seconds")
            assert ra == rb
        elif rel.endswith("metrics.jsonl"):
            rows = testing.metrics_rows_without_time(a / rel)
            assert rows == testing.metrics_rows_without_time(b / rel) and len(rows) == len({r["step"] for r in rows})
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert not any(CHECKPOINT_NAME in rel for rel in _files(a) | _files(b))
    tb_a, tb_b = (x / "runs" / runs[0].name / "tensorboard" for x in (a, b))
    scalars = testing.tensorboard_scalars(tb_a)
    assert scalars and scalars == testing.tensorboard_scalars(tb_b)


def _kill_then_resume(script: str, argv: list[str], work: Path, name: str, sig=signal.SIGKILL) -> dict:
    ckpt = work / "out" / "runs" / name / CHECKPOINT_NAME
    code = testing.run_until_then_kill([script, "--output_dir", "out", *argv], testing.exists(ckpt),
                                       cwd=work, env=_env(), timeout=120, sig=sig)
    assert code == (-9 if sig == signal.SIGKILL else 143)
    state = torch.load(ckpt, weights_only=True)
    epochs = int(argv[argv.index("--epochs") + 1])
    assert 1 <= state["epoch"] < epochs  # killed part-way
    import subprocess

    done = subprocess.run([sys.executable, script, "--output_dir", "out", *argv, "--resume"], cwd=work,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    return state


def test_mnist_sigkill_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    ref = _workdir(tmp_path / "ref", 256)
    monkeypatch.chdir(ref)
    mnist_main(["--output_dir", "out", *MNIST])
    work = _workdir(tmp_path / "killed", 256)
    _kill_then_resume(str(PACKAGE / "run_mnist.py"), MNIST, work, MNIST_NAME)
    assert_same_outputs(ref / "out", work / "out")


def test_cifar_sigkill_then_resume_equals_uninterrupted(tmp_path, monkeypatch, narrow):
    ref = _workdir(tmp_path / "ref", 64)
    monkeypatch.chdir(ref)
    res = cifar_main(["--output_dir", "out", *CIFAR])
    assert res.changed is not None and len(res.changed[0]) == 14  # int(25 * 56 / 100) labels changed
    work = _workdir(tmp_path / "killed", 64)
    _kill_then_resume(str(PACKAGE / "tests" / "narrow_cifar.py"), CIFAR, work, res.save_fname)
    assert_same_outputs(ref / "out", work / "out")
    assert (work / "out" / "checkpoint" / "cifar10" / (res.save_fname + ".t7")).exists()


def test_sigterm_mid_epoch_checkpoints_and_resumes(tmp_path, monkeypatch):
    """SIGTERM waits for the minibatch, writes a mid-epoch checkpoint and exits 143 (run_main)."""
    ref = _workdir(tmp_path / "ref", 256)
    monkeypatch.chdir(ref)
    mnist_main(["--output_dir", "out", *MNIST])

    work = _workdir(tmp_path / "stopped", 256)
    monkeypatch.chdir(work)
    real_record, calls = stats.StatsRecorder.record, []

    def record_then_sigterm(self, *a, **k):  # a scheduler's SIGTERM during minibatch 22 (epoch 1)
        calls.append(1)
        if len(calls) == 22:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_record(self, *a, **k)

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(stats.StatsRecorder, "record", record_then_sigterm)
    monkeypatch.setattr(sys, "argv", ["run_mnist.py", "--output_dir", "out", *MNIST])
    try:
        with pytest.raises(SystemExit) as exc:
            run_main(mnist_main, prog="run_mnist.py")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exc.value.code == 143
    state = torch.load(work / "out" / "runs" / MNIST_NAME / CHECKPOINT_NAME, weights_only=True)
    # 224 examples in minibatches of 16: 14 per epoch; minibatch 22 is epoch 1's 8th
    assert (state["epoch"], state["batch"]) == (1, 8)
    monkeypatch.setattr(stats.StatsRecorder, "record", real_record)
    mnist_main(["--output_dir", "out", *MNIST, "--resume"])
    assert_same_outputs(ref / "out", work / "out")


@pytest.mark.parametrize("track", [[], ["--track", ",".join(TRACKER_NAMES)]], ids=["plain", "track-all"])
def test_cifar_mid_epoch_resume_continues_every_random_stream(tmp_path, monkeypatch, narrow, track):
    """Ctrl-C inside epoch 2 of the CIFAR run (augmentation, Cutout, noise): the resumed run's
    crops, flips, holes and shuffles continue exactly; with ``--track`` (every tracker) the
    trackers continue from the mid-epoch state too (tracked.npz byte for byte, the track/ rows)."""
    ref = _workdir(tmp_path / "ref", 64)
    monkeypatch.chdir(ref)
    cifar_args = [*CIFAR, *track]
    cifar_main(["--output_dir", "out", *cifar_args])
    work = _workdir(tmp_path / "stopped", 64)
    monkeypatch.chdir(work)
    real_record, calls = stats.StatsRecorder.record, []

    def record_then_ctrl_c(self, *a, **k):
        calls.append(1)
        if len(calls) == 10:  # 4 minibatches per epoch: epoch 2, minibatch 1
            os.kill(os.getpid(), signal.SIGINT)
        return real_record(self, *a, **k)

    monkeypatch.setattr(stats.StatsRecorder, "record", record_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        cifar_main(["--output_dir", "out", *cifar_args])
    monkeypatch.setattr(stats.StatsRecorder, "record", real_record)
    (run_dir,) = (work / "out" / "runs").iterdir()
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert (state["epoch"], state["batch"]) == (2, 2)
    if track:  # 56 examples, minibatches of 16: two epochs and two minibatches of the third seen
        assert set(state["trackers"]) == set(TRACKER_NAMES)
        assert int(state["trackers"]["forgetting"]["state"]["presentations"].sum()) == 2 * 56 + 2 * 16
        with pytest.raises(UserError, match="was written with track='forgetting,margin"):
            cifar_main(["--output_dir", "out", *CIFAR, "--track", "forgetting", "--resume"])
    cifar_main(["--output_dir", "out", *cifar_args, "--resume"])
    assert_same_outputs(ref / "out", work / "out")
    if track:
        assert (run_dir / "tracked.npz").is_file()  # compared byte for byte above
        rows = testing.metrics_rows_without_time(run_dir / "metrics.jsonl")
        assert len(rows) == 6 and all("track/forgetting_events" in r and "track/plasticity" in r for r in rows)


def test_ctrl_c_is_deferred_to_the_end_of_the_minibatch(tmp_path, monkeypatch):
    _workdir(tmp_path, 256)
    monkeypatch.chdir(tmp_path)
    real_record, calls = stats.StatsRecorder.record, []

    def record_then_ctrl_c(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real_record(self, *a, **k)

    monkeypatch.setattr(stats.StatsRecorder, "record", record_then_ctrl_c)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when started in the background
    with pytest.raises(KeyboardInterrupt) as exc:
        mnist_main(["--output_dir", "out", *MNIST])
    assert not isinstance(exc.value, Terminated)
    state = torch.load(tmp_path / "out" / "runs" / MNIST_NAME / CHECKPOINT_NAME, weights_only=True)
    assert (state["epoch"], state["batch"]) == (0, 3)
    assert state["recorder"]["batch_sizes"] == [16, 16, 16]
    assert signal.getsignal(signal.SIGINT) is before  # handler given back


@pytest.fixture
def finished(tmp_path, monkeypatch):
    _workdir(tmp_path, 256)
    monkeypatch.chdir(tmp_path)
    argv = ["--output_dir", "out", *MNIST, "--epochs", "2"]
    mnist_main(argv)
    return argv


def test_resume_of_a_finished_run_is_refused(finished):
    with pytest.raises(UserError, match="holds a finished run"):
        mnist_main([*finished, "--resume"])
    with pytest.raises(UserError, match="already exists"):
        mnist_main(finished)


def test_resume_without_checkpoint_starts_from_the_beginning(tmp_path, monkeypatch, capsys):
    ref = _workdir(tmp_path / "ref", 256)
    monkeypatch.chdir(ref)
    argv = ["--output_dir", "out", *MNIST, "--epochs", "2"]
    mnist_main(argv)
    fresh = _workdir(tmp_path / "fresh", 256)
    monkeypatch.chdir(fresh)
    mnist_main([*argv, "--resume"])
    assert "no checkpoint" in capsys.readouterr().err
    assert_same_outputs(ref / "out", fresh / "out")


@pytest.mark.parametrize("change,message", [
    (["--lr", "0.02"], "written with lr=0.01"),
    (["--batch_size", "32"], "written with batch_size=16"),
])
def test_resume_with_other_flags_is_refused(tmp_path, monkeypatch, change, message):
    _workdir(tmp_path, 256)
    monkeypatch.chdir(tmp_path)
    real_record, calls = stats.StatsRecorder.record, []

    def record_then_ctrl_c(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_record(self, *a, **k)

    selected = [*MNIST, "--keep_lowest_n", "0"]  # the sorting file decides the training set
    monkeypatch.setattr(stats.StatsRecorder, "record", record_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        mnist_main(["--output_dir", "out", *selected])
    monkeypatch.setattr(stats.StatsRecorder, "record", real_record)
    with pytest.raises(UserError, match="holds an interrupted run"):
        mnist_main(["--output_dir", "out", *selected])
    with pytest.raises(UserError, match=message):
        mnist_main(["--output_dir", "out", *selected, *change, "--resume"])
    # another sorting file selects another training set: refused too
    (tmp_path / "in" / "s.pkl").write_bytes(pickle.dumps({"indices": np.arange(256)}))
    with pytest.raises(UserError, match="another training set"):
        mnist_main(["--output_dir", "out", *selected, "--resume"])


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    _workdir(tmp_path, 256)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "out" / "runs" / MNIST_NAME
    run_dir.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    torch.save({"format": 1, "x": Evil()}, run_dir / CHECKPOINT_NAME)
    with pytest.raises(UserError, match="is refused"):
        mnist_main(["--output_dir", "out", *MNIST, "--resume"])
    assert not (tmp_path / "pwned").exists()


def test_torn_temporary_files_of_a_killed_write_are_removed(tmp_path, monkeypatch):
    _workdir(tmp_path, 256)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    (out / "runs" / MNIST_NAME).mkdir(parents=True)
    torn = [out / f".{MNIST_NAME}__stats_dict.pkl.abc123.tmp", out / "runs" / MNIST_NAME / ".checkpoint.pt.x.tmp"]
    other = out / ".another_run__stats_dict.pkl.abc.tmp"
    for path in [*torn, other]:
        path.write_bytes(b"half")
    mnist_main(["--output_dir", "out", *MNIST, "--epochs", "1", "--resume"])
    assert not any(p.exists() for p in torn) and other.exists()


def test_resume_and_overwrite_contradict(tmp_path):
    with pytest.raises(UserError, match="contradict"):
        mnist_main(["--output_dir", str(tmp_path / "o"), *MNIST, "--resume", "--overwrite"])


def test_no_epoch_time_in_metrics_and_train_seconds_add_up(finished, tmp_path):
    rows = [json.loads(line) for line in (tmp_path / "out" / "runs" / MNIST_NAME / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1] and all("epoch_time" not in r for r in rows)
