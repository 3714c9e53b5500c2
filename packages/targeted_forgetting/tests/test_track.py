"""--track: the shared trackers on mixed_group_training.py, off by default, never changing what is
trained; values in metrics.jsonl, TensorBoard and tracked.npz."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from forgetting_common import testing
from forgetting_common.runlog import read_metrics
from forgetting_common.trackers import TRACKER_NAMES, load_forgetting_counts

ALL = ",".join(TRACKER_NAMES)
LENET = ["--data_source", "synthetic", "--train_limit", "300", "--train_iters", "7", "--print_every", "2",
         "--no_wandb", "--no_plot", "--keep_perc", "0.5", "--random_perc", "0.2", "--num_threads", "1"]
# resnet18: batch norm (plasticity's extra pass must leave its running statistics alone) and convs
RESNET = ["--train_data", "cifar10", "--arch", "resnet18", "--batch_size", "16", "--data_source", "synthetic",
          "--train_limit", "40", "--train_iters", "5", "--print_every", "2", "--keep_perc", "0.5",
          "--random_perc", "0.25", "--no_wandb", "--no_plot", "--num_threads", "1"]


def _probe_rows(run_dir):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(run_dir) if "Iter" in r]


@pytest.mark.parametrize("argv", [LENET, RESNET], ids=["lenet", "resnet18"])
def test_track_never_changes_what_is_trained(run_cli, tmp_path, argv):
    plain = run_cli(argv + ["--fname", "plain"])
    tracked = run_cli(argv + ["--fname", "tracked", "--track", ALL])
    a = torch.load(plain / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tracked / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BN buffers included
    assert _probe_rows(plain) == _probe_rows(tracked)  # the probes' scores, bit for bit
    assert not (plain / "tracked.npz").exists()
    assert not [r for r in read_metrics(plain) if "Iter" not in r]  # off by default: nothing else logged


def test_tracked_values_reach_metrics_tensorboard_and_the_compact_file(run_cli, tmp_path):
    run_dir = run_cli(LENET + ["--track", "plasticity,forgetting,dead_units"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["track"] == "forgetting,dead_units,plasticity"  # one spelling, for --resume's check
    rows = [r for r in read_metrics(run_dir) if "Iter" not in r]
    # 300 examples, batches of 128 without the partial one: 2 steps an epoch; 7 steps = 3 epochs and a half
    assert [(r["step"], r["Epoch"]) for r in rows] == [(2, 0), (4, 1), (6, 2), (7, 3)]
    assert {"track/forgetting_events", "track/learned_fraction", "track/dead_units",
            "track/plasticity"} <= set(rows[0])
    assert all(0 <= r["track/dead_units"] <= 1 and 0 <= r["track/plasticity"] <= 1 for r in rows)
    tags = {tag for tag, _, _ in testing.tensorboard_scalars(run_dir / "tensorboard")}
    assert {"stats/forgetting_events", "stats/dead_units", "stats/plasticity"} <= tags
    counts = load_forgetting_counts(run_dir / "tracked.npz", epochs=200)
    assert int(counts.presentations.sum()) == 7 * 128 and counts.epochs == 4
    assert sum(r["track/forgetting_events"] for r in rows) == int(counts.events.sum())
    assert rows[-1]["track/learned_fraction"] == pytest.approx(counts.learned.mean())
    # the ids are the examples' indices in the whole (synthetic) set, as the run's data holds them
    from targeted_forgetting.data import load_train_data

    data = load_train_data(train_data="mnist", data_source="synthetic", data_dir=None, train_limit=300,
                           train_perc=1.0, random_perc=0.2, seed=0)
    assert np.array_equal(counts.ids, data.ids.numpy()) and sorted(counts.ids.tolist()) == list(range(300))
