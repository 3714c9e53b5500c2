"""Shared fixtures: drive the real command line in-process (one torch import for the suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1]
SCRIPT = PACKAGE / "mixed_group_training.py"

# The two command lines of the original README, verbatim.
C1 = ("--seed 1 --train_perc 0.1 --random_perc 0.1 --keep_perc 0.5 --train_iters 50000 "
      "--fname new_rand_reinit_train0.1_mislabel0.1 --no_wandb").split()
C2 = ("--seed 1 --train_perc 1 --random_perc 0.0 --keep_perc 0.3 --train_iters 50000 --weight_mask "
      "--reset_to_zero --rewind_to_init --margin_groups --fname new_weight_rewind_zero_train1_margin0.1 "
      "--no_wandb").split()


@pytest.fixture
def seeds():
    """The seed command lines (C1 KE-style, C2 IMP-style) as argument lists."""
    return list(C1), list(C2)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """``run_cli(argv)`` → run folder of ``mixed_group_training.py`` called in-process.

    Outputs go under ``tmp_path``; the environment's FORGETTING_DATA is left alone.
    """
    from targeted_forgetting.train import main

    def _run(argv, save_path=None):
        argv = list(argv)
        if "--save_path" not in argv:
            argv += ["--save_path", str(save_path or tmp_path / "runs")]
        if "--quiet" not in argv:
            argv.append("--quiet")
        return main(argv)

    return _run


@pytest.fixture
def records():
    def _read(run_dir):
        with open(Path(run_dir) / "metrics.jsonl") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    return _read


@pytest.fixture
def run_script():
    """Run the real script in a subprocess (used sparingly: each start costs seconds)."""

    def _run(argv, cwd):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        return subprocess.run([sys.executable, str(SCRIPT), *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)

    return _run
