import json

import pytest
from forgetting_common.atomic import atomic_torch_save, atomic_write_json
from forgetting_common.errors import UserError
from forgetting_common.runlog import RunLog, init_wandb, read_metrics, wandb_available


def test_runlog_writes_config_metrics_and_tensorboard(tmp_path):
    run = tmp_path / "run"
    with RunLog.create(run, config={"lr": 0.1, "dims": (3, 4)}, quiet=True) as log:
        log.log({"loss": 1.5, "acc": 0.25, "note": "x"}, step=0)
        log.log({"loss": float("nan")}, step=1)
    assert json.loads((run / "config.json").read_text()) == {"lr": 0.1, "dims": [3, 4]}
    records = read_metrics(run)
    assert [r["step"] for r in records] == [0, 1]
    assert records[0]["loss"] == 1.5 and records[1]["loss"] is None
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_runlog_refuses_to_overwrite_and_resumes(tmp_path):
    run = tmp_path / "run"
    RunLog.create(run, config={"a": 1}, tensorboard=False).close()
    with pytest.raises(UserError, match="already holds"):
        RunLog.create(run, config={"a": 2})
    with pytest.raises(UserError, match="pass --overwrite"):
        RunLog.create(run, config={"a": 2}, exists_hint="pass --overwrite to replace it")
    assert json.loads((run / "config.json").read_text()) == {"a": 1}
    log = RunLog.create(run, config={"a": 1}, resume=True, tensorboard=False)
    log.log({"x": 1}, step=5)
    log.close()
    assert read_metrics(run)[-1]["x"] == 1
    RunLog.create(run, config={"a": 3}, overwrite=True).close()
    assert not (run / "metrics.jsonl").read_text()
    assert len(list((run / "tensorboard").iterdir())) == 1  # the old event files are gone


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"k": [1, 2]})
    atomic_torch_save({"w": 1}, tmp_path / "ckpt.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "ckpt.pt"]


def test_missing_wandb_is_a_clear_error():
    if wandb_available():
        pytest.skip("wandb is installed here")
    with pytest.raises(UserError, match="--no_wandb"):
        init_wandb(project="x")


def test_tensorboard_gets_measurements_not_counters_nan_kept_and_the_config(tmp_path):
    import math

    from forgetting_common.testing import tensorboard_scalars
    from tensorboardX.proto import event_pb2

    run = tmp_path / "run"
    with RunLog.create(run, config={"lr": 0.1}) as log:
        log.log({"Iter": 10, "Epoch": 1, "train/loss": 0.5, "test/acc": float("nan")}, step=10)
    points = tensorboard_scalars(run / "tensorboard")
    assert [tag for tag, _, _ in points] == ["train/loss", "test/acc"]
    assert math.isnan(points[1][2])
    assert read_metrics(run)[0]["Iter"] == 10 and read_metrics(run)[0]["test/acc"] is None
    raw = b"".join(p.read_bytes() for p in (run / "tensorboard").iterdir())
    assert b'"lr": 0.1' in raw and event_pb2 is not None


def test_a_tag_mapping_namespaces_tensorboard_and_keeps_the_original_keys(tmp_path):
    from forgetting_common.testing import tensorboard_scalars

    run = tmp_path / "run"
    tag = {"Copy Train loss": "train/Copy_Train_loss", "Random Group Size": None}.get
    with RunLog.create(run, config={}, tensorboard_tag=tag) as log:
        log.log({"Iter": 3, "Copy Train loss": 0.25, "Random Group Size": 7}, step=3)
    assert tensorboard_scalars(run / "tensorboard") == [("train/Copy_Train_loss", 3, 0.25)]
    assert read_metrics(run)[0]["Copy Train loss"] == 0.25 and read_metrics(run)[0]["Random Group Size"] == 7
