"""Every seed command line at smoke size (spec section 13), driven through the real CLIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from example_forgetting.cli import cifar_main, mnist_main, order_main
from example_forgetting.data import synthetic
from example_forgetting.naming import STATS_SUFFIX
from forgetting_common.safeload import load_pickle as safe_load_pickle

SMOKE = ["--data_source", "synthetic", "--train_limit", "64", "--test_limit", "32", "--quiet",
         "--device", "cpu", "--no_tensorboard"]


def load_pickle(path):
    """Our outputs must load with the restricted loader the order script uses."""
    return safe_load_pickle(path)


MNIST_NAME = "dataset_mnist__no_dropout_True__seed_1__sorting_file_none__remove_n_0__keep_lowest_n_0"
CIFAR_NAME = ("dataset_cifar10__data_augmentation_True__cutout_False__seed_1__sorting_file_none__remove_n_0__"
              "keep_lowest_n_0__remove_subsample_0__noise_percent_labels_0__noise_percent_pixels_0__noise_std_pixels_0")


def test_mnist_stats_runs_write_original_files(mnist_dirs):
    m = mnist_dirs["M"]
    stats = load_pickle(m / (MNIST_NAME + STATS_SUFFIX))
    ids = [k for k in stats if not isinstance(k, str)]
    assert sorted(ids) == list(range(64))
    assert all(type(k) is int for k in ids)
    # insertion order = epoch 0's shuffle, the original's np.random.seed(seed); permutation(N)
    assert ids == np.random.RandomState(1).permutation(64).tolist()
    assert list(stats)[64:] == ["train", "test"]
    losses, accs, margins = stats[ids[0]]
    assert len(losses) == len(accs) == len(margins) == 3
    assert all(a in (0, 1) for a in accs) and all(isinstance(x, float) for x in losses + margins)
    # margin sign agrees with correctness (margins from the same forward pass)
    for k in ids:
        for a, mg in zip(stats[k][1], stats[k][2]):
            assert (mg > 0) == bool(a) or mg == 0
    assert len(stats["train"][1]) == 3  # one minibatch of 64 per epoch
    assert len(stats["test"][1]) == 3
    best = (m / (MNIST_NAME + "__best_acc.txt")).read_text()
    lines = best.split("\n")
    assert lines[0] == "train test "
    assert lines[1] == f"{max(stats['train'][1])} {max(stats['test'][1])}"
    assert (m / "runs" / MNIST_NAME / "config.json").exists()
    assert (m / "runs" / MNIST_NAME / "metrics.jsonl").read_text().count("\n") == 3
    # the dropout run and permuted runs exist under their own names
    assert (m / ("dataset_mnist__no_dropout_False__seed_1__sorting_file_none__remove_n_0__keep_lowest_n_0" + STATS_SUFFIX)).exists()
    assert len(list(mnist_dirs["P"].glob("dataset_permuted_mnist__*" + STATS_SUFFIX))) == 2


def test_order_mnist(mnist_dirs):
    out = mnist_dirs["order_stdout"]
    assert out.count("including file:") == 2
    assert "skipping file: dataset_mnist__no_dropout_False" in out
    sorted_ = load_pickle(mnist_dirs["M"] / "mnist_sorted.pkl")
    assert set(sorted_) == {"indices", "forgetting counts"}
    assert sorted(sorted_["indices"].tolist()) == list(range(64))
    counts = sorted_["forgetting counts"]
    assert np.all(np.diff(counts) >= 0)
    k = int((counts == 0).sum())
    assert f"Number of unforgettable examples: {k}" in out
    # the totals equal the sum of the two runs' counts recomputed by hand
    total = np.zeros(64, dtype=int)
    for seed in (1, 2):
        st = load_pickle(mnist_dirs["M"] / (MNIST_NAME.replace("seed_1", f"seed_{seed}") + STATS_SUFFIX))
        for i in range(64):
            acc = st[i][1]
            total[i] += 3 if sum(acc) == 0 else sum(1 for t in range(2) if acc[t] == 1 and acc[t + 1] == 0)
    assert sorted(total.tolist()) == counts.tolist()
    assert all(total[i] == c for i, c in zip(sorted_["indices"], counts))


def test_permuted_mnist_uses_a_seeded_permutation(mnist_dirs):
    a = load_pickle(mnist_dirs["P"] / ("dataset_permuted_mnist" + MNIST_NAME[len("dataset_mnist"):] + STATS_SUFFIX))
    b = load_pickle(mnist_dirs["M"] / (MNIST_NAME + STATS_SUFFIX))
    assert a[0][0] != b[0][0]  # different inputs (and init) give different losses


def test_mnist_removal_selected_and_random(mnist_dirs):
    m = mnist_dirs["M"]
    order = load_pickle(m / "mnist_sorted.pkl")["indices"]
    sel, rnd = mnist_dirs["removal"][0], mnist_dirs["removal"][-1]
    assert len(sel.train_indx) == len(rnd.train_indx) == 48
    assert not set(order[:16].tolist()) & set(sel.train_indx.tolist())
    assert sel.train_indx.tolist() == sorted(set(range(64)) - set(order[:16].tolist()))
    assert rnd.train_indx.tolist() == np.random.RandomState(1).permutation(64)[:48].tolist()
    for k in ("0", "-1"):
        name = f"dataset_mnist__no_dropout_False__seed_1__sorting_file_mnist_sorted__remove_n_16__keep_lowest_n_{k}"
        stats = load_pickle(m / (name + STATS_SUFFIX))
        assert len([i for i in stats if not isinstance(i, str)]) == 48


def test_cifar_stats_and_order(cifar_dirs):
    c = cifar_dirs["C"]
    stats = load_pickle(c / (CIFAR_NAME + STATS_SUFFIX))
    assert sorted(k for k in stats if not isinstance(k, str)) == list(range(64))
    assert len(stats["test"][1]) == 2
    assert (c / "checkpoint" / "cifar10" / (CIFAR_NAME + ".t7")).exists()
    out = cifar_dirs["order_stdout"]
    assert out.count("including file:") == 2 and "Number of unforgettable examples:" in out
    sorted_ = load_pickle(c / "cifar10_sorted.pkl")
    assert sorted(sorted_["indices"].tolist()) == list(range(64))


@pytest.mark.parametrize("k", [0, -1, 8])
def test_cifar_removal_with_cutout(cifar_dirs, run, narrow, k):
    c = cifar_dirs["C"]
    res = run(cifar_main, ["--dataset", "cifar10", "--data_augmentation", "--cutout", "--sorting_file", "cifar10_sorted",
                           "--input_dir", c, "--output_dir", c, "--seed", 1, "--remove_n", 16, "--keep_lowest_n", k,
                           "--epochs", 2, *SMOKE])
    order = load_pickle(c / "cifar10_sorted.pkl")["indices"]
    assert len(res.train_indx) == 48
    if k >= 0:
        assert not set(order[k:k + 16].tolist()) & set(res.train_indx.tolist())
    assert res.stats_path.name.endswith(f"keep_lowest_n_{k}__remove_subsample_0__noise_percent_labels_0__"
                                        f"noise_percent_pixels_0__noise_std_pixels_0{STATS_SUFFIX}")


def test_cifar_remove_subsample(cifar_dirs, run, narrow):
    c = cifar_dirs["C"]
    res = run(cifar_main, ["--dataset", "cifar10", "--data_augmentation", "--sorting_file", "cifar10_sorted",
                           "--input_dir", c, "--output_dir", c, "--remove_subsample", 4, "--keep_lowest_n", 16,
                           "--epochs", 1, *SMOKE])
    order = load_pickle(c / "cifar10_sorted.pkl")["indices"]
    assert len(res.train_indx) == 60
    assert set(res.train_indx[:12].tolist()) < set(order[:16].tolist())
    assert res.train_indx[12:].tolist() == order[16:].tolist()


def test_cifar_label_noise(tmp_path, run, narrow):
    res = run(cifar_main, ["--dataset", "cifar10", "--data_augmentation", "--output_dir", tmp_path,
                           "--noise_percent_labels", 20, "--epochs", 1, *SMOKE])
    files = list(tmp_path.glob("*_changed_labels.txt"))
    assert len(files) == 1 and files[0].name.endswith("noise_std_pixels_0_changed_labels.txt")
    rows = [line.split() for line in files[0].read_text().splitlines()]
    assert len(rows) == 12
    clean = synthetic("cifar10", 64, 32)[0].labels.numpy()
    for orig, old, new in rows:
        assert old != new and int(old) == clean[int(orig)]
        assert res.labels[res.train_indx.tolist().index(int(orig))] == int(new)


def test_cifar_pixel_noise(tmp_path, run, narrow):
    res = run(cifar_main, ["--dataset", "cifar10", "--data_augmentation", "--output_dir", tmp_path,
                           "--noise_percent_pixels", 100, "--noise_std_pixels", 0.5, "--epochs", 1, *SMOKE])
    assert res.stats_path.name.endswith("noise_std_pixels_0.5__stats_dict.pkl")


@pytest.mark.parametrize("argv", [
    ["--dataset", "cifar100"],
    ["--dataset", "cifar10", "--model", "wideresnet"],
    ["--dataset", "cifar10", "--optimizer", "adam", "--no-cuda"],
])
def test_cifar_variants(tmp_path, run, narrow, argv):
    res = run(cifar_main, [*argv, "--data_augmentation", "--output_dir", tmp_path, "--epochs", 1,
                           "--train_limit", 16, *SMOKE[:2], "--test_limit", 16, "--quiet", "--no_tensorboard"])
    stats = load_pickle(res.stats_path)
    assert len([k for k in stats if not isinstance(k, str)]) == 16


@pytest.mark.parametrize("main,argv", [
    (mnist_main, ["--dataset", "permuted_mnist", "--no_dropout", "--output_dir", "OUT", "--seed", "3"]),
    (cifar_main, ["--dataset", "cifar10", "--data_augmentation", "--cutout", "--sorting_file", "cifar10_sorted",
                  "--input_dir", "cifar10_results", "--output_dir", "OUT", "--seed", "2", "--remove_n", "5000",
                  "--keep_lowest_n", "-1"]),
    (order_main, ["--output_dir", "OUT", "--output_name", "x", "--input_dir", "IN", "--input_fname_args", "dataset", "mnist"]),
])
def test_print_config_touches_nothing(tmp_path, run, main, argv):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert run(main, [*argv, "--print_config"]) is None
    cfg = json.loads(run.stdout)
    assert isinstance(cfg, dict) and "print_config" not in cfg
    assert cfg["output_dir"] == str(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    if main is cifar_main:
        assert cfg["noise_std_pixels"] == 0 and cfg["no_cuda"] is False and cfg["remove_n"] == 5000
        assert cfg["device"] == "auto" and cfg["data_source"] == "real"


def test_scripts_run_as_commands(tmp_path, script):
    """The README's first MNIST command through the real script file, then the order script."""
    out = tmp_path / "mnist_results"
    proc = script("run_mnist.py", "--dataset", "mnist", "--no_dropout", "--output_dir", out, "--seed", 1,
                  "--epochs", 2, *SMOKE)
    assert proc.returncode == 0, proc.stderr
    assert "Training on 64 examples" in proc.stdout
    proc = script("order_examples_by_forgetting.py", "--output_dir", out, "--output_name", "mnist_sorted",
                  "--input_dir", out, "--input_fname_args", "dataset", "mnist", "no_dropout", "True",
                  "sorting_file", "none", "remove_n", "0", "keep_lowest_n", "0", "--epochs", 2)
    assert proc.returncode == 0, proc.stderr
    assert "Number of unforgettable examples:" in proc.stdout
    assert (out / "mnist_sorted.pkl").exists()


@pytest.mark.parametrize("layout", ["mnist_raw", "cifar10_jpeg_zip", "cifar10_pickles", "cifar100_pickles"])
def test_real_data_layouts(tmp_path, run, narrow, monkeypatch, layout):
    """The real-data path (``--data_root``) on tiny fake copies in each on-disk layout."""
    from forgetting_common.data import fake

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the JPEG decoder's cache

    root = tmp_path / "data"
    if layout == "mnist_raw":
        fake.write_mnist(root, n_train=40, n_test=20)
        main, argv = mnist_main, ["--dataset", "mnist"]
    elif layout == "cifar10_jpeg_zip":
        fake.write_cifar10_jpeg_zip(root, per_class_train=4, per_class_test=2)
        main, argv = cifar_main, ["--dataset", "cifar10", "--data_augmentation"]
    else:
        name = layout.split("_")[0]
        fake.write_cifar(root, name, n_train=40, n_test=20)
        main, argv = cifar_main, ["--dataset", name]
    res = run(main, [*argv, "--data_root", root, "--output_dir", tmp_path / "o", "--epochs", 1, "--quiet",
                     "--device", "cpu", "--no_tensorboard", "--no_download"])
    assert len(res.train_indx) == 40
    assert len(res.test_acc) == 1
    if layout == "cifar10_jpeg_zip":  # the class-sorted zip is read in a fixed mixed order
        assert len(set(res.labels[:8].tolist())) > 2
