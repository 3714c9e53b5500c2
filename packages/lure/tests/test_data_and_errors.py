"""On-disk data layouts (fake copies written by forgetting_common.data.fake) and bad input."""

from __future__ import annotations

import pytest
import torch
from forgetting_common.data import fake
from lure.data import DataSpec, load_data

TINY = ["--arch", "resnet20s", "--epochs", "1", "--batch_size", "16", "--meta_batch_size", "10",
        "--meta_batch_number", "2", "--seed", "1", "--device", "cpu", "--quiet", "--test_limit", "16"]
SYN = ["--data_source", "synthetic", "--image_size", "8", "--test_limit", "16"]


def data_args(**kw) -> DataSpec:
    base = {"dataset": "cifar10", "data_source": "real", "data": None, "meta_batch_size": 10, "meta_batch_number": 2,
            "val_offset": None, "few_shot": False, "n_shots": 100, "image_size": None, "test_limit": None,
            "order_seed": 0, "imagenet_path": "../imagenet"}
    base.update(kw)
    return DataSpec(**base)


def test_cifar10_pickles_natural_order_and_run(runner, tmp_path):
    fake.write_cifar(tmp_path / "d", "cifar10", n_train=100, n_test=20)
    data = load_data(data_args(data=str(tmp_path / "d"), val_offset=80), torch.device("cpu"))
    assert "torchvision layout" in data.description and len(data.pool) == 100 and len(data.test) == 20
    results, _, _ = runner.main(["--data", tmp_path / "d", "--save_dir", tmp_path / "S", "--val_offset", "80",
                                 "--use_snip", *TINY])
    assert results["finished"] is True
    assert [s["val_first"] for s in results["states"]] == [80, 80]


def test_cifar100_pickles(tmp_path):
    fake.write_cifar(tmp_path / "d", "cifar100", n_train=120, n_test=20)
    data = load_data(data_args(dataset="cifar100", data=str(tmp_path / "d"), val_offset=90), torch.device("cpu"))
    assert data.num_classes == 100 and data.mean[0] == pytest.approx(0.5071)


def test_cifar10_jpeg_zip_gets_a_fixed_seeded_order(tmp_path):
    fake.write_cifar10_jpeg_zip(tmp_path / "d", per_class_train=10, per_class_test=2)
    args = data_args(data=str(tmp_path / "d"), val_offset=80)
    a = load_data(args, torch.device("cpu"))
    b = load_data(args, torch.device("cpu"))
    assert "JPEG CIFAR-10" in a.description
    assert torch.equal(a.pool.labels, b.pool.labels)
    first = a.pool.labels[:20]
    assert len(set(first.tolist())) > 3  # not class-sorted as in the zip
    c = load_data(data_args(data=str(tmp_path / "d"), val_offset=80, order_seed=5), torch.device("cpu"))
    assert not torch.equal(a.pool.labels, c.pool.labels)


def test_restricted_imagenet_folder_and_few_shot(runner, tmp_path):
    fake.write_image_folder(tmp_path / "rin", ("train", "val"), classes=14, per_class=3, size=12)
    args = data_args(dataset="restricted_imagenet", imagenet_path=str(tmp_path / "rin"), val_offset=30, image_size=8)
    data = load_data(args, torch.device("cpu"))
    assert data.num_classes == 14 and len(data.pool) == 42
    x, y = data.pool.fetch(torch.tensor([0, 41]))
    assert x.shape == (2, 3, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    few = load_data(data_args(dataset="restricted_imagenet", imagenet_path=str(tmp_path / "rin"), val_offset=20,
                              few_shot=True, n_shots=2, image_size=8), torch.device("cpu"))
    assert len(few.pool) == 28
    results, _, _ = runner.main(["--dataset", "restricted_imagenet", "--imagenet_path", tmp_path / "rin",
                                 "--image_size", "8", "--val_offset", "20", "-few_shot", "--n_shots", "2",
                                 "--save_dir", tmp_path / "S", "--use_snip", "-snip_no_replay", *TINY])
    assert results["states"][1]["snip_examples"] == 2  # floor(10 * 0.2) of the new chunk


def test_mnist_raw_layout(runner, tmp_path):
    fake.write_mnist(tmp_path / "d", n_train=200, n_test=50)
    argv = ["--data", tmp_path / "d", "--dataset", "mnist", "--val_offset", "150", "--save_dir", tmp_path / "S", *TINY]
    argv[argv.index("resnet20s")] = "mnistnet"
    results, _, _ = runner.main(argv)
    assert results["states"][0]["n_test"] == 16


# --------------------------------------------------------------------------- bad input
def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("extra,fragment", [
    (["--meta_batch_size", "6250", "--meta_batch_number", "9"], "training pool holds 45000"),
    (["-no_replay", "-one_replay"], "conflicting replay flags"),
    (["-buffer_replay", "-no_replay"], "conflicting replay flags"),
    (["--arch", "resnet7"], "invalid choice: 'resnet7'"),
    (["--decreasing_lr", "20,x"], "--decreasing_lr"),
    (["--meta_batch_size", "0"], "--meta_batch_size"),
    (["--arch", "mnistnet"], "mnistnet"),
])
def test_bad_flags_one_line(runner, tmp_path, extra, fragment):
    argv = ["--save_dir", tmp_path / "S", *TINY, *SYN]
    code, err = runner.error([*argv, *extra])
    assert code == 2 and fragment in one_line(err)
    assert not (tmp_path / "S" / "results.json").exists()


def test_missing_save_dir(runner):
    code, err = runner.error([*TINY, *SYN])
    assert code == 2 and "--save_dir is required" in one_line(err)


def test_missing_dataset_names_layout_and_flag(runner, tmp_path):
    code, err = runner.error(["--data", tmp_path / "nothing", "--save_dir", tmp_path / "S", *TINY])
    line = one_line(err)
    assert code == 2 and "CIFAR10 not found" in line and "--data" in line


def test_finished_results_are_never_overwritten(runner, tmp_path):
    argv = ["--save_dir", tmp_path / "S", *TINY, *SYN]
    runner.main(argv)
    before = (tmp_path / "S" / "results.json").read_bytes()
    code, err = runner.error(argv)
    assert code == 2 and "already holds a run" in one_line(err)
    assert (tmp_path / "S" / "results.json").read_bytes() == before
    code, err = runner.error([*argv, "--resume"])
    assert code == 2 and "already finished; pass --overwrite" in one_line(err)
    assert (tmp_path / "S" / "results.json").read_bytes() == before
    # --resume where no checkpoint was written yet restarts cleanly, with a note
    results, _, _ = runner.main(["--save_dir", tmp_path / "T", "--resume", *TINY, *SYN])
    assert results["finished"] is True


def test_scripts_as_subprocesses(runner, tmp_path):
    bad = runner.subprocess("LURE_main.py", ["--save_dir", tmp_path / "S", "-no_replay", "-buffer_replay", *TINY, *SYN])
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "LURE_main.py: error: conflicting replay flags: -no_replay and -buffer_replay (give at most one; none means "
        "full replay)"]
