"""Shared fixtures: generated datasets (spec §7.1), a working folder per test, in-process runs.

Real-data tests take ``forgetting_data`` (the forgetting_common pytest plugin).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

PACKAGE = Path(__file__).resolve().parents[1]

RNN_TINY = ("--num_gpu=0 --comment=2018-02-15_11-20-02 --max_epoch=4 --start_using_fisher=1 --alpha_decay_after=2 "
            "--save_epoch=3 --shared_max_step=2 --num_batch_per_iter=2 --controller_max_step=3 --num_blocks=3 "
            "--shared_embed=16 --shared_hid=16 --controller_hid=8 --batch_size=4 --shared_rnn_max_length=5 "
            "--derive_num_sample=2 --log_step=1 --quiet").split()
CNN_TINY = ("--num_gpu=0 --max_epoch=4 --cnn_final_filter_size=24 --cnn_num_repeat_normal=1 --num_blocks=2 "
            "--batch_size=4 --test_batch_size=4 --shared_max_step=2 --num_batch_per_iter=2 --controller_max_step=3 "
            "--derive_num_sample=2 --save_epoch=2 --log_step=1 --num_workers=0 --controller_hid=8 --quiet").split()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    from wpl_enas.fixtures import write_all

    return write_all(tmp_path_factory.mktemp("wpl_data") / "data")


@pytest.fixture
def workdir(tmp_path, data_root, monkeypatch) -> Path:
    """A fresh working folder holding ``data`` (a link to the generated datasets); cwd is set to it."""
    (tmp_path / "data").symlink_to(data_root, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FORGETTING_DATA", raising=False)
    return tmp_path


@pytest.fixture
def rnn_tiny():
    return list(RNN_TINY)


@pytest.fixture
def cnn_tiny():
    return list(CNN_TINY)

