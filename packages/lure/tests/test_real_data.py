"""A short run on real MNIST (from $FORGETTING_DATA): what unlearning changes, and LURE's non-inferiority."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.real_data


@pytest.fixture
def mnist_root(forgetting_data) -> str:
    return str(forgetting_data("MNIST/raw"))


def test_real_mnist_unlearning_mechanism_and_noninferiority(mnist_root, tmp_path, capsys):
    from forgetting_common.seeding import Generators
    from lure import unlearn
    from lure.data import DataSpec, load_data
    from lure.models import MNIST_MEAN, MNIST_STD, build_model
    from lure.reproduce import main as reproduce

    record = reproduce(["--data", mnist_root, "--out", str(tmp_path), "--seeds", "1,2", "--methods", "lure,warm",
                        "--epochs", "3", "--decreasing_lr", "2", "--meta_batch_number", "3"])
    summary = record["summary"]
    # H1: more data helps every method (450 -> 1,350 training examples).
    for method in ("lure", "warm"):
        assert summary[method]["final_test_acc"][0] >= summary[method]["first_state_acc"][0] + 3.0, summary[method]
    # The figure over the sweep's folders: warm start beside LURE, two seeds each, means as in the summary.
    from lure import plots

    runs = plots.load_runs([tmp_path])
    curves = plots.curves(runs)
    assert [(c.label, c.runs) for c in curves] == [("warm start, gamma 0.1", 2), ("LURE (SNIP 20%), gamma 0.1", 2)]
    assert curves[1].mean[-1] == pytest.approx(summary["lure"]["final_test_acc"][0])
    assert curves[1].sd[-1] == pytest.approx(summary["lure"]["final_test_acc"][1])
    assert plots.accuracy_per_state(runs, tmp_path / "fig.png").stat().st_size > 5000
    # H3 (short-run version): LURE is not worse than warm start with the same schedule by more than 1.5 pp.
    assert summary["lure"]["final_test_acc"][0] >= summary["warm"]["final_test_acc"][0] - 1.5, summary

    # H2: the unlearning step at state 2 of seed 1, recomputed independently from the saved files.
    run = tmp_path / "lure" / "seed1"
    from forgetting_common.safeload import load_checkpoint as load
    before = load(run / "1model_SA_best.pth.tar")["state_dict"]
    after = load(run / "start_2.pth.tar")
    mask = load(run / "snip_mask_1.pth")
    model = build_model("mnistnet", 10, in_channels=1, mean=MNIST_MEAN, std=MNIST_STD)
    model.load_state_dict(before)
    model.eval()
    # The SNIP batch as the original builds it: the first 128 ids of the state's list, one batch of 100,
    # training augmentation drawn from the run's "snip" stream.
    spec = DataSpec(dataset="mnist5k", data_source="real", data=mnist_root, meta_batch_size=500,
                    meta_batch_number=3, val_offset=None, few_shot=False, n_shots=100, image_size=None,
                    test_limit=None, order_seed=0, imagenet_path="")
    data = load_data(spec, torch.device("cpu"))
    assert unlearn.snip_batches_used(128, None) == 1
    x, y = data.pool.fetch(torch.arange(100))
    x = data.augment(x, Generators(1)["snip"])
    saliency = unlearn.snip_saliency(model, [(x, y)])
    t, k = unlearn.snip_threshold(saliency, 0.2)
    n_total = sum(s.numel() for s in saliency.values())
    masked = sum(int((mask[n] == 0).sum()) for n in saliency)
    at_or_below = sum(int((s <= t).sum()) for s in saliency.values())
    assert masked / n_total >= 0.2 - 1e-9 and masked == at_or_below
    for name, s in saliency.items():
        assert torch.equal(mask[name] == 0, s <= t), name
        changed = before[name] != after[name]
        if "weight" in name:
            assert torch.equal(changed, mask[name] == 0), name
            assert (s[changed] <= t).all()
        else:
            assert not changed.any(), name  # biases and BN beta untouched
    assert all(torch.equal(before[n], after[n]) for n in before if "running" in n)
    assert not math.isnan(summary["lure"]["final_ece"][0])
    print({m: (s["final_test_acc"], s["first_state_acc"], s["final_ece"]) for m, s in summary.items()})
