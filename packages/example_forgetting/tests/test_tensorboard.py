"""TensorBoard: one writer per run, namespaced tags, one point per epoch, read back from the files."""

from __future__ import annotations

import numpy as np
from example_forgetting.cli import mnist_main
from example_forgetting.naming import STATS_SUFFIX
from forgetting_common import testing
from forgetting_common.runlog import read_metrics
from forgetting_common.safeload import load_pickle

TAGS = {"train/acc", "train/loss", "train/lr", "test/acc", "test/loss",
        "stats/forgetting_events", "stats/learned_fraction", "stats/unforgettable_fraction"}


def test_tags_steps_and_forgetting_summaries(tmp_path, run):
    res = run(mnist_main, ["--dataset", "mnist", "--no_dropout", "--output_dir", tmp_path, "--seed", 1,
                           "--epochs", 4, "--lr", 0.1, "--batch_size", 16, "--data_source", "synthetic",
                           "--train_limit", 64, "--test_limit", 32, "--quiet", "--device", "cpu"])
    run_dir = tmp_path / "runs" / res.save_fname
    assert [p.name for p in run_dir.iterdir() if p.name == "tensorboard"] == ["tensorboard"]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one writer
    points = testing.tensorboard_scalars(run_dir / "tensorboard")
    by_tag: dict[str, list[tuple[int, float]]] = {}
    for tag, step, value in points:
        by_tag.setdefault(tag, []).append((step, value))
    assert set(by_tag) == TAGS  # no counters, nothing outside train/ test/ stats/
    for tag, series in by_tag.items():
        assert [s for s, _ in series] == [0, 1, 2, 3], tag  # one point per epoch, steps increasing
    rows = read_metrics(run_dir)
    for tag in TAGS:
        assert np.allclose([v for _, v in by_tag[tag]], [r[tag] for r in rows]), tag
    # the stats/ summaries, recomputed by hand from the statistics pickle
    stats = load_pickle(tmp_path / (res.save_fname + STATS_SUFFIX))
    acc = np.array([stats[k][1] for k in stats if not isinstance(k, str)])
    events = [0] + [int(((acc[:, e - 1] == 1) & (acc[:, e] == 0)).sum()) for e in range(1, 4)]
    assert [v for _, v in by_tag["stats/forgetting_events"]] == events
    learned = [(acc[:, : e + 1] == 1).any(axis=1).mean() for e in range(4)]
    assert np.allclose([v for _, v in by_tag["stats/learned_fraction"]], learned)
    forgotten = (acc[:, :-1] == 1) & (acc[:, 1:] == 0)
    unforgettable = ((acc == 1).any(axis=1) & ~forgotten.any(axis=1)).mean()
    assert np.isclose(by_tag["stats/unforgettable_fraction"][-1][1], unforgettable)
    assert sum(events) > 0  # the hand check saw real forgetting events, not only zeros
