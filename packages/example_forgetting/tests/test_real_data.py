"""A shorter version of the README's reproduction on real MNIST (needs ``$FORGETTING_DATA``).

1,000 training / 300 test images, 13 epochs (about 200 SGD steps), one seed per arm. About
15 s of CPU time on one thread. It asserts the direction of each finding of the paper:
MNIST has more unforgettable examples than permuted MNIST; removing the least-forgotten 30% hurts
less than removing a random 30%; forgetting counts find the changed labels.
"""

from __future__ import annotations

import pytest
from example_forgetting.reproduce import reproduce

pytestmark = pytest.mark.real_data


def test_small_reproduction_directions(tmp_path, forgetting_data):
    data = str(forgetting_data("MNIST/raw"))
    r = reproduce(["--data_root", data, "--output_dir", str(tmp_path), "--train_limit", "1000", "--test_limit", "300",
                   "--epochs", "13", "--stats_seeds", "1", "--removal_seeds", "1", "--removal_n", "300",
                   "--removal_dropout", "no", "--removal_baseline", "no", "--device", "cpu", "--quiet"])
    mnist, perm = r["mnist"], r["permuted_mnist"]
    # sanity: the MNIST net learns real digits in ~200 steps
    assert mnist["runs"][1]["best_test_acc"] > 75.0
    # Fig. 1: permuted MNIST has fewer unforgettable examples than MNIST (paper 75.3% vs 91.7%)
    assert mnist["unforgettable_fraction"] > 0.5
    assert perm["unforgettable_fraction"] < mnist["unforgettable_fraction"] - 0.1
    # Fig. 3: changed labels are found by their forgetting counts; almost none is unforgettable
    ln = r["label_noise"]
    assert ln["n_noisy"] == 200
    assert ln["auc_noisy_vs_clean"] > 0.85
    assert ln["noisy_unforgettable_fraction"] < 0.05 < ln["clean_unforgettable_fraction"]
    # the same examples with their true labels are forgotten less
    assert ln["mean_count_same_examples_clean_labels"] < ln["mean_count_noisy"]
    # Fig. 6: removing the least-forgotten 30% is no worse than removing a random 30% (1 pp slack
    # for kernel differences between CPUs)
    row = r["removal"]["table"][0]
    assert row["selected"] >= row["random"] - 1.0
    assert (tmp_path / "summary.json").exists() and (tmp_path / "mnist_results" / "mnist_sorted.pkl").exists()
