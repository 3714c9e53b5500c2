"""Bad input: one clear line, a non-zero exit, nothing written or overwritten."""

from __future__ import annotations

import subprocess
import sys

import pytest
from forgetting_common.errors import UserError
from llf_ke.fake import write_fake_folder_set


def _argv(data, ckpt, *extra):
    return ["--epochs", "1", "--num_generations", "2", "--name", "bad", "--weight_decay", "0.0001",
            "--arch", "Split_ResNet18", "--set", "Flower102", "--data", str(data), "--no_wandb",
            "--device", "cpu", "--image_size", "16", "-t", "0", "--checkpoints_dir", str(ckpt), "--quiet", *extra]


def test_class_count_mismatch_subprocess(tmp_path, helpers):
    """The real script: one line on stderr, exit status 2, no output folder."""
    write_fake_folder_set(tmp_path / "data", "Flower102", 5, {"train": 1, "val": 1, "test": 1}, size=8)
    proc = subprocess.run([sys.executable, str(helpers.script_path),
                           *_argv(tmp_path / "data", tmp_path / "ckpt", "--reset_layer_name", "layer4")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "5 class folders but Flower102 has 102" in lines[0]
    assert not (tmp_path / "ckpt").exists()


def test_missing_dataset_names_layout_and_fix(script, tmp_path):
    with pytest.raises(UserError, match=r"Flower102/\{train,val,test\}/<class>/.*prepare_flower102"):
        script.main(_argv(tmp_path / "nothing", tmp_path / "ckpt"))
    assert not (tmp_path / "ckpt").exists()


def test_reset_layer_name_matching_nothing(script, fake_root, tmp_path):
    with pytest.raises(UserError, match="--reset_layer_name 'layer9' matches no parameter"):
        script.main(_argv(fake_root, tmp_path / "ckpt", "--reset_layer_name", "layer9"))
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("rate", ["1", "1.5", "0"])
def test_split_rate_out_of_range(script, tmp_path, rate):
    with pytest.raises(UserError, match="--split_rate"):
        script.main(_argv(tmp_path, tmp_path / "ckpt", "--split_rate", rate, "--split_mode", "kels"))


@pytest.mark.parametrize("extra,needle", [
    (("--arch", "ResNet9000"), "invalid choice"),
    (("--set", "ImageNet"), "invalid choice"),
    (("--epochs", "ten"), "invalid int"),
    (("--track", "forgetting,bogus"), "unknown tracker 'bogus'; the trackers are forgetting,margin,"),
])
def test_argparse_errors_are_one_line(script, tmp_path, capsys, extra, needle):
    with pytest.raises(SystemExit) as info:
        script.main(_argv(tmp_path, tmp_path / "ckpt", *extra))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


@pytest.mark.parametrize("extra,needle", [
    (("--arch", "Split_densenet121"), "DenseNet and GoogLeNet"),
    (("--scale-fan",), "scale-fan"),
    (("--optimizer", "lbfgs"), "--optimizer"),
    (("--freeze_non_reset",), "needs --reset_layer_name"),
    (("--fix_seed",), "needs --seed"),
    (("--split_mode", "kels", "--reset_hypothesis"), "WELS"),
    (("--device", "cuda:7"), "cuda"),
])
def test_other_user_errors(script, fake_root, tmp_path, extra, needle):
    with pytest.raises(UserError, match=needle):
        script.main(_argv(fake_root, tmp_path / "ckpt", *extra))


def test_finished_run_is_not_overwritten(runs, script, fake_root, helpers):
    exp = runs.get("long", "S3", epochs=2, generations=1, extra=("--eval_intermediate_tst", "1", "--init_seed", "0"))
    csv = next(exp.glob("*.csv"))
    before = csv.read_bytes()
    argv = helpers.smoke_argv("S3", fake_root, exp.parents[1], epochs=2, generations=1, name="smoke_long",
                              extra=("--eval_intermediate_tst", "1", "--init_seed", "0"))
    with pytest.raises(UserError, match="already holds a run"):
        script.main(argv)
    with pytest.raises(UserError, match="finished run"):
        script.main([*argv, "--resume"])
    assert csv.read_bytes() == before


# ---- the bad-input table (README "Bad input"): input -> first line on stderr -> exit status

TABLE = [
    # (extra flags, expected text of the one stderr line, exit status)
    (["--lr", "-1"], "argument --lr/--learning-rate: expected a finite number greater than zero, got '-1'", 2),
    (["--lr", "nan"], "argument --lr/--learning-rate: expected a finite number greater than zero, got 'nan'", 2),
    (["--momentum", "-0.9"], "argument --momentum: expected a finite number of zero or more, got '-0.9'", 2),
    (["--wd", "-1"], "argument --wd/--weight_decay: expected a finite number of zero or more, got '-1'", 2),
    (["--label_smoothing", "1.5"], "--label_smoothing 1.5: must be in [0, 1)", 2),
    (["--epochs", "0"], "--epochs 0: must be at least 1", 2),
    (["--batch_size", "0"], "--batch_size 0: must be at least 1", 2),
    (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'", 2),
    (["--split_rate", "1.5"], "--split_rate 1.5: must be above 0 and below 1", 2),
    (["--split_rate", "nan"], "--split_rate nan: must be above 0 and below 1", 2),
    (["--arch", "ResNet9000"], "argument -a/--arch: invalid choice: 'ResNet9000'", 2),
    (["--split_mode", "xyz"], "argument --split_mode: invalid choice: 'xyz'", 2),
    (["--data", "{tmp}/nowhere"], "Folder train split not found at {tmp}/nowhere/Folder/train", 2),
    (["--resume", "{tmp}/missing.pth"], "--resume {tmp}/missing.pth: no such checkpoint file", 2),
    (["--resume", "{tmp}/text.pth"], "--resume checkpoint {tmp}/text.pth is not a checkpoint (neither torch's zip format nor a pickle)", 2),
    (["--resume", "{tmp}"], "--resume checkpoint {tmp} is a folder, not a file", 2),
    (["--resume", "{tmp}/list.pth"], "--resume {tmp}/list.pth: neither a run checkpoint of this program nor a model checkpoint", 2),
    (["--pretrained", "{tmp}/missing.pth"], "--pretrained {tmp}/missing.pth: no such checkpoint file", 2),
    (["--pretrained", "{tmp}/text.pth"], "--pretrained checkpoint {tmp}/text.pth is not a checkpoint (neither torch's zip format nor a pickle)", 2),
]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    write_fake_folder_set(root, "Folder", 4, {"train": 3, "val": 2, "test": 2}, size=12)
    return root


def _small_argv(data, ckpt, *extra):
    return ["--epochs", "1", "--num_generations", "2", "--name", "bad", "--set", "Folder", "--data", str(data),
            "--no_wandb", "--device", "cpu", "--image_size", "16", "-t", "0", "--test_interval", "1",
            "--checkpoints_dir", str(ckpt), "--quiet", *extra]


def _one_line(script, argv, capsys) -> tuple[str, int]:
    """Run the script's entry point as the command line does; its stderr must be one line."""
    import signal

    from forgetting_common.errors import run_main

    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as info:
            run_main(lambda: script.main(argv), prog="train_KE_cls.py")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # run_main installed its handler in this process
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0], info.value.code


@pytest.mark.parametrize("extra,expected,code", TABLE, ids=[" ".join(t[0]) for t in TABLE])
def test_bad_input_table(script, small_folder, tmp_path, capsys, extra, expected, code):
    import torch

    (tmp_path / "text.pth").write_text("hello")  # a text file given as a checkpoint
    torch.save([1, 2, 3], tmp_path / "list.pth")
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    line, status = _one_line(script, _small_argv(small_folder, tmp_path / "ckpt", *extra), capsys)
    assert line.startswith("train_KE_cls.py: error: ")
    assert expected.replace("{tmp}", str(tmp_path)) in line
    assert status == code
    assert not (tmp_path / "ckpt").exists()  # refused before anything was written


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_image_is_one_line_naming_it(script, tmp_path, capsys, workers):
    """A truncated JPEG in the train folder: one line naming the file, also from a loader worker."""
    data = tmp_path / "data"
    write_fake_folder_set(data, "Folder", 4, {"train": 3, "val": 2, "test": 2}, size=12)
    bad = data / "Folder" / "train" / "002" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    argv = _small_argv(data, tmp_path / "ckpt", "-t", workers)
    line, status = _one_line(script, argv, capsys)
    assert line.startswith(f"train_KE_cls.py: error: image {bad} cannot be decoded (") and status == 2


def test_read_only_output_folder(script, small_folder, tmp_path, capsys, monkeypatch):
    """A read-only mount (EROFS; chmod does not stop root, so the error is simulated)."""
    import errno
    import os

    real_mkdir = os.mkdir
    ckpt = tmp_path / "ckpt"

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(ckpt)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    line, status = _one_line(script, _small_argv(small_folder, ckpt), capsys)
    assert line.startswith(f"train_KE_cls.py: error: {ckpt}") and line.endswith(": Read-only file system")
    assert status == 2


def test_full_disk(script, small_folder, tmp_path, capsys, monkeypatch):
    """ENOSPC while a file is written: one line, and no half-written file left behind."""
    import errno
    import os

    from forgetting_common import atomic

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)
    line, status = _one_line(script, _small_argv(small_folder, tmp_path / "ckpt"), capsys)
    assert line.startswith("train_KE_cls.py: error: ") and line.endswith("No space left on device")
    assert status == 2
    assert not [p for p in (tmp_path / "ckpt").rglob("*") if p.name.endswith(".tmp")]
    assert not list((tmp_path / "ckpt").rglob("config.json"))
