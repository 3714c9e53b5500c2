"""The bad-input table of the README: input -> expected first line -> exit code, through run_main as the scripts run.

Each case runs the real entry point in-process (``runner.error``) and checks that stderr is exactly one line
(no traceback), what it says, the exit code, and that nothing half-written was left behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
import zipfile

import pytest
from forgetting_common.data import fake

TINY = ["--arch", "resnet20s", "--epochs", "1", "--batch_size", "16", "--meta_batch_size", "10",
        "--meta_batch_number", "2", "--seed", "1", "--device", "cpu", "--quiet", "--test_limit", "16"]
SYN = ["--data_source", "synthetic", "--image_size", "8"]


def first_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def no_temp_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")] if folder.exists() else True


# (extra flags, expected first line (a prefix is enough where the rest names a temporary path), exit code)
TABLE = [
    (["--lr", "-1"], "LURE_main.py: error: argument --lr: expected a finite number greater than zero, got '-1'", 2),
    (["--lr", "nan"], "LURE_main.py: error: argument --lr: expected a finite number greater than zero, got 'nan'", 2),
    (["--lr", "0"], "LURE_main.py: error: argument --lr: expected a finite number greater than zero, got '0'", 2),
    (["--state_lr", "-0.1"], "LURE_main.py: error: argument --state_lr: expected a finite number greater than zero", 2),
    (["--momentum", "-0.9"], "LURE_main.py: error: argument --momentum: expected a finite number of zero or more", 2),
    (["--weight_decay=-1e-4"], "LURE_main.py: error: argument --weight_decay: expected a finite number of zero or "
                                  "more", 2),
    (["--gamma", "0"], "LURE_main.py: error: argument --gamma: expected a finite number greater than zero", 2),
    (["--shrink", "inf"], "LURE_main.py: error: argument --shrink: expected a finite number of zero or more", 2),
    (["--perturb", "-1"], "LURE_main.py: error: argument --perturb: expected a finite number of zero or more", 2),
    (["--snip_size", "1.5"], "LURE_main.py: error: argument --snip_size", 2),
    (["--epochs", "0"], "LURE_main.py: error: argument --epochs", 2),
    (["--batch_size", "x"], "LURE_main.py: error: argument --batch_size", 2),
    (["--arch", "resnet7"], "LURE_main.py: error: argument --arch: invalid choice: 'resnet7'", 2),
    (["--dataset", "imagenet"], "LURE_main.py: error: argument --dataset: invalid choice: 'imagenet'", 2),
    (["--no_such_flag"], "LURE_main.py: error: unrecognized arguments: --no_such_flag", 2),
    (["-no_replay", "-one_replay"], "LURE_main.py: error: conflicting replay flags: -no_replay and -one_replay", 2),
    (["--decreasing_lr", "20,x"], "LURE_main.py: error: --decreasing_lr '20,x': expected comma-separated integers", 2),
    (["--meta_batch_size", "6250", "--meta_batch_number", "9"], "LURE_main.py: error: --meta_batch_size 6250 x "
                                                                "--meta_batch_number 9 needs 50625 training examples", 2),
]


@pytest.mark.parametrize("extra,line,code", TABLE, ids=[" ".join(t[0]) for t in TABLE])
def test_bad_flags(runner, tmp_path, extra, line, code):
    got, err = runner.error(["--save_dir", tmp_path / "S", *TINY, *SYN, *extra])
    assert got == code and first_line(err).startswith(line), err
    assert not (tmp_path / "S" / "results.json").exists()


def test_alma_negative_lr(runner, tmp_path):
    got, err = runner.error(["--save_dir", tmp_path / "S", *TINY, *SYN, "--lr", "-0.1"], alma=True)
    assert got == 2 and first_line(err).startswith("ALMA.py: error: argument --lr: expected a finite number greater")


def test_no_save_dir(runner):
    got, err = runner.error([*TINY, *SYN])
    assert got == 2 and first_line(err).startswith("LURE_main.py: error: --save_dir is required")


def test_save_dir_is_a_file(runner, tmp_path):
    (tmp_path / "F").write_text("x")
    got, err = runner.error(["--save_dir", tmp_path / "F", *TINY, *SYN])
    assert got == 2 and first_line(err) == f"LURE_main.py: error: --save_dir {tmp_path / 'F'} exists and is not a folder"


def test_missing_data(runner, tmp_path):
    got, err = runner.error(["--data", tmp_path / "nothing", "--save_dir", tmp_path / "S", *TINY])
    line = first_line(err)
    assert got == 2 and line.startswith("LURE_main.py: error: CIFAR10 not found") and "--data" in line


def test_missing_checkpoint(runner, tmp_path):
    got, err = runner.error(["--save_dir", tmp_path / "S", *TINY, *SYN, "--resume", "--checkpoint", tmp_path / "no"])
    assert got == 2 and first_line(err) == f"LURE_main.py: error: --resume checkpoint {tmp_path / 'no'} not found"


def test_checkpoint_is_a_folder(runner, tmp_path):
    got, err = runner.error(["--save_dir", tmp_path / "S", *TINY, *SYN, "--resume", "--checkpoint", tmp_path])
    assert got == 2 and first_line(err) == f"LURE_main.py: error: --resume checkpoint {tmp_path} is a folder, not a file"


def test_output_folder_that_cannot_exist(runner):
    got, err = runner.error(["--save_dir", "/proc/lure_no_such_folder/S", *TINY, *SYN])
    assert got == 2 and first_line(err).startswith("LURE_main.py: error: /proc/lure_no_such_folder")


def test_read_only_output_folder(runner, tmp_path, monkeypatch):
    """A read-only file system refuses to create the temporary file of the first atomic write."""
    def read_only(*args, dir=None, **kwargs):  # noqa: A002 (mkstemp's own name)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    got, err = runner.error(["--save_dir", tmp_path / "S", *TINY, *SYN])
    assert got == 2 and first_line(err) == f"LURE_main.py: error: {tmp_path / 'S' / 'wb_offline' / 'config.json'}: Read-only file system"


def test_full_disk_mid_run_leaves_no_half_written_file(runner, tmp_path, monkeypatch):
    """The disk fills up while the first epoch's checkpoint is written (the third atomic write)."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:  # config.json, randinit.pth.tar, then 1checkpoint.pth.tar
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    got, err = runner.error(["--save_dir", tmp_path / "S", *TINY, *SYN])
    assert got == 2 and first_line(err).endswith(": No space left on device")
    assert (tmp_path / "S" / "randinit.pth.tar").is_file() and not (tmp_path / "S" / "1checkpoint.pth.tar").exists()
    assert no_temp_files(tmp_path / "S")


def test_corrupt_jpeg_in_cifar10_zip(runner, tmp_path):
    zpath = fake.write_cifar10_jpeg_zip(tmp_path / "d", per_class_train=10, per_class_test=2)
    members = {}
    with zipfile.ZipFile(zpath) as z:
        for info in z.infolist():
            members[info.filename] = z.read(info)
    broken = sorted(n for n in members if n.endswith(".jpg") and n.startswith("train/cat/"))[0]
    members[broken] = members[broken][:40]  # a truncated JPEG
    with zipfile.ZipFile(zpath, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    got, err = runner.error(["--data", tmp_path / "d", "--val_offset", "80", "--save_dir", tmp_path / "S", *TINY])
    line = first_line(err)
    assert got == 2 and line.startswith("LURE_main.py: error: image ") and broken in line and "cannot be decoded" in line


def test_corrupt_jpeg_in_restricted_imagenet_folder(runner, tmp_path):
    fake.write_image_folder(tmp_path / "rin", ("train", "val"), classes=14, per_class=3, size=12)
    broken = sorted((tmp_path / "rin" / "val").rglob("*.jpg"))[0]
    broken.write_bytes(b"\xff\xd8\xff not really a JPEG")
    got, err = runner.error(["--dataset", "restricted_imagenet", "--imagenet_path", tmp_path / "rin", "--image_size",
                             "8", "--val_offset", "30", "--meta_batch_size", "10", "--save_dir", tmp_path / "S", *TINY])
    assert got == 2 and first_line(err).startswith(f"LURE_main.py: error: image {broken} cannot be decoded")
    assert no_temp_files(tmp_path / "S")


def test_help_lists_the_originals_flags_and_ours(runner, capsys):
    from lure.cli import build_parser

    for alma in (False, True):
        text = build_parser(alma).format_help()
        for flag in ("--resume", "--checkpoint", "--save_dir", "-no_replay", "-wb", "--meta_batch_size", "--overwrite",
                     "--log-dir", "--data_source"):
            assert flag in text, (alma, flag)
    assert "--llf_by_stage" in build_parser(False).format_help()
