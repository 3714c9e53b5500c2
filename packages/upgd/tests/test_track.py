"""--track on run_stats.py: the shared trackers, off by default, never changing what is trained or
the result JSON; one row per task in metrics.jsonl, TensorBoard and tracked.npz; example ids are
the samples' positions in the dataset; the `upgd.sgd_vs_upgd_events` analysis on tiny real runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from forgetting_common import testing
from forgetting_common.errors import UserError
from forgetting_common.runlog import read_metrics
from forgetting_common.trackers import TRACKER_NAMES, load_forgetting_counts
from upgd.cli import main

ALL = ",".join(TRACKER_NAMES)
STREAM = ["--task", "input_permuted_digits_stats", "--learner", "upgd_fo_global", "--lr", "0.05",
          "--beta_utility", "0.9", "--sigma", "0.01", "--weight_decay", "0.0",
          "--network", "fully_connected_relu_with_hooks", "--n_samples", "45", "--change_freq", "20",
          "--stats_every", "3", "--fake_data", "1"]
WALL_CLOCK = ("time_elapsed", "steps_per_second")


def _run_dir(save: Path) -> Path:
    (config,) = save.rglob("config.json")
    return config.parent


def _without_clock(result: dict) -> dict:
    return {**result, "run_info": {k: v for k, v in result["run_info"].items() if k not in WALL_CLOCK}}


@pytest.mark.parametrize("workers", [["--overlap", "1"], ["--overlap", "0"], ["--stats_worker", "process"]],
                         ids=["thread", "inline", "process"])
def test_track_never_changes_what_is_trained(run_cli, tmp_path, workers):
    argv = [*STREAM, *workers]
    _, plain = run_cli([*argv, "--save_model_dir", str(tmp_path / "m0")], save_path=tmp_path / "plain")
    _, tracked = run_cli([*argv, "--save_model_dir", str(tmp_path / "m1"), "--track", ALL],
                         save_path=tmp_path / "tracked")
    assert _without_clock(plain) == _without_clock(tracked)  # every per-task value of the result, bit for bit
    (a,), (b,) = (list((tmp_path / m).glob("*final.pth")) for m in ("m0", "m1"))
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    plain_dir, tracked_dir = _run_dir(tmp_path / "plain"), _run_dir(tmp_path / "tracked")
    untracked_rows = [{k: v for k, v in r.items() if k != "time"} for r in read_metrics(tracked_dir)
                      if not any(k.startswith("track/") for k in r)]
    assert testing.metrics_rows_without_time(plain_dir / "metrics.jsonl") == untracked_rows
    assert not (plain_dir / "tracked.npz").exists() and (tracked_dir / "tracked.npz").is_file()
    assert "track" not in json.loads((plain_dir / "config.json").read_text())  # the untracked run's file as before


def test_tracked_values_per_task_in_metrics_tensorboard_and_the_compact_file(run_cli, tmp_path):
    pytest.importorskip("sklearn")
    # the real scikit-learn digits, first 60 images: 45 samples, tasks of 20 -> each image shown 0-2 times
    argv = [*STREAM, "--fake_data", "0", "--dataset_limit", "60", "--track", "plasticity,forgetting,dead_units"]
    run_cli(argv)
    run_dir = _run_dir(tmp_path / "logs")
    assert json.loads((run_dir / "config.json").read_text())["track"] == "forgetting,dead_units,plasticity"
    rows = [r for r in read_metrics(run_dir) if "track/forgetting_events" in r]
    # one row at the last step of each task; the last task (5 samples) is partial
    assert [(r["step"], r["task"]) for r in rows] == [(19, 0), (39, 1), (44, 2)]
    assert all(0 <= r["track/dead_units"] <= 1 and 0 <= r["track/plasticity"] <= 1 for r in rows)
    assert rows[0]["track/forgetting_events"] == 0  # task 0 shows 20 distinct images, each for the first time
    tags = {tag: [(s, v) for t, s, v in testing.tensorboard_scalars(run_dir / "tensorboard") if t == tag]
            for tag in ("stats/forgetting_events", "stats/dead_units", "stats/plasticity")}
    assert [s for s, _ in tags["stats/forgetting_events"]] == [19, 39, 44]
    assert [v for _, v in tags["stats/dead_units"]] == pytest.approx([r["track/dead_units"] for r in rows])
    counts = load_forgetting_counts(run_dir / "tracked.npz")
    # ids: positions in the dataset; presentations: the stream's own sample order, replayed here
    assert counts.ids.tolist() == list(range(60)) and counts.epochs == 3
    from upgd.data import build_task

    stream = build_task("input_permuted_digits_stats", seed=0, device=torch.device("cpu"), data_dir="dataset",
                        change_freq=20, dataset_limit=60)
    shown = []
    for _ in range(45):
        stream.next()
        shown.append(stream.last_index)
    assert counts.presentations.tolist() == np.bincount(shown, minlength=60).tolist()
    assert sum(r["track/forgetting_events"] for r in rows) == int(counts.events.sum())
    assert rows[-1]["track/learned_fraction"] == pytest.approx(counts.learned.mean())
    assert (counts.events <= np.maximum(counts.presentations - 1, 0)).all()  # an event needs an earlier presentation


def test_bad_track_values_and_loops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save = ["--save_path", str(tmp_path / "logs"), "--quiet"]
    with pytest.raises(UserError, match=r"^--track forgetting,dead: unknown tracker 'dead'; the trackers are "
                                        r"forgetting,margin,dead_units"):
        main([*STREAM, *save, "--track", "forgetting,dead"])
    with pytest.raises(UserError, match="--track is an extension of run_stats.py; run.py does not take it"):
        main([*STREAM, *save, "--track", "forgetting"], mode="plain", prog="run.py")
    with pytest.raises(UserError, match="--track dead_units needs a first-order learner: sgd_with_hesscale"):
        main(["--task", "input_permuted_digits_stats", "--learner", "sgd_with_hesscale", "--lr", "0.01",
              "--network", "fully_connected_relu_with_hooks", "--n_samples", "5", "--fake_data", "1",
              "--track", "dead_units", *save])
    assert not (tmp_path / "logs").exists()  # refused before anything was written


@pytest.mark.real_data
def test_events_analysis_reads_and_measures_tiny_real_runs(forgetting_data, tmp_path, monkeypatch):
    """The analysis's smoke grid, shortened (later flags win), run and read as `forgetting analyse` would."""
    from upgd.claims import paper
    from upgd.events_analysis import figure_events, measure_events, read_events

    data_root = forgetting_data("MNIST/raw")
    monkeypatch.chdir(tmp_path)
    decl = paper()
    assert [a["name"] for a in decl["analyses"]] == ["sgd_vs_upgd_events"]
    values = {}
    for run in decl["sweeps"]["sgd_vs_upgd_events"]["grids"]["smoke"]():
        out = tmp_path / run["name"]
        args = [a.replace("{out}", str(out)).replace("{data}", str(data_root)) for a in run["args"]]
        assert args[args.index("--track") + 1] == "forgetting,dead_units"
        assert main([*args, "--n_samples", "300", "--change_freq", "60", "--dataset_limit", "100"]) == 0
        values[run["name"]] = {**read_events(run, out), "_labels": run["labels"]}
    assert {v["_labels"]["learner"] for v in values.values()} == {"sgd", "upgd_fo_global"}
    for v in values.values():
        assert v["presentations"] == 300 and v["examples"] == 100 and len(v["events_per_task"]) == 5
        assert v["events_total"] == sum(v["events_per_task"]) and v["events_per_task"][0] == 0
        assert v["examples_shown"] <= 100 and v["revisits"] == 300 - v["examples_shown"]
        assert sum(v["events_histogram"]) == v["examples_shown"]
    measured = measure_events(values)
    for short in ("sgd", "upgd"):
        assert 0 <= measured[f"{short}_events_per_revisit"] <= 1
        assert 0 <= measured[f"{short}_dead_last20"] <= 1 and 0 <= measured[f"{short}_forgotten_fraction"] <= 1
    assert measured["seeds"] == 1 and measured["presentations"] == 300
    figure_events(values, measured, tmp_path / "events.png")
    assert (tmp_path / "events.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "events.png").stat().st_size > 10_000
