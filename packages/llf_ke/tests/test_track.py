"""--track on train_KE_cls.py: off by default, never changing what is trained; values in metrics.jsonl,
TensorBoard and tracked.npz, with the per-generation record of what each reset made the network forget
(llf_ke.tracking); the cross-paper analysis's read/measure/figure on a real tiny run; torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from forgetting_common.runlog import read_metrics
from forgetting_common.testing import metrics_rows_without_time, tensorboard_scalars
from forgetting_common.trackers import TRACKER_NAMES, ForgettingTracker, read_npz
from llf_ke.cli import parse_args
from llf_ke.fake import tiny_run_argv
from llf_ke.tracking import GenerationEvents

ALL = ",".join(TRACKER_NAMES)
SCRIPT = Path(__file__).resolve().parents[1] / "train_KE_cls.py"


def _argv(data, ckpt, name, *extra):
    return tiny_run_argv(data, ckpt, name, *extra, epochs=2, test_interval=1)


@pytest.fixture(scope="module")
def runs(script, data, tmp_path_factory):
    """The same run without and with every tracker."""
    ckpt = tmp_path_factory.mktemp("track_runs")
    out = {}
    for name, extra in (("plain", ()), ("tracked", ("--track", ALL))):
        argv = _argv(data, ckpt, name, *extra)
        script.main(argv)
        out[name] = Path(parse_args(argv).exp_dir)
    return out


def _logits(correct: list[bool]) -> torch.Tensor:
    """Logits for 3 examples of class 0: right where ``correct``, else class 1 wins."""
    return torch.tensor([[2.0, 0.0] if c else [0.0, 2.0] for c in correct])


def test_generation_events_by_hand():
    # 3 examples, 2 generations x 2 epochs, one batch per epoch; correctness per epoch:
    #   ex0: gen 0 wrong, right | gen 1 wrong, right  -> forgotten at the reset, relearned at epoch 1
    #   ex1: gen 0 right, right | gen 1 right, wrong  -> kept over the reset, forgotten later in gen 1
    #   ex2: gen 0 wrong, wrong | gen 1 right, right  -> never learned in gen 0, nothing to forget
    seq = {0: [[False, True, False], [True, True, False]], 1: [[False, True, True], [True, False, True]]}
    forgetting = ForgettingTracker(3)
    record = GenerationEvents(forgetting, 2)
    targets, idx = torch.zeros(3, dtype=torch.long), torch.tensor([2, 0, 1])  # a shuffled batch
    rows = []
    for g in (0, 1):
        record.start_generation()
        for epoch in (0, 1):
            forgetting.on_batch(idx, _logits([seq[g][epoch][i] for i in idx.tolist()]), targets)
            forgetting.end_epoch(2 * g + epoch)
            rows.append(record.end_epoch(g, epoch))
    a = record.arrays()
    assert a["generations.reset_forgotten"].tolist() == [[False, False, False], [True, False, False]]
    assert a["generations.relearned_epoch"].tolist() == [[-1, -1, -1], [1, -1, -1]]
    assert a["generations.events"].tolist() == [[0, 0, 0], [1, 1, 0]]  # the boundary event is generation 1's
    assert a["generations.first_correct"].tolist() == [[0, 1, 0], [0, 1, 1]]
    assert a["generations.last_correct"].tolist() == [[1, 1, 0], [1, 0, 1]]
    assert a["generations.learned"].tolist() == [[True, True, False], [True, True, True]]
    assert rows == [{}, {}, {"reset_forgotten": 1.0, "reset_relearned": 0.0},
                    {"reset_forgotten": 1.0, "reset_relearned": 1.0}]
    assert forgetting.events.tolist() == [1, 1, 0]  # Toneva's count over the whole run: the sum of the rows


def _untracked(rows):
    return [{k: v for k, v in r.items() if not k.startswith("track/")} for r in rows]


def test_track_never_changes_what_is_trained(runs):
    plain, tracked = runs["plain"], runs["tracked"]
    a, b = (torch.load(d / "checkpoint_last.pth", weights_only=True)["model"] for d in (plain, tracked))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # BN statistics included
    rows_plain, rows_tracked = (metrics_rows_without_time(d) for d in (plain, tracked))
    assert rows_plain == _untracked(rows_tracked)  # every training/validation/test number, bit for bit
    assert not (plain / "tracked.npz").exists()
    assert not any(k.startswith("track/") for r in rows_plain for k in r)
    csv_plain, csv_tracked = ([line.split(", ")[2:] for line in next(d.glob("*.csv")).read_text().splitlines()[1:]]
                              for d in (plain, tracked))  # without the time and the run name
    assert csv_plain == csv_tracked and csv_plain


def test_tracked_values_reach_metrics_tensorboard_and_the_compact_file(runs):
    run = runs["tracked"]
    assert json.loads((run / "config.json").read_text())["track"] == ALL
    rows = read_metrics(run)
    assert [(r["generation"], r["epoch"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {"track/forgetting_events", "track/margin_mean", "track/eval_margin_mean", "track/ece",
            "track/dead_units", "track/plasticity", "track/init_distance"} <= set(rows[0])
    assert "track/reset_forgotten" not in rows[0] and "track/reset_forgotten" in rows[2]
    tags = {tag for tag, _, _ in tensorboard_scalars(run / "tensorboard")}
    assert {"track/forgetting_events", "track/reset_forgotten", "track/ece"} <= tags
    a = read_npz(run / "tracked.npz")
    n = 12  # 4 classes x 3 training images, each presented once per epoch: 4 epochs in all
    assert a["forgetting.presentations"].tolist() == [4] * n and sorted(a["forgetting.ids"].tolist()) == list(range(n))
    events = a["generations.events"]
    assert events.shape == (2, n) and np.array_equal(events.sum(axis=0), a["forgetting.events"])
    per_epoch = [r["track/forgetting_events"] for r in rows]
    assert [sum(per_epoch[:2]), sum(per_epoch[2:])] == events.sum(axis=1).tolist()
    forgotten = (a["generations.last_correct"][0] == 1) & (a["generations.first_correct"][1] == 0)
    assert np.array_equal(a["generations.reset_forgotten"][1], forgotten)
    assert rows[2]["track/reset_forgotten"] == forgotten.sum()
    relearned = a["generations.relearned_epoch"][1]
    assert np.array_equal(relearned >= 0, forgotten & (a["generations.last_correct"][1] == 1))
    assert rows[3]["track/reset_relearned"] == (relearned >= 0).sum()


def test_analysis_reads_and_measures_a_real_run(runs, tmp_path):
    from llf_ke.events_analysis import figure_events, measure_events, read_events, summary_events

    run = {"name": "llf_seed0", "labels": {"arm": "llf", "seed": 0}}
    values = {"llf_seed0": {**read_events(run, runs["tracked"]), "_labels": run["labels"]}}
    a = read_npz(runs["tracked"] / "tracked.npz")
    m = measure_events(values)
    forgotten = a["generations.reset_forgotten"][1]
    assert m["llf_forgotten_fraction_g1"] == pytest.approx(forgotten.mean())
    correct_before = (a["generations.last_correct"][0] == 1).sum()
    assert m["llf_forgotten_of_correct"] == pytest.approx(forgotten.sum() / max(1, correct_before))
    # generation-0 count: events there, or 2 (its presentations) for an example never right in generation 0
    count = np.where(a["generations.learned"][0], a["generations.events"][0], 2)
    assert values["llf_seed0"]["gen0_count"] == count.tolist()
    assert m["llf_forgettable_fraction_gen0"] == pytest.approx((count > 0).mean())
    assert m["llf_examples"] == 12 and m["llf_generations"] == 2 and "ke_examples" not in m
    assert summary_events(m).startswith("LLF: a reset forgets")
    figure_events(values, m, tmp_path / "events.png")
    assert (tmp_path / "events.png").stat().st_size > 0


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is needed")
def test_torchrun_tracks_every_example_once_per_step(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)

    def torchrun(*extra):
        argv = _argv(data, tmp_path / "ckpt", "ddp", "-b", "5", "--sync_bn", *extra)
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(SCRIPT), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        return done

    refused = torchrun("--track", "forgetting,plasticity")
    assert refused.returncode != 0
    assert "train_KE_cls.py: error: --track plasticity is not available under torchrun" in refused.stderr
    done = torchrun("--track", "forgetting,margin,ece")
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (tmp_path / "ckpt").rglob("tracked.npz")
    a = read_npz(path)
    # batches of 5 over 12 examples, shares 3 + 2 (and 1 + 1): each example once per step, 4 epochs
    assert a["forgetting.presentations"].tolist() == [4] * 12
    assert np.array_equal(a["generations.events"].sum(axis=0), a["forgetting.events"])
    rows = read_metrics(path.parent)
    assert len(rows) == 4 and all("track/ece" in r and "track/eval_margin_mean" in r for r in rows)
