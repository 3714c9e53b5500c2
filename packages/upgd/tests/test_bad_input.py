"""Bad input: one clear line, a non-zero exit, nothing overwritten; --print_config touches nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from forgetting_common.errors import UserError
from upgd.cli import main
from upgd.seed_commands import seed_command

PACKAGE = Path(__file__).resolve().parents[1]
FAKE = ["--n_samples", "12", "--change_freq", "4", "--fake_data", "1", "--tensorboard", "0", "--quiet"]


@pytest.mark.parametrize("argv,needle", [
    (["--task", "label_permuted_cifar", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks"],
     "valid tasks: feature_utils"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "upgd", "--network", "fully_connected_relu_with_hooks"],
     "valid learners: KernelConvexCombi"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "resnet"],
     "valid networks: conv_mnist"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
      "--beta_utility", "0.9"], "takes no hyper-parameter 'beta_utility'"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "baseline", "--lr"], "odd number of tokens"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
      "--lr", "fast"], "expected a number"),
    (["--learner", "sgd", "--network", "fully_connected_relu_with_hooks"], "--task is required"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
      "--n_samples", "1.5e3x"], "expected an integer"),
])
def test_bad_arguments_raise_user_error(argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=None) as err:
        main([*argv, "--save_path", str(tmp_path)])
    assert needle in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_dataset_names_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for task, what in (("input_permuted_mnist_stats", "MNIST"), ("label_permuted_cifar10_stats", "CIFAR10"),
                       ("label_permuted_emnist_stats", "EMNIST"), ("label_permuted_mini_imagenet_stats", "mini-ImageNet")):
        with pytest.raises(UserError) as err:
            main(["--task", task, "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
                  "--data_dir", str(tmp_path / "nowhere"), "--save_path", str(tmp_path / "logs"), "--quiet"])
        assert what in str(err.value) and "--data_dir" in str(err.value)


def test_finished_result_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1",
            "--network", "fully_connected_relu_with_hooks", "--save_path", str(tmp_path / "logs"), *FAKE]
    main(argv)
    result = next(p for p in (tmp_path / "logs").rglob("0.json"))
    before = result.read_bytes()
    with pytest.raises(UserError, match="already holds a finished result"):
        main(argv)
    assert result.read_bytes() == before
    main([*argv, "--overwrite", "1", "--seed", "0"])  # explicit opt-in replaces it


def test_repeated_hyper_parameter_keeps_first_position_last_value(tmp_path, monkeypatch):
    from upgd.cli import parse

    cfg, _, _ = parse(["--task", "label_permuted_cifar10_stats", "--learner", "baseline", "--network",
                       "convolutional_network_relu_with_hooks", "--lr", "0.1", "--sigma", "0.5", "--lr", "0.01"])
    assert cfg.hp_string() == "lr_0.01_sigma_0.5"


def test_print_config_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [*seed_command("ratio_norm"), "--data_dir", str(tmp_path / "nowhere"), "--save_path", str(tmp_path / "x"),
            "--print_config"]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["learner"] == "ratio_norm" and config["n_samples"] == 1000000 and config["lr"] == 0.01
    assert config["seed"] == 19 and config["network"] == "convolutional_network_relu_with_hooks"
    assert not any(tmp_path.iterdir())


def test_script_one_line_error_and_exit_code(tmp_path):
    script = PACKAGE / "core" / "run" / "run_stats.py"
    proc = subprocess.run([sys.executable, str(script), "--task", "label_permuted_cifar10_stats", "--learner",
                           "baseline", "--network", "nope", "--save_path", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_stats.py: error: unknown network 'nope'")
    assert not any(tmp_path.iterdir())


def test_failure_inside_run_writes_failed_files_and_raises(tmp_path, monkeypatch):
    import upgd.runner

    monkeypatch.chdir(tmp_path)

    def boom(net):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(upgd.runner, "weight_and_grad_stats", boom)
    argv = ["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1",
            "--network", "fully_connected_relu_with_hooks", "--save_path", str(tmp_path / "logs"), *FAKE]
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(argv)
    assert "label_permuted_digits_stats" in (tmp_path / "failed_sgd.txt").read_text()
    assert "simulated failure" in (tmp_path / "failed_sgd_msgs.txt").read_text()
    assert not list((tmp_path / "logs").rglob("0.json"))  # no result for a failed run


def test_save_model_dir_checkpoint(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    main(["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1", "--network",
          "fully_connected_relu_with_hooks", "--save_path", str(tmp_path / "logs"), "--save_model_dir",
          str(tmp_path / "models"), *FAKE])
    state = torch.load(tmp_path / "models" / "model_sgd_label_permuted_digits_stats_final.pth")
    assert state["linear_1.weight"].shape == (300, 64)
