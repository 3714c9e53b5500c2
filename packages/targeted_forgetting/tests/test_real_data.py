"""A short run on the real MNIST: forgetting hurts the mislabelled / hard group more.

Skipped unless FORGETTING_DATA points at a folder holding MNIST/raw. About 10 s of CPU.
Calibration (2-core x86-64 CPU, seeds 1 and 2, probes of the second half): KE-style drop
gap 16.2 / 14.9 points (noisy labels memorised to 91 / 89 %); IMP-style easy-minus-hard
accuracy after forgetting 38.5 / 36.7 points.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.real_data


def test_forgetting_is_targeted_on_real_mnist(run_cli, forgetting_data):
    common = ["--data_dir", str(forgetting_data("MNIST/raw")), "--seed", "1", "--no_wandb", "--no_plot", "--no_tensorboard",
              "--print_every", "50", "--device", "cpu"]
    # KE-style (C1 shortened): 1 200 examples, ~10 % random labels, memorised within 1 500 steps.
    ke = run_cli(common + ["--train_perc", "0.02", "--random_perc", "0.1", "--keep_perc", "0.5",
                           "--train_iters", "1500", "--fname", "ke"])
    s = json.loads((ke / "summary.json").read_text())["second_half"]
    assert s["group0_before"] > 95 and s["group1_before"] > 75  # noisy labels memorised
    assert s["group1_drop"] - s["group0_drop"] > 10  # mislabelled examples forgotten more
    assert s["group1_retention"] < s["group0_retention"]
    # IMP-style (C2 shortened): 6 000 clean examples, easy vs 10 % lowest-margin groups.
    imp = run_cli(common + ["--train_perc", "0.1", "--keep_perc", "0.3", "--train_iters", "1000",
                            "--weight_mask", "--reset_to_zero", "--rewind_to_init", "--margin_groups",
                            "--fname", "imp"])
    s = json.loads((imp / "summary.json").read_text())["second_half"]
    assert s["group0_after"] - s["group1_after"] > 10  # hard examples forgotten more
    assert s["group1_retention"] < s["group0_retention"]
