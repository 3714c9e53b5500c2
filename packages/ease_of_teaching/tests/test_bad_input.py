"""The bad-input table: input -> the one line on stderr -> exit status, through run_main as the scripts run.

Also: a full or read-only disk, a progress bar on a terminal, and no ``nan%``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
F = "forget_train.py: error: "
M = "mixed_language_forget_samebatch.py: error: "
TINY = ["--fname", "t", "--trainIters", "40", "--resetNum", "2", "--no_eot", "--quiet", "--no_wandb"]
TINY_MIXED = ["--fname", "m", "--trainIters", "3", "--quiet", "--no_wandb"]

FORGET_TABLE = [
    (["--sLearnRate", "-1"], F + "argument --sLearnRate: expected a finite number greater than zero, got '-1'"),
    (["--rLearnRate", "0"], F + "argument --rLearnRate: expected a finite number greater than zero, got '0'"),
    (["--weight_decay", "-0.1"], F + "argument --weight_decay: expected a finite number of zero or more, got '-0.1'"),
    (["--sLearnRate", "inf"], F + "argument --sLearnRate: expected a finite number greater than zero, got 'inf'"),
    (["--trainIters", "ten"], F + "argument --trainIters: expected a positive integer, got 'ten'"),
    (["--checkpoint_every", "-5"], F + "argument --checkpoint_every: expected a non-negative integer, got '-5'"),
    (["--seed", "1.5"], F + "argument --seed: invalid int value: '1.5'"),
    (["--sender_keep_perc", "2", "--forget_sender"],
     F + "argument --sender_keep_perc: expected a number in [0, 1], got '2'"),
    (["--device", "tpu"], F + "--device 'tpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
    (["--resetNum", "7"], F + "--resetNum 7 does not divide --trainIters 40; generations would have unequal "
                              "lengths (try --resetNum 5)"),
    (["--same_mask"], F + "--same_mask has no effect without --forget_sender or --forget_receiver"),
    (["--out_dir", "/sys/forgetting_ro"], F + "/sys/forgetting_ro: Operation not permitted"),
    (["--out_dir", "/proc/forgetting_ro"], F + "/proc/forgetting_ro: No such file or directory"),
]
MIXED_TABLE = [
    (["--sLearnRate", "-1"], M + "argument --sLearnRate: expected a finite number greater than zero, got '-1'"),
    (["--keep_perc", "-0.1"], M + "argument --keep_perc: expected a number in [0, 1], got '-0.1'"),
    (["--trainIters", "0"], M + "argument --trainIters: expected a positive integer, got '0'"),
    (["--checkpoint_every", "x"], M + "argument --checkpoint_every: expected a non-negative integer, got 'x'"),
    (["--resume", "--overwrite"], M + "--resume continues a run and --overwrite replaces it; pass one of them"),
    (["--reset_every", "3"], M + "--reset_every has no effect without --train_with_reset"),
    (["--group_vars", "nosuch"], M + "--group_vars names unknown option(s): nosuch"),
    (["--out_dir", "/sys/forgetting_ro"], M + "/sys/forgetting_ro: Operation not permitted"),
]


def run_as_script(main, prog, argv, capsys):
    from forgetting_common.errors import run_main

    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(argv), prog=prog)
    return capsys.readouterr().err.strip().splitlines(), exit_info.value.code


@pytest.mark.parametrize("argv,line", FORGET_TABLE, ids=[" ".join(a) for a, _ in FORGET_TABLE])
def test_forget_train_bad_input_table(argv, line, capsys, tmp_path, monkeypatch):
    from ease_of_teaching.train import main

    monkeypatch.chdir(tmp_path)
    lines, code = run_as_script(main, "forget_train.py", TINY + argv, capsys)
    assert (lines, code) == ([line], 2)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("argv,line", MIXED_TABLE, ids=[" ".join(a) for a, _ in MIXED_TABLE])
def test_mixed_language_bad_input_table(argv, line, capsys, tmp_path, monkeypatch):
    from ease_of_teaching.mixed_language import main

    monkeypatch.chdir(tmp_path)
    lines, code = run_as_script(main, "mixed_language_forget_samebatch.py", TINY_MIXED + argv, capsys)
    assert (lines, code) == ([line], 2)


def test_existing_run_is_refused_with_the_way_out(capsys, tmp_path, monkeypatch):
    from ease_of_teaching.mixed_language import main as mixed_main
    from ease_of_teaching.train import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").mkdir()
    (tmp_path / "t/config.json").write_text("{}")
    lines, code = run_as_script(main, "forget_train.py", TINY, capsys)
    assert (lines, code) == ([F + "t already holds a finished or running run (config.json); continue it with "
                                  "--resume, or replace it with --overwrite"], 2)
    (tmp_path / "m").mkdir()
    (tmp_path / "m/config.json").write_text("{}")
    lines, code = run_as_script(mixed_main, "mixed_language_forget_samebatch.py", TINY_MIXED, capsys)
    assert (lines, code) == ([M + "m already holds a finished or running run (config.json); continue it with "
                                  "--resume, or replace it with --overwrite"], 2)
    assert (tmp_path / "t/config.json").read_text() == "{}"


@pytest.mark.parametrize("err,reason,target", [
    (28, "No space left on device", "t/checkpoint.pt"),      # the disk fills up during training
    (30, "Read-only file system", "t/seed0_example_tracker.h5"),  # or turns read-only at the end
])
def test_full_or_read_only_disk_is_one_line_and_leaves_no_half_file(err, reason, target, capsys, tmp_path,
                                                                    monkeypatch):
    import forgetting_common.atomic as atomic
    from ease_of_teaching.train import main

    real = atomic.atomic_write_bytes

    def failing(path, data):
        if str(path).endswith(Path(target).name):
            raise OSError(err, reason, str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", failing)
    monkeypatch.setattr("ease_of_teaching.outputs.atomic_write_bytes", failing)
    monkeypatch.chdir(tmp_path)
    lines, code = run_as_script(main, "forget_train.py", TINY + ["--checkpoint_every", "10", "--track_examples"],
                                capsys)
    assert (lines[-1], code) == (f"{F}{target}: {reason}", 2)
    assert len(lines) == 2 and lines[0] == "forget_train.py: writing to t"
    assert not [p.name for p in (tmp_path / "t").iterdir() if p.name.startswith(".")]  # no temporary left


def test_short_ease_of_teaching_prints_no_nan(capsys, tmp_path):
    """--eot_iters 50: the line reports the mean over the 50 iterations there are, not nan%."""
    from ease_of_teaching.train import main

    main(["--fname", "e", "--no_wandb", "--trainIters", "40", "--resetNum", "2", "--eot_iters", "50",
          "--eot_receivers", "2", "--out_dir", str(tmp_path), "--device", "cpu"])
    text = capsys.readouterr().out
    assert "mean accuracy over the first 50 iterations" in text and "nan%" not in text


def test_progress_bar_on_a_terminal_even_one_that_reports_no_size(tmp_path):
    """A pty as the terminal (0 x 0, as some ptys report): the bar is drawn, and the lines stay whole."""
    import pty
    import subprocess

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(PACKAGE / "forget_train.py"), "--fname", "p", "--trainIters", "300",
                             "--resetNum", "3", "--no_eot", "--no_wandb"],
                            cwd=tmp_path, stdin=follower, stdout=follower, stderr=follower,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "p:" in text and "300/300" in text and "it/s" in text  # the bar, to its end
    assert "\nIteration 100 Sender loss" in text.replace("\r", "\n")  # printed above the bar, whole
