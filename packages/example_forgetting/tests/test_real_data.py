"""A shorter version of the README's reproduction on real MNIST (needs ``$FORGETTING_DATA``).

1,000 training / 300 test images, 13 epochs (about 200 SGD steps), one seed per arm. About
15 s of CPU time on one thread. It asserts the direction of each finding of the paper:
MNIST has more unforgettable examples than permuted MNIST; removing the least-forgotten 30% hurts
less than removing a random 30% (both read and measured by the claims' readers, as
`forgetting reproduce` does); forgetting counts find the changed labels (the label-noise driver).
"""

from __future__ import annotations

import pytest
from example_forgetting.claims import measure_counts, read_counts, read_removal
from example_forgetting.cli import mnist_main, order_main
from example_forgetting.reproduce import reproduce

pytestmark = pytest.mark.real_data

EPOCHS = 13


def test_small_reproduction_directions(tmp_path, forgetting_data):
    data = str(forgetting_data("MNIST/raw"))
    common = ["--epochs", str(EPOCHS), "--train_limit", "1000", "--test_limit", "300", "--data_root", data,
              "--device", "cpu", "--no_download", "--quiet", "--no_tensorboard"]
    stats_dir = tmp_path / "mnist_results"

    # Fig. 1: the claims' statistics runs (run_mnist.py --no_dropout), one seed per dataset
    values = {}
    for dataset in ("mnist", "permuted_mnist"):
        out = stats_dir if dataset == "mnist" else tmp_path / dataset
        mnist_main(["--dataset", dataset, "--no_dropout", "--seed", "1", *common, "--output_dir", str(out)])
        run = {"labels": {"dataset": dataset, "seed": 1, "epochs": EPOCHS}}
        values[dataset] = {**read_counts(run, out), "_labels": run["labels"]}
    m = measure_counts(values)
    # sanity: the MNIST net learns real digits in ~200 steps
    assert values["mnist"]["best_test_acc"] > 75.0
    # permuted MNIST has fewer unforgettable examples than MNIST (paper 75.3% vs 91.7%)
    assert m["mnist"] > 0.5
    assert m["permuted_mnist"] < m["mnist"] - 0.1

    # Fig. 6: removing the least-forgotten 30% is no worse than removing a random 30% (1 pp slack
    # for kernel differences between CPUs); the original sorting script, then the removal runs
    order_main(["--output_dir", str(stats_dir), "--output_name", "mnist_sorted", "--input_dir", str(stats_dir),
                "--input_fname_args", "dataset", "mnist", "no_dropout", "True", "sorting_file", "none",
                "remove_n", "0", "keep_lowest_n", "0", "--epochs", str(EPOCHS), "--quiet"])
    acc = {}
    for keep, arm in ((0, "selected"), (-1, "random")):
        out = tmp_path / arm
        mnist_main(["--dataset", "mnist", "--no_dropout", "--seed", "1", *common, "--sorting_file", "mnist_sorted",
                    "--input_dir", str(stats_dir), "--remove_n", "300", "--keep_lowest_n", str(keep),
                    "--output_dir", str(out)])
        acc[arm] = read_removal({"labels": {"role": arm}}, out)["best_test_acc"]
    assert acc["selected"] >= acc["random"] - 1.0

    # Fig. 3: changed labels are found by their forgetting counts; almost none is unforgettable
    r = reproduce(["--data_root", data, "--output_dir", str(tmp_path / "noise"), "--train_limit", "1000",
                   "--test_limit", "300", "--epochs", str(EPOCHS), "--seed", "1", "--device", "cpu", "--quiet"])
    ln = r["label_noise"]
    assert ln["n_noisy"] == 200
    assert ln["auc_noisy_vs_clean"] > 0.85
    assert ln["noisy_unforgettable_fraction"] < 0.05 < ln["clean_unforgettable_fraction"]
    # the same examples with their true labels are forgotten less
    assert ln["mean_count_same_examples_clean_labels"] < ln["mean_count_noisy"]
    # the clean run is the same run as the statistics run above (same flags and seed)
    assert r["clean_run"]["best_test_acc"] == pytest.approx(values["mnist"]["best_test_acc"])
    assert (tmp_path / "noise" / "summary.json").exists() and (stats_dir / "mnist_sorted.pkl").exists()
