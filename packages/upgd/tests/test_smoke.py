"""Every seed command line and learner, driven through the real CLI with tiny sizes and fake data."""

from __future__ import annotations

import math

import pytest
import torch
from upgd.seed_commands import SEED_HP_DIR, SEED_HPS, STUDENT_KEYS

TINY = ["--n_samples", "41", "--change_freq", "10", "--fake_data", "1", "--tensorboard", "0"]


def _check_stats_json(path, data, *, task, learner_dir, network, hp_dir, n_entries=5):
    assert path.parts[-5:] == (task, learner_dir, network, hp_dir, f"{data['seed']}.json")
    for key in ("losses", "accuracies", "plasticity_per_task", "n_dead_units_per_task", "weight_rank_per_task",
                "weight_l2_per_task", "weight_l1_per_task", "grad_l2_per_task", "grad_l0_per_task", "grad_l1_per_task"):
        values = data[key]
        assert len(values) == n_entries, key
        assert all(v is not None and math.isfinite(v) for v in values), key
    assert data["accuracies"][0] in (0.0, 1.0)
    assert all(0 <= v <= 1 for v in data["plasticity_per_task"] + data["n_dead_units_per_task"] + data["grad_l0_per_task"])
    assert all(0 < v <= 1 for v in data["weight_rank_per_task"])
    assert list(data)[:10] == ["losses", "accuracies", "plasticity_per_task", "task", "learner", "network",
                               "optimizer_hps", "n_samples", "seed", "n_dead_units_per_task"]


@pytest.mark.parametrize("learner", STUDENT_KEYS + ["upgd_dynamicclippedgradient"])
def test_seed_commands_cifar(run_cli, learner):
    stats_every = "1" if learner == "baseline" else "5"
    argv = ["--task", "label_permuted_cifar10_stats", "--learner", learner, *SEED_HPS,
            "--network", "convolutional_network_relu_with_hooks", *TINY, "--stats_every", stats_every]
    path, data = run_cli(argv)
    _check_stats_json(path, data, task="label_permuted_cifar10_stats", learner_dir=learner,
                      network="convolutional_network_relu_with_hooks", hp_dir=SEED_HP_DIR)
    assert data["optimizer_hps"] == {"lr": 0.01, "beta_utility": 0.999, "sigma": 0.001, "weight_decay": 0.0}
    assert data["learner"] == learner
    # The original's side file, in the working directory (the fixture's tmp_path): one line per run.
    finished = (path.parents[5] / f"finished_{learner}.txt").read_text().splitlines()
    assert len(finished) == 1
    assert finished[0].startswith(f"run_stats.py --task label_permuted_cifar10_stats --learner {learner} ")
    assert " time_elapsed: " in finished[0]


@pytest.mark.parametrize("learner", STUDENT_KEYS)
def test_seed_commands_mnist_conv(run_cli, learner):
    argv = ["--task", "input_permuted_mnist_stats", "--learner", learner, *SEED_HPS,
            "--network", "conv_mnist", *TINY, "--stats_every", "10"]
    path, data = run_cli(argv)
    # The student's MNIST conv net reports the CIFAR net's name, so its logs sit under that folder.
    _check_stats_json(path, data, task="input_permuted_mnist_stats", learner_dir=learner,
                      network="convolutional_network_relu_with_hooks", hp_dir=SEED_HP_DIR)


ORIGINAL = {
    "sgd": ["--lr", "0.001", "--weight_decay", "0.001"],
    "pgd": ["--lr", "0.001", "--sigma", "0.05"],
    "shrink_and_perturb": ["--lr", "0.001", "--sigma", "0.05", "--decay", "0.01"],
    "adam": ["--lr", "0.0001", "--weight_decay", "0.0", "--beta1", "0.0", "--beta2", "0.99", "--eps", "1e-8"],
    "ewc": ["--lr", "0.001", "--beta_weight", "0.9999", "--beta_fisher", "0.999", "--lamda", "1.0"],
    "mas": ["--lr", "0.001", "--beta_weight", "0.9999", "--beta_fisher", "0.999", "--lamda", "0.1"],
    "si": ["--lr", "0.001", "--beta_weight", "0.99", "--beta_importance", "0.99", "--lamda", "10.0"],
    "rwalk": ["--lr", "0.001", "--beta_weight", "0.9999", "--beta_importance", "0.99", "--lamda", "0.1"],
    "upgd_fo_global": ["--lr", "0.01", "--beta_utility", "0.9999", "--sigma", "0.1", "--weight_decay", "0.01"],
    "upgd_fo_local": ["--lr", "0.01", "--beta_utility", "0.9999", "--sigma", "0.1", "--weight_decay", "0.01"],
    "upgd_nonprotecting_fo_global": ["--lr", "0.001", "--beta_utility", "0.9", "--sigma", "0.1", "--weight_decay", "0.01"],
    "upgd_nonprotecting_fo_local": ["--lr", "0.001", "--beta_utility", "0.9", "--sigma", "0.1", "--weight_decay", "0.01"],
    "upgd_so_global": ["--lr", "0.01", "--beta_utility", "0.999", "--sigma", "0.01", "--weight_decay", "0.0"],
    "upgd_so_local": ["--lr", "0.01", "--beta_utility", "0.999", "--sigma", "0.01", "--weight_decay", "0.0"],
    "upgd_nonprotecting_so_global": ["--lr", "0.01", "--beta_utility", "0.999", "--sigma", "0.01"],
    "upgd_nonprotecting_so_local": ["--lr", "0.01", "--beta_utility", "0.999", "--sigma", "0.01"],
    "sgd_with_hesscale": ["--lr", "0.01"],
}


@pytest.mark.parametrize("learner", sorted(ORIGINAL))
def test_original_learners_mnist_fc(run_cli, learner):
    hps = ORIGINAL[learner]
    argv = ["--task", "input_permuted_mnist_stats", "--learner", learner, "--seed", "3", *hps,
            "--network", "fully_connected_relu_with_hooks", *TINY, "--stats_every", "10"]
    path, data = run_cli(argv)
    hp_dir = "_".join(f"{hps[i][2:]}_{float(hps[i + 1])}" for i in range(0, len(hps), 2))
    _check_stats_json(path, data, task="input_permuted_mnist_stats", learner_dir=learner,
                      network="fully_connected_relu_with_hooks", hp_dir=hp_dir)
    assert set(data["optimizer_hps"]) == {hps[i][2:] for i in range(0, len(hps), 2)}


FEATURE = [f"feature_upgd_{p}{o}_{s}" for p in ("", "nonprotecting_") for o in ("fo", "so") for s in ("global", "local")]


@pytest.mark.parametrize("learner", FEATURE)
def test_feature_learners_gates_run_py(run_cli, learner):
    argv = ["--task", "input_permuted_mnist", "--learner", learner, "--seed", "1", "--lr", "0.01",
            "--beta_utility", "0.9", "--sigma", "0.01", "--weight_decay", "0.001",
            "--network", "fully_connected_relu_gates", *TINY]
    path, data = run_cli(argv, mode="plain")
    assert len(data["losses"]) == 41 and len(data["accuracies"]) == 41
    assert all(math.isfinite(v) for v in data["losses"])


@pytest.mark.parametrize("task,inputs,classes", [("label_permuted_emnist_stats", 784, 47),
                                                  ("label_permuted_mini_imagenet_stats", 2048, 100)])
def test_other_tasks_sgd(run_cli, tmp_path, task, inputs, classes):
    models = tmp_path / "models"
    argv = ["--task", task, "--learner", "sgd", "--seed", "0", "--lr", "0.01", "--weight_decay", "0.0001",
            "--network", "fully_connected_relu_with_hooks", *TINY, "--stats_every", "10",
            "--save_model_dir", str(models)]
    path, data = run_cli(argv)
    _check_stats_json(path, data, task=task, learner_dir="sgd", network="fully_connected_relu_with_hooks",
                      hp_dir="lr_0.01_weight_decay_0.0001")
    # The network was sized by the task: its input and its number of classes (EMNIST balanced: 47).
    state = torch.load(models / f"model_sgd_{task}_final.pth", weights_only=True)
    weights = [v for k, v in state.items() if k.endswith("weight")]
    assert weights[0].shape[1] == inputs
    assert weights[-1].shape[0] == classes


def test_restarts_and_utility_task(run_cli):
    path, data = run_cli(["--task", "input_permuted_mnist_restarts", "--learner", "adam", "--lr", "0.0001",
                          "--network", "fully_connected_relu", *TINY], mode="restarts")
    assert len(data["accuracies"]) == 41
    path, data = run_cli(["--task", "weight_utils", "--learner", "sgd_with_hesscale", "--lr", "0.01",
                          "--network", "small_fully_connected_relu", "--n_samples", "50", "--tensorboard", "0"],
                         mode="plain")
    assert "accuracies" not in data and len(data["losses"]) == 50


def test_same_seed_same_json_different_seed_differs(run_cli, tmp_path):
    base = ["--task", "label_permuted_cifar10_stats", "--learner", "ratio_norm", "--lr", "0.01", "--beta_utility",
            "0.999", "--sigma", "0.1", "--weight_decay", "0.0", "--network", "convolutional_network_relu_with_hooks",
            *TINY, "--stats_every", "10"]
    _, a = run_cli([*base, "--seed", "5"], save_path=tmp_path / "a")
    _, b = run_cli([*base, "--seed", "5"], save_path=tmp_path / "b")
    _, c = run_cli([*base, "--seed", "6"], save_path=tmp_path / "c")
    strip = lambda d: {k: v for k, v in d.items() if k != "run_info"}  # noqa: E731
    assert strip(a) == strip(b)
    assert a["losses"] != c["losses"]


def test_side_files_and_tensorboard(run_cli, tmp_path):
    run_cli(["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1",
             "--network", "fully_connected_relu_with_hooks", "--n_samples", "30", "--change_freq", "10", "--fake_data", "1"])
    assert "time_elapsed" in (tmp_path / "finished_sgd.txt").read_text()
    runs = list((tmp_path / "logs" / "_runs").rglob("metrics.jsonl"))
    assert runs and len(runs[0].read_text().splitlines()) == 3  # one record per task boundary
    assert list((tmp_path / "logs" / "_runs").rglob("events.out.tfevents*"))


def test_run_offline_held_out(run_cli):
    path, data = run_cli(["--task", "label_permuted_emnist_offline", "--learner", "upgd_fo_global", "--lr", "0.01",
                          "--beta_utility", "0.9", "--sigma", "0.001", "--weight_decay", "0.0",
                          "--network", "fully_connected_relu", *TINY], mode="offline")
    assert len(data["held_out_averages"]) == 4 and len(data["held_out_accuracies"]) == 4  # tasks 2..5
    assert list(data)[:10] == ["losses", "accuracies", "task", "learner", "network", "optimizer_hps", "n_samples",
                               "seed", "held_out_averages", "held_out_accuracies"]
