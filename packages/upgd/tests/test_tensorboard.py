"""TensorBoard read back from the event files: namespaced tags, one point per logged row, steps
increasing per tag, values equal to metrics.jsonl (whose keys stay the original's)."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from forgetting_common.runlog import read_metrics
from forgetting_common.testing import tensorboard_scalars

TAGS = {"task_accuracy": "train/task_accuracy", "task_loss": "train/task_loss",
        "task_plasticity": "stats/task_plasticity", "task_dead_units": "stats/task_dead_units",
        "loss": "train/loss", "accuracy": "train/accuracy"}


def _read_back(save_path):
    (run_dir,) = {p.parent for p in (save_path / "_runs").rglob("metrics.jsonl")}
    points = defaultdict(list)
    for tag, step, value in tensorboard_scalars(run_dir / "tensorboard"):
        points[tag].append((step, value))
    return read_metrics(run_dir / "metrics.jsonl"), points


def _check(rows, points, expected_tags, expected_steps):
    assert set(points) == expected_tags
    for tag, series in points.items():
        steps = [s for s, _ in series]
        assert steps == expected_steps, tag  # once per logged row, increasing
    for row in rows:
        for key, value in row.items():
            if key in ("step", "time", "task"):
                continue
            (drawn,) = [v for s, v in points[TAGS.get(key, f"stats/{key}")] if s == row["step"]]
            assert math.isclose(drawn, value, rel_tol=1e-6), key
    assert all(set(row) - {"step", "time", "task"} <= set(TAGS) | {k for k in row if k.startswith("global_")}
               for row in rows)


def test_stats_loop_tags(run_cli, tmp_path):
    run_cli(["--task", "label_permuted_digits_stats", "--learner", "upgd_fo_global", "--lr", "0.1",
             "--beta_utility", "0.999", "--sigma", "0.001", "--weight_decay", "0.0",
             "--network", "fully_connected_relu_with_hooks", "--n_samples", "31", "--change_freq", "10",
             "--fake_data", "1", "--stats_every", "5"])
    rows, points = _read_back(tmp_path / "logs")
    assert [r["step"] for r in rows] == [0, 10, 20, 30] and [r["task"] for r in rows] == [0, 1, 2, 3]
    _check(rows, points, {"train/task_accuracy", "train/task_loss", "stats/task_plasticity",
                          "stats/task_dead_units"}, [0, 10, 20, 30])


@pytest.mark.parametrize("mode", ["plain", "restarts"])
def test_plain_loop_tags(run_cli, tmp_path, mode):
    task = "input_permuted_mnist_restarts" if mode == "restarts" else "label_permuted_digits"
    run_cli(["--task", task, "--learner", "sgd", "--lr", "0.01", "--network", "fully_connected_relu",
             "--n_samples", "30", "--change_freq", "10", "--fake_data", "1"], mode=mode)
    rows, points = _read_back(tmp_path / "logs")
    _check(rows, points, {"train/loss", "train/accuracy"}, [9, 19, 29])


def test_utility_loop_tags(run_cli, tmp_path):
    run_cli(["--task", "weight_utils", "--learner", "upgd_fo_global", "--lr", "0.01", "--beta_utility", "0.9",
             "--sigma", "0.01", "--weight_decay", "0.0", "--network", "small_fully_connected_relu",
             "--n_samples", "200"], mode="utility")
    rows, points = _read_back(tmp_path / "logs")
    assert "train/loss" in points and len(points) > 1
    assert all(tag == "train/loss" or tag.startswith("stats/global_") for tag in points)
    _check(rows, points, set(points), [99, 199])
