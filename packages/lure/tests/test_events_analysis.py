"""The cross-paper analysis lure.events_unlearn_relearn: its arithmetic on hand-made snapshots, and
its smoke grid run on real MNIST-5k, read and measured as `forgetting analyse` does."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lure import events_analysis as ea


def test_auroc_hand_computed():
    # positives 2 and 3 against negatives 1 and 2: (2>1) + ½(2=2) + (3>1) + (3>2) = 3.5 of 4 pairs
    assert ea.auroc(np.array([1.0, 2.0, 2.0, 3.0]), np.array([False, True, False, True])) == 0.875
    assert ea.auroc(np.array([5.0, 1.0]), np.array([False, True])) == 0.0
    assert math.isnan(ea.auroc(np.array([1.0, 2.0]), np.array([True, True])))


def _snapshots() -> dict:
    """Two states, chunk 1 = examples 0-1, chunk 2 = examples 2-3."""
    return {"final_test_acc": 90.0, "examples": 4, "events_total": 3,
            "correct_end": [[1, 1, -1, -1], [1, 0, 1, 1]],
            "correct_start": [[0, 0, -1, -1], [0, 1, 1, 0]],  # state 2's start: example 0 hit by the step
            "margin_end": [[0.5, 3.0, 0.0, 0.0], [1.0, -1.0, 2.0, 2.0]],
            "last_end": [[1, 0, -1, -1], [1, 1, 1, 1]],
            "events_end": [[2, 0, 0, 0], [3, 0, 0, 0]],
            "events_first_epoch": [[1, 0, 0, 0], [3, 0, 0, 0]],  # example 0: an event at state 2's first epoch
            "train_margin_end": [[0.1, -1.0, 0.0, 0.0], [0.2, 0.3, 0.4, 0.5]]}


def test_run_measures_hand_computed():
    m = ea.run_measures(_snapshots())
    # the step: examples 0 and 1 were right under state 1's model; example 0 is wrong after unlearning,
    # right again at state 2's end; it had 2 events (example 1: 0) and the lower margin (0.5 < 3.0)
    assert m["step_forgotten"] == 0.5 and m["step_relearned"] == 1.0
    assert m["step_auc_events"] == 1.0 and m["step_auc_low_margin"] == 1.0
    assert m["step_events_hit"] == 2.0 and m["step_events_spared"] == 0.0
    # the change: only example 0 was right at its latest presentation; its first one in state 2 is an event
    assert m["change_forgotten"] == 1.0 and m["change_relearned"] == 1.0
    assert math.isnan(m["change_auc_events"]) and math.isnan(m["change_events_spared"])
    assert m["events_per_example"] == 0.75 and m["final_test_acc"] == 90.0


def test_measure_averages_seeds_per_method():
    a, b = _snapshots(), _snapshots()
    b["correct_start"] = [[0, 0, -1, -1], [1, 1, 1, 0]]  # a seed where the step hits nothing
    values = {"lure_1": {**a, "_labels": {"method": "lure", "seed": 1}},
              "lure_2": {**b, "_labels": {"method": "lure", "seed": 2}},
              "warm_1": {**b, "_labels": {"method": "warm", "seed": 1}}}
    m = ea.measure_events(values)
    assert m["lure_step_forgotten"] == 0.25 and m["warm_step_forgotten"] == 0.0
    assert m["lure_step_relearned"] == 1.0  # seed 2 has no hit example: it does not count
    assert m["seeds"] == 2.0


@pytest.mark.real_data
def test_smoke_grid_on_real_mnist5k(forgetting_data, tmp_path):
    """The analysis's smoke grid (LURE and warm start, K=3, M=300, 2 epochs), run in-process."""
    from forgetting_common.trackers import load_forgetting_counts
    from lure.claims import paper
    from lure.cli import main as script_main

    root = str(forgetting_data("MNIST/raw"))
    decl = paper()
    (analysis,) = [a for a in decl["analyses"] if a["name"] == "events_unlearn_relearn"]
    sweep = decl["sweeps"][analysis["sweep"]]
    runs = sweep["grids"]["smoke"]()
    assert sorted(r["labels"]["method"] for r in runs) == ["lure", "warm"]
    values = {}
    for run in runs:
        save = tmp_path / run["name"]
        script_main([str(save) if a == "{out}" else root if a == "{data}" else a for a in run["args"]])
        values[run["name"]] = {**sweep["read"](run, save), "_labels": run["labels"]}
        counts = load_forgetting_counts(save / "tracked.npz")
        assert values[run["name"]]["events_end"][-1] == counts.events.tolist()
        assert counts.presentations.tolist() == [6] * 270 + [4] * 270 + [2] * 270  # 3 chunks of 270, 2 epochs
    m = analysis["measure"](values)
    assert m["warm_step_forgotten"] == 0.0  # no intervention: a state starts from the previous selected model
    assert 0.0 < m["lure_step_forgotten"] < 1.0  # SNIP re-initialisation makes some learned examples wrong
    assert 0.0 <= m["lure_change_forgotten"] <= 1.0 and 0.0 <= m["warm_change_forgotten"] <= 1.0
    assert "LURE's unlearning made" in analysis["summary"](m)
    analysis["figure"](values, m, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
