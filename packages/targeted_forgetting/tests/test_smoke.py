"""The real command line at tiny sizes: both seed lines, every architecture, the other flags."""

from __future__ import annotations

import json
import math

import pytest
import torch
from targeted_forgetting.metrics import KEYS

TINY = ["--train_iters", "60", "--print_every", "20", "--data_source", "synthetic",
        "--train_limit", "2000", "--device", "cpu"]


def test_seed_line_c1_ke_style(run_cli, records, seeds, capsys):
    run_dir = run_cli(seeds[0] + TINY)
    assert run_dir.name == "new_rand_reinit_train0.1_mislabel0.1"
    recs = records(run_dir)
    assert [r["Iter"] for r in recs] == [20, 40, 60]
    for r in recs:
        assert set(KEYS) <= set(r)
        assert 0 < r["Random Group Size"] < 128
    assert any(r["Copy Overall Accuracy"] != r["Overall Accuracy"] for r in recs)
    out = capsys.readouterr().out
    assert out.count("Iteration ") == 3 and "Copy Random Label Accuracy" in out
    for name in ("config.json", "summary.json", "model.pt", "groups.png"):
        assert (run_dir / name).is_file()
    assert _is_real_png(run_dir / "groups.png")
    assert any((run_dir / "tensorboard").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["keep_perc"] == 0.5 and config["resolved"]["train_examples"] == 200

def test_seed_line_c2_imp_style(run_cli, records, seeds):
    run_dir = run_cli(seeds[1] + TINY)
    recs = records(run_dir)
    assert len(recs) == 3
    assert all(r["Random Group Size"] == 12 for r in recs)  # int(0.1 * 128) hard examples
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 60 and summary["probes"] == 3

@pytest.mark.parametrize("arch", ["conv4", "resnet18"])
def test_cifar_architectures(run_cli, records, arch):
    argv = ["--train_data", "cifar10", "--arch", arch, "--train_iters", "4", "--print_every", "2",
            "--batch_size", "16", "--data_source", "synthetic", "--train_limit", "64", "--keep_perc", "0.5",
            "--random_perc", "0.25", "--no_wandb", "--fname", arch, "--no_plot"]
    recs = records(run_cli(argv))
    assert [r["Iter"] for r in recs] == [2, 4]
    assert all(math.isfinite(r["Copy Train loss"]) for r in recs)

def test_mnist_from_the_real_on_disk_layout(run_cli, records, tmp_path):
    from forgetting_common.data.fake import write_mnist

    write_mnist(tmp_path / "data", n_train=300, n_test=20)
    argv = ["--data_dir", str(tmp_path / "data"), "--train_iters", "4", "--print_every", "2",
            "--no_wandb", "--keep_perc", "0.5", "--random_perc", "0.5"]
    run_dir = run_cli(argv)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["train_examples"] == 300 and "MNIST" in config["resolved"]["data"]

def test_cifar_from_a_jpeg_zip(run_cli, records, tmp_path, monkeypatch):
    from forgetting_common.data.fake import write_cifar10_jpeg_zip

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_cifar10_jpeg_zip(tmp_path / "data", per_class_train=4, per_class_test=1)
    argv = ["--data_dir", str(tmp_path / "data"), "--train_data", "cifar10", "--arch", "resnet18",
            "--batch_size", "16", "--train_iters", "2", "--print_every", "2", "--no_wandb", "--no_plot"]
    config = json.loads((run_cli(argv) / "config.json").read_text())
    assert config["resolved"]["data"].startswith("JPEG CIFAR-10")

@pytest.mark.parametrize("extra", [
    ["--same_mask"],
    ["--same_mask", "--weight_mask"],
    ["--same_mask", "--weight_mask", "--reset_to_zero", "--rewind_to_init"],
    ["--weight_mask"],
    ["--reset_to_zero"],
    ["--rewind_to_init", "--reinit_scope", "all"],
])
def test_forgetting_variants(run_cli, records, extra):
    argv = ["--train_iters", "20", "--print_every", "10", "--data_source", "synthetic",
            "--train_limit", "400", "--keep_perc", "0.3", "--random_perc", "0.2", "--no_wandb", "--no_plot",
            "--no_tensorboard", *extra]
    recs = records(run_cli(argv))
    assert len(recs) == 2 and all(math.isfinite(r["Copy Train loss"]) for r in recs)

def test_no_noise_without_margin_groups_gives_nan_random_group(run_cli, records):
    argv = ["--train_iters", "10", "--print_every", "5", "--data_source", "synthetic", "--train_limit", "300",
            "--no_wandb", "--no_plot", "--keep_perc", "0.5"]
    recs = records(run_cli(argv))
    assert all(r["Random Label Accuracy"] is None and r["Copy Random loss"] is None for r in recs)
    assert all(r["True Label Accuracy"] is not None for r in recs)

def test_rewind_to_epoch_probes_only_from_that_epoch(run_cli, records):
    # 256 examples, batch 128 → 2 iterations per epoch; epoch 3 starts at iteration 7
    argv = ["--train_iters", "12", "--print_every", "2", "--data_source", "synthetic", "--train_limit", "256",
            "--rewind_to_epoch", "3", "--weight_mask", "--reset_to_zero", "--keep_perc", "0.5",
            "--no_wandb", "--no_plot"]
    recs = records(run_cli(argv))
    assert [r["Iter"] for r in recs] == [8, 10, 12]
    assert [r["Epoch"] for r in recs] == [3, 4, 5]

def test_resume_round_trip_and_no_overwrite(run_cli, tmp_path):
    argv = ["--train_iters", "6", "--print_every", "3", "--data_source", "synthetic", "--train_limit", "300",
            "--no_wandb", "--no_plot", "--keep_perc", "0.5", "--fname", "r"]
    first = run_cli(argv)
    state = torch.load(first / "model.pt", weights_only=True)["state_dict"]
    second = run_cli(argv + ["--resume_path", str(first / "model.pt")])
    assert second.name == "r_1" and first.name == "r"  # the finished run is not overwritten
    from targeted_forgetting.cli import parse_config
    from targeted_forgetting.train import Experiment

    exp = Experiment(parse_config(argv + ["--resume_path", str(first / "model.pt"),
                                      "--save_path", str(tmp_path)]))
    for name, value in exp.model.state_dict().items():
        assert torch.equal(value, state[name])


def test_probe_leaves_the_live_model_unchanged(tmp_path):
    from forgetting_common.masks import snapshot
    from targeted_forgetting.cli import parse_config
    from targeted_forgetting.train import Experiment

    args = parse_config(["--data_source", "synthetic", "--train_limit", "256", "--keep_perc", "0.5",
                         "--save_path", str(tmp_path), "--random_perc", "0.3"])
    exp = Experiment(args)
    x = exp.batch_inputs(torch.arange(128))
    y = exp.data.labels[:128]
    out = exp.model(x)
    before = snapshot(exp.model)
    record = exp.probe(x, y, torch.arange(128), out.detach(), torch.tensor(1.0), 0)
    for name, value in snapshot(exp.model).items():
        assert torch.equal(value, before[name])
    assert record["Random Group Size"] == int(exp.data.groups[:128].sum())

def test_print_config_prints_one_json_object_and_writes_nothing(run_cli, seeds, tmp_path, capsys):
    result = run_cli(seeds[0] + ["--print_config", "--data_dir", str(tmp_path / "absent")])
    assert result is None
    config = json.loads(capsys.readouterr().out)
    assert config["train_iters"] == 50000 and config["fname"] == "new_rand_reinit_train0.1_mislabel0.1"
    assert config["no_wandb"] is True and "print_config" not in config
    assert not (tmp_path / "runs").exists()

def test_missing_wandb_is_a_note_not_a_crash(run_cli, records, capsys):
    argv = ["--train_iters", "4", "--print_every", "2", "--data_source", "synthetic", "--train_limit", "300",
            "--no_plot", "--keep_perc", "0.5", "--group_vars", "seed", "keep_perc"]
    recs = records(run_cli(argv))
    captured = capsys.readouterr()
    assert len(recs) == 2 and "wandb" in captured.err and "Iteration 2" in captured.out


def test_wandb_when_installed_and_configured(run_cli, monkeypatch, capsys):
    """A stand-in wandb module: the run is named from --group_vars and gets the 17 keys per probe."""
    import importlib.machinery
    import sys
    import types

    calls = {"init": [], "log": []}

    class FakeRun:
        def log(self, data, step=None):
            calls["log"].append((step, data))

        def finish(self):
            calls["finished"] = True

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls["init"].append(kw) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = ["--train_iters", "4", "--print_every", "2", "--data_source", "synthetic", "--train_limit", "300",
            "--no_plot", "--keep_perc", "0.5", "--group_vars", "seed", "keep_perc"]
    run_cli(argv)
    (init,) = calls["init"]
    assert init["project"] == "fortuitous_forgetting" and init["group"] == "mixed_group_training"
    assert init["name"] == "seed0_keep_perc0.5"
    assert [step for step, _ in calls["log"]] == [2, 4] and set(KEYS) <= set(calls["log"][0][1])
    assert calls.get("finished") and "Iteration" not in capsys.readouterr().out


def test_resume_path_holding_other_objects_is_refused_not_unpickled(run_cli, tmp_path):
    """A pickled object in the file could run code when unpickled: refused in one line."""
    import argparse

    from forgetting_common.errors import UserError
    from targeted_forgetting.models import build_model

    path = tmp_path / "full.pt"
    torch.save({"state_dict": build_model("lenet").state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    argv = ["--train_iters", "2", "--print_every", "2", "--data_source", "synthetic", "--train_limit", "300",
            "--no_plot", "--no_wandb", "--keep_perc", "0.5", "--resume_path", str(path)]
    with pytest.raises(UserError, match=r"--resume_path .*full.pt is refused: .*could run code"):
        run_cli(argv)
    assert not list((tmp_path / "runs").glob("*/metrics.jsonl"))


def _is_real_png(path) -> bool:
    """A PNG of at least 300 x 200 pixels and 10 kB (axes, curves and labels drawn, not a blank)."""
    data = path.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return data[:8] == b"\x89PNG\r\n\x1a\n" and width >= 300 and height >= 200 and len(data) > 10_000
