"""Kill a tiny real search (and retrain.py, two_models.py) with SIGKILL (and SIGTERM) part-way, resume
it, and compare every output file with an uninterrupted run of the same seed (issue 13).

The uninterrupted run and the interrupted one run in two folders with the same relative paths
(``logs/<dataset>_<comment>``, ``data``), both with ``--resume=True`` as the CNN seed line has it,
so that even ``params.json`` and ``config.json`` must agree. ``train.log`` is the only file not
compared (wall-clock timestamps and the resume lines).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from forgetting_common import testing
from forgetting_common.safeload import load_checkpoint

PACKAGE = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
ENV.pop("FORGETTING_DATA", None)

RNN_ARGS = ("--num_gpu=0 --comment=kr --max_epoch=5 --start_using_fisher=1 --alpha_decay_after=2 --save_epoch=2 "
            "--set_fisher_zero_per_iter=2 --fisher_clip_by_norm=10 --alpha_fisher=60 --train_controller=True "
            "--start_training_controller=1 --shared_max_step=2 --num_batch_per_iter=2 --controller_max_step=6 "
            "--num_blocks=3 --shared_embed=16 --shared_hid=16 --controller_hid=8 --batch_size=4 "
            "--shared_rnn_max_length=5 --derive_num_sample=2 --log_step=2 --quiet --resume=True").split()
CNN_ARGS = ("--num_gpu=0 --comment=kr --dataset=cifar10 --network_type=micro_cnn --max_epoch=5 "
            "--cnn_final_filter_size=24 --cnn_num_repeat_normal=1 --num_blocks=2 --batch_size=4 --test_batch_size=4 "
            "--shared_max_step=2 --num_batch_per_iter=2 --controller_max_step=4 --derive_num_sample=2 --save_epoch=2 "
            "--log_step=2 --alpha_fisher=60 --alpha_decay=1 --shared_lr=0.1 --controller_hid=8 --train_controller=True --start_using_fisher=1 --alpha_decay_after=-1 "
            "--shared_valid_fisher=False --train_limit=64 --test_limit=16 --quiet --resume=True").split()


def folder(base: Path, data_root: Path) -> Path:
    base.mkdir()
    (base / "data").symlink_to(data_root, target_is_directory=True)
    return base


def run_inprocess(cwd: Path, argv: list[str], monkeypatch) -> None:
    from wpl_enas.run import main

    monkeypatch.chdir(cwd)
    main(argv)


def forgetting_epochs(run: Path) -> list[int]:
    path = run / "forgetting.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.endswith("}")]


def same_tree(a, b, path: str = "") -> None:
    """Tensors, dicts and lists equal bit for bit (the RunLog state's wall-clock fields aside)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        keys = set(a) - {"runlog"}
        assert keys == set(b) - {"runlog"}, path
        for k in keys:
            same_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def assert_same_files(expected: Path, got: Path) -> None:
    """Every output file equal: logs by rows/points (time aside), checkpoints by tensors, the rest by bytes."""
    files_a = sorted(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file())
    assert [f for f in files_a if not f.startswith("tensorboard/")] == \
        [f for f in files_b if not f.startswith("tensorboard/")]
    assert testing.metrics_rows_without_time(expected) == testing.metrics_rows_without_time(got)
    if (expected / "tensorboard").is_dir():
        scalars = testing.tensorboard_scalars(got / "tensorboard")
        assert scalars and scalars == testing.tensorboard_scalars(expected / "tensorboard")
        no_duplicate_points(got / "tensorboard")
    for rel in files_a:
        if rel == "train.log" or rel.startswith("tensorboard/") or rel == "metrics.jsonl":
            continue
        if rel.endswith(".pth"):
            same_tree(load_checkpoint(expected / rel), load_checkpoint(got / rel), rel)
        else:
            assert (expected / rel).read_bytes() == (got / rel).read_bytes(), rel


def no_duplicate_points(logdir: Path) -> None:
    points = testing.tensorboard_scalars(logdir)
    assert len(points) == len({(tag, step) for tag, step, _ in points})


@pytest.mark.parametrize("kind", ["rnn", "micro_cnn"])
def test_killed_then_resumed_equals_uninterrupted(tmp_path, data_root, monkeypatch, kind):
    args = RNN_ARGS if kind == "rnn" else CNN_ARGS
    name = ("ptb" if kind == "rnn" else "cifar10") + "_kr"
    a = folder(tmp_path / "a", data_root)
    b = folder(tmp_path / "b", data_root)
    run_inprocess(a, args, monkeypatch)

    run_b = b / "logs" / name
    main_py = [str(PACKAGE / "main.py"), *args]
    # SIGKILL in the middle of epoch 1: its shared-phase rows are written, its checkpoint is not
    rc = testing.run_until_then_kill(main_py, lambda: 1 in forgetting_epochs(run_b), cwd=b, env=ENV, timeout=120)
    assert rc == -signal.SIGKILL
    assert (run_b / "checkpoint.pth").is_file()
    if kind == "micro_cnn":
        # resumed, then stopped by SIGTERM in epoch 2: a message, exit 143, resumable again
        rc = testing.run_until_then_kill(main_py, lambda: 2 in forgetting_epochs(run_b), cwd=b, env=ENV,
                                         timeout=120, sig=signal.SIGTERM)
        assert rc == 143
        assert "interrupted in epoch 2" in (run_b / "train.log").read_text()
    run_inprocess(b, args, monkeypatch)
    assert_same_files(a / "logs" / name, run_b)
    epochs = int(next(x for x in args if x.startswith("--max_epoch=")).split("=")[1])
    assert forgetting_epochs(run_b) == list(range(1, epochs))  # each epoch once: the killed one's rows are gone


# -- retrain.py and two_models.py ------------------------------------------------------------
def write_rnn_dag(path: Path) -> None:
    from wpl_enas.dags import build_rnn_dag, dag_to_json

    path.write_text(json.dumps({"dag": dag_to_json(build_rnn_dag(["tanh", "ReLU", "sigmoid"], [0, 1], 3))}))


RETRAIN = ("--num_gpu=0 --comment=c --num_blocks=3 --shared_embed=16 --shared_hid=16 --batch_size=4 --shared_rnn_max_length=5 "
           "--test_batch_size=4 --retrain_epochs=5 --shared_decay_after=2 --dag=cell.json --output_dir=rt "
           "--resume=True --quiet").split()


def test_retrain_killed_then_resumed_equals_uninterrupted(tmp_path, data_root, monkeypatch):
    from wpl_enas.retrain import main

    a = folder(tmp_path / "a", data_root)
    b = folder(tmp_path / "b", data_root)
    for base in (a, b):
        write_rnn_dag(base / "cell.json")
    monkeypatch.chdir(a)
    main(RETRAIN)
    rc = testing.run_until_then_kill([str(PACKAGE / "retrain.py"), *RETRAIN], testing.exists(b / "rt" / "checkpoint.pth"),
                                     cwd=b, env=ENV, timeout=120)
    assert rc == -signal.SIGKILL and not (b / "rt" / "results.json").exists()
    monkeypatch.chdir(b)
    main(RETRAIN)
    assert_same_files(a / "rt", b / "rt")


TWO = "--dataset=clusters --epochs_a=1 --epochs_b=1 --arms=plain,wpl:100 --seeds=1,2,3,4 --output_dir=tm --resume --quiet"


def test_two_models_killed_then_resumed_equals_uninterrupted(tmp_path, data_root, monkeypatch):
    from wpl_enas.two_models import main

    a = folder(tmp_path / "a", data_root)
    b = folder(tmp_path / "b", data_root)
    monkeypatch.chdir(a)
    main(TWO.split())
    rc = testing.run_until_then_kill([str(PACKAGE / "two_models.py"), *TWO.split()],
                                     testing.exists(b / "tm" / "checkpoint.pth"), cwd=b, env=ENV, timeout=120)
    assert rc == -signal.SIGKILL and not (b / "tm" / "results.json").exists()
    monkeypatch.chdir(b)
    main(TWO.split())
    assert_same_files(a / "tm", b / "tm")
