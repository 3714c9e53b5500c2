"""Shared fixtures: in-process runs of the two scripts with tiny sizes, outputs under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1]

@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def package_dir() -> Path:
    return PACKAGE


@pytest.fixture
def run_forget(tmp_path):
    """``run_forget(cmdline, *extra)`` -> (summary, run folder); tiny EoT unless overridden."""
    from ease_of_teaching.train import main

    def _run(cmdline: str, *extra: str):
        argv = cmdline.split() + ["--out_dir", str(tmp_path), "--quiet", "--device", "cpu",
                                  "--eot_receivers", "3", "--eot_iters", "20", *extra]
        summary = main(argv)
        fname = argv[argv.index("--fname") + 1]
        return summary, tmp_path / fname

    return _run


@pytest.fixture
def run_mixed(tmp_path):
    from ease_of_teaching.cli import MixedConfig, build_mixed_parser
    from ease_of_teaching.mixed_language import main, run_folder

    def _run(cmdline: str, *extra: str):
        argv = cmdline.split() + ["--out_dir", str(tmp_path), "--quiet", "--device", "cpu", "--no_wandb", *extra]
        summary = main(argv)
        return summary, run_folder(MixedConfig.from_namespace(build_mixed_parser().parse_args(argv)))

    return _run


@pytest.fixture
def read_json():
    return lambda p: json.loads(Path(p).read_text())
