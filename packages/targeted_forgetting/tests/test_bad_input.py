"""Bad input: one line on stderr, a non-zero exit, nothing written or overwritten."""

from __future__ import annotations

import pytest
from forgetting_common.errors import UserError

BASE = ["--data_source", "synthetic", "--train_limit", "300", "--train_iters", "2", "--print_every", "1",
        "--no_wandb", "--no_plot"]


@pytest.mark.parametrize("flag,value", [
    ("--train_perc", "1.5"), ("--random_perc", "-0.1"), ("--keep_perc", "2"), ("--keep_perc", "nan"),
    ("--train_iters", "0"), ("--batch_size", "-3"), ("--print_every", "0"), ("--arch", "vgg"),
    ("--rewind_to_epoch", "-1"), ("--train_data", "svhn"),
])
def test_flag_values_out_of_range_are_usage_errors(run_cli, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(BASE + [flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv,message", [
    (["--keep_perc", "0"], "keeps no entry of fc1.weight"),
    (["--keep_perc", "0", "--same_mask", "--weight_mask"], "keeps no entry"),
    (["--arch", "conv4"], "does not fit --train_data mnist"),
    (["--train_data", "cifar10"], "--arch lenet does not fit --train_data cifar10"),
    (["--train_perc", "0.1"], "fewer than one batch"),
    (["--resume_path", "/nonexistent/ckpt.pt"], "--resume_path /nonexistent/ckpt.pt not found"),
    (["--group_vars", "sed"], "no such flag"),
    (["--device", "tpu"], "is not a device"),
])
def test_semantic_errors_raise_user_errors(run_cli, tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        run_cli(BASE + argv)
    assert not list((tmp_path / "runs").glob("*/config.json"))


def test_missing_dataset_names_the_layout_and_flag(run_cli, tmp_path):
    argv = ["--data_dir", str(tmp_path / "nothing"), "--no_download", "--train_iters", "2", "--no_wandb"]
    with pytest.raises(UserError, match=r"MNIST not found .*--data_dir"):
        run_cli(argv)


def test_resume_checkpoint_of_another_architecture(run_cli, tmp_path):
    import torch
    from targeted_forgetting.models import build_model

    path = tmp_path / "other.pt"
    torch.save({"state_dict": build_model("resnet18", "cifar10").state_dict()}, path)
    with pytest.raises(UserError, match="does not fit --arch"):
        run_cli(BASE + ["--resume_path", str(path)])


def test_script_prints_one_line_and_exits_2(run_script, tmp_path):
    done = tmp_path / "runs" / "base"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    result = run_script(BASE + ["--keep_perc", "0", "--save_path", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "mixed_group_training.py: error: --keep_perc 0.0 keeps no entry of fc1.weight (235200 entries at "
        "keep rate 0); use a keep fraction that leaves at least one weight per tensor"
    )
    assert (done / "config.json").read_text() == "{}"


def test_resume_file_that_is_not_a_checkpoint(run_cli, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"--resume_path .*notes.txt is (refused|not a readable checkpoint|not a checkpoint)"):
        run_cli(BASE + ["--resume_path", str(path)])


# --------------------------------------------------------------------------- the bad-input table
# input -> the one line on stderr -> exit status, through run_main exactly as the script runs.
TINY = ["--data_source", "synthetic", "--train_limit", "300", "--train_iters", "4", "--print_every", "2",
        "--no_wandb", "--no_plot", "--quiet", "--keep_perc", "0.5"]
P = "mixed_group_training.py: error: "
TABLE = [
    (["--lr", "-1"], P + "argument --lr: expected a finite number of zero or more, got '-1'", 2),
    (["--lr", "nan"], P + "argument --lr: expected a finite number of zero or more, got 'nan'", 2),
    (["--keep_perc", "1.5"], P + "argument --keep_perc: expected a number in [0, 1], got '1.5'", 2),
    (["--train_iters", "-5"], P + "argument --train_iters: expected a positive integer, got '-5'", 2),
    (["--checkpoint_every", "-1"], P + "argument --checkpoint_every: expected a non-negative integer, got '-1'", 2),
    (["--seed", "one"], P + "argument --seed: invalid int value: 'one'", 2),
    (["--arch", "vgg"], P + "argument --arch: invalid choice: 'vgg' (choose from 'lenet', 'conv4', 'resnet18')", 2),
    (["--resume_path", "/nonexistent/ckpt.pt"], P + "--resume_path /nonexistent/ckpt.pt not found", 2),
    (["--resume_path", "/"], P + "--resume_path / is a folder, not a file", 2),
    (["--save_path", "/sys/forgetting_ro"], P + "/sys/forgetting_ro: Operation not permitted", 2),
    (["--track", "forgetting,dead"], P + "argument --track: unknown tracker 'dead'; the trackers are "
     "forgetting,margin,dead_units,weight_rank,effective_rank,plasticity,ece,init_distance", 2),
]


def run_as_script(argv, capsys):
    from forgetting_common.errors import run_main
    from targeted_forgetting.train import main

    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(argv), prog="mixed_group_training.py")
    lines = capsys.readouterr().err.strip().splitlines()
    return lines, exit_info.value.code


@pytest.mark.parametrize("argv,line,code", TABLE, ids=[" ".join(a) for a, _, _ in TABLE])
def test_bad_input_table(argv, line, code, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines, status = run_as_script(TINY + argv, capsys)
    assert (lines[-1], status) == (line, code)
    assert len(lines) <= 2 and not any("Traceback" in x for x in lines)  # at most "writing to" before it


@pytest.mark.parametrize("err,reason", [(28, "No space left on device"), (30, "Read-only file system")])
def test_full_or_read_only_disk_is_one_line_and_leaves_no_half_file(err, reason, capsys, tmp_path, monkeypatch):
    """The disk fills up (or turns read-only) at the first checkpoint: one line, exit 2, earlier rows kept."""
    import forgetting_common.atomic as atomic

    real = atomic.atomic_write_bytes

    def failing(path, data):
        if str(path).endswith("checkpoint.pt"):
            raise OSError(err, reason, str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "atomic_write_bytes", failing)
    monkeypatch.chdir(tmp_path)
    lines, status = run_as_script(TINY + ["--train_iters", "10", "--checkpoint_every", "4", "--save_path", "runs"],
                                  capsys)
    assert status == 2 and lines[-1] == f"{P}runs/base/checkpoint.pt: {reason}"
    assert [p.name for p in (tmp_path / "runs/base").iterdir() if p.name.startswith(".")] == []
    assert len((tmp_path / "runs/base/metrics.jsonl").read_text().splitlines()) == 2  # probes 2 and 4


def test_corrupt_jpeg_is_one_line_naming_it(capsys, tmp_path, monkeypatch):
    import zipfile

    from forgetting_common.data.fake import write_cifar10_jpeg_zip

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    good = write_cifar10_jpeg_zip(tmp_path / "good", per_class_train=4, per_class_test=1)
    bad = tmp_path / "data" / "cifar10-jpeg" / "cifar10-jpeg.zip"
    bad.parent.mkdir(parents=True)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"\xff\xd8 not a jpeg" if name == "train/cat/0001.jpg" else src.read(name))
    monkeypatch.chdir(tmp_path)
    argv = ["--data_dir", str(tmp_path / "data"), "--train_data", "cifar10", "--arch", "resnet18",
            "--batch_size", "16", "--train_iters", "2", "--print_every", "2", "--no_wandb", "--no_plot", "--quiet"]
    lines, status = run_as_script(argv, capsys)
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith(P + "image ") and "train/cat/0001.jpg cannot be decoded" in lines[0]
    assert not (tmp_path / "exp_logged").exists()
