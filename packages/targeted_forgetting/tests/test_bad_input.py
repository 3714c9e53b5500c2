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
    (["--resume_path", "/nonexistent/ckpt.pt"], "no such file"),
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
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        run_cli(BASE + ["--resume_path", str(path)])
