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
