"""A short run on real MNIST (from $FORGETTING_DATA): what unlearning changes, and LURE's non-inferiority."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.real_data


@pytest.fixture
def mnist_root(forgetting_data) -> str:
    return str(forgetting_data("MNIST/raw"))


def _claim_runs(mnist_root: str, out: Path, methods: tuple[str, ...]) -> dict:
    """The `lure.*` claims' runs (their MNIST-5k grid: 3 epochs/state, K=3, M=500, seeds 1-2, without the
    corruption evaluation), each run in-process through its script's entry point, read and measured by the claim."""
    from lure.claims import _small, read_results
    from lure.cli import main as script_main

    values = {}
    for run in _small(3, "2", 500, 3, [1, 2])():
        if run["labels"]["method"] not in methods:
            continue
        save = out / run["labels"]["method"] / f"seed{run['labels']['seed']}"
        argv = [save.as_posix() if a == "{out}" else mnist_root if a == "{data}" else a
                for a in run["args"] if a != "--corruption_eval"]
        script_main(argv, alma=run["script"] == "ALMA.py")
        values[run["name"]] = {**read_results(run, save), "_labels": run["labels"]}
    return values


def test_real_mnist_unlearning_mechanism_and_noninferiority(mnist_root, tmp_path, capsys):
    from forgetting_common.seeding import Generators
    from lure import unlearn
    from lure.claims import measure
    from lure.data import DataSpec, load_data
    from lure.models import MNIST_MEAN, MNIST_STD, build_model

    values = _claim_runs(mnist_root, tmp_path, ("lure", "warm"))
    m = measure(values)
    # H1: more data helps every method (450 -> 1,350 training examples).
    for method in ("lure", "warm"):
        for v in values.values():
            if v["_labels"]["method"] == method:
                assert v["final_test_acc"] >= v["acc_per_state"][0] + 3.0, (method, v["acc_per_state"])
    # The figure over the sweep's folders: warm start beside LURE, two seeds each, means as the claim measures.
    from lure import plots

    runs = plots.load_runs([tmp_path])
    curves = plots.curves(runs)
    assert [(c.label, c.runs) for c in curves] == [("warm start, gamma 0.1", 2), ("LURE (SNIP 20%), gamma 0.1", 2)]
    assert curves[1].mean[-1] == pytest.approx(m["lure_final_test_acc"])
    lure_final = [v["final_test_acc"] for v in values.values() if v["_labels"]["method"] == "lure"]
    assert curves[1].sd[-1] == pytest.approx(statistics.stdev(lure_final))
    assert plots.accuracy_per_state(runs, tmp_path / "fig.png").stat().st_size > 5000
    # H3 (short-run version): LURE is not worse than warm start with the same schedule by more than 1.5 pp.
    assert m["lure_final_test_acc"] >= m["warm_final_test_acc"] - 1.5, m

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
    assert not math.isnan(m["lure_ece"])
    print({k: v for k, v in m.items() if k.startswith(("lure_", "warm_"))})
