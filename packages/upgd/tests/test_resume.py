"""Kill a real run (SIGKILL, SIGTERM, Ctrl-C), resume it, and get the uninterrupted run's files.

Compared bit for bit: the result JSON (original layout; only the wall-clock fields of
``run_info`` left out), ``summary.json`` (same), ``config.json``, ``metrics.jsonl`` rows without
``time`` and every TensorBoard scalar point (duplicates would show).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from forgetting_common import testing
from forgetting_common.errors import UserError
from forgetting_common.runlog import read_metrics
from upgd.checkpoint import CHECKPOINT
from upgd.cli import main

PACKAGE = Path(__file__).resolve().parents[1]
RUN_DIR = ("_runs", "label_permuted_digits_stats", "baseline", "fully_connected_relu_with_hooks",
           "lr_0.01_beta_utility_0.9_sigma_0.001_weight_decay_0.0", "3")
STATS = ["--task", "label_permuted_digits_stats", "--learner", "baseline", "--seed", "3", "--lr", "0.01",
         "--beta_utility", "0.9", "--sigma", "0.001", "--weight_decay", "0.0",
         "--network", "fully_connected_relu_with_hooks", "--n_samples", "600", "--change_freq", "20",
         "--fake_data", "1", "--checkpoint_every", "100", "--stats_every", "4", "--quiet"]
WALL_CLOCK = ("time_elapsed", "steps_per_second")


def outputs(save: Path, run_parts=RUN_DIR) -> dict:
    """Everything a run wrote, without wall-clock values."""
    run = save.joinpath(*run_parts)
    results = [p for p in save.rglob("*.json") if "_runs" not in p.parts]
    assert len(results) == 1, results
    result = json.loads(results[0].read_text())
    result["run_info"] = {k: v for k, v in result["run_info"].items() if k not in WALL_CLOCK}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    config = json.loads((run / "config.json").read_text())
    for session_key in ("checkpoint_every", "overwrite", "save_path"):  # how it was invoked, not what ran
        config.pop(session_key)
    assert not (run / CHECKPOINT).exists(), "a finished run keeps no checkpoint"
    return {
        "result_path": results[0].relative_to(save),
        "result": result,
        "summary": {k: v for k, v in summary.items() if k not in WALL_CLOCK + ("result",)},
        "config": config,
        "metrics": testing.metrics_rows_without_time(run / "metrics.jsonl"),
        "tensorboard": testing.tensorboard_scalars(run / "tensorboard"),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in-process; the same code and one thread as the script)."""
    root = tmp_path_factory.mktemp("reference")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main([*STATS, "--save_path", str(root / "logs")]) == 0
    finally:
        os.chdir(cwd)
    out = outputs(root / "logs")
    # 4 scalars per row: the task counter stays out of TensorBoard (forgetting_common.runlog)
    assert len(out["metrics"]) == 30 and len(out["tensorboard"]) == 30 * 4
    return out


def _script_run(tmp_path: Path, argv: list[str], until, sig=signal.SIGKILL, script="run_stats.py") -> int:
    return testing.run_until_then_kill([str(PACKAGE / "core" / "run" / script), *argv], until,
                                       cwd=tmp_path, sig=sig, timeout=180)


def _rows_past(run: Path, n_rows: int):
    """Kill once a checkpoint exists and at least ``n_rows`` rows are logged, the last one not at a
    checkpoint boundary (multiples of 100): rows logged after the latest checkpoint then exist."""
    def condition() -> bool:
        try:
            rows = read_metrics(run)
            return (run / CHECKPOINT).exists() and len(rows) >= n_rows and rows[-1]["step"] % 100 != 0
        except (OSError, ValueError):  # the file is being written
            return False
    return condition


def test_sigkill_then_resume_equals_uninterrupted(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save = tmp_path / "logs"
    run = save.joinpath(*RUN_DIR)
    argv = [*STATS, "--save_path", str(save)]
    # Killed after the first checkpoint (sample 100) with rows logged past it (steps 120, 140 …).
    assert _script_run(tmp_path, argv, _rows_past(run, 8)) == -signal.SIGKILL
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    assert ckpt["next_step"] % 100 == 0 and ckpt["next_step"] < 600
    assert read_metrics(run)[-1]["step"] > ckpt["next_step"]  # rows the resumed run must not repeat
    before = (run / CHECKPOINT).read_bytes()
    with pytest.raises(UserError, match="holds an interrupted run .*--resume 1 to continue"):
        main(argv)  # the same command again: refused, nothing touched
    with pytest.raises(UserError, match="n_samples = 600, not 700"):
        main([*argv, "--n_samples", "700", "--resume"])
    assert (run / CHECKPOINT).read_bytes() == before
    assert main([*argv, "--resume"]) == 0
    assert outputs(save) == reference
    with pytest.raises(UserError, match="already holds a finished result \\(nothing to resume\\)"):
        main([*argv, "--resume", "1"])


def test_sigkill_then_resume_with_track_equals_uninterrupted(tmp_path, monkeypatch):
    """--track of every tracker: the tracker state travels in the checkpoint, so the resumed run's
    rows, TensorBoard points and tracked.npz (byte for byte) equal the uninterrupted run's."""
    from forgetting_common.trackers import TRACKER_NAMES

    track = ["--track", ",".join(TRACKER_NAMES)]
    monkeypatch.chdir(tmp_path)
    whole, save = tmp_path / "whole", tmp_path / "logs"
    assert main([*STATS, *track, "--save_path", str(whole)]) == 0
    run = save.joinpath(*RUN_DIR)
    argv = [*STATS, *track, "--save_path", str(save)]
    assert _script_run(tmp_path, argv, _rows_past(run, 12)) == -signal.SIGKILL
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    state = ckpt["extra"]["trackers"]
    assert set(state) == set(TRACKER_NAMES)
    assert int(state["forgetting"]["state"]["presentations"].sum()) == ckpt["next_step"]  # one example a step
    assert read_metrics(run)[-1]["step"] > ckpt["next_step"]  # rows the resumed run must not repeat
    with pytest.raises(UserError, match="was written with track = '[a-z_,]+', not 'forgetting'"):
        main([*STATS, "--track", "forgetting", "--save_path", str(save), "--resume"])
    assert main([*argv, "--resume"]) == 0
    assert outputs(save) == outputs(whole)
    tracked = "/".join(RUN_DIR) + "/tracked.npz"
    assert (save / tracked).read_bytes() == (whole / tracked).read_bytes()
    rows = [r for r in read_metrics(run) if "track/forgetting_events" in r]
    assert [r["task"] for r in rows] == list(range(30))  # one row per task, none repeated or lost


def test_sigterm_checkpoints_at_the_step_and_exits_143(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save = tmp_path / "logs"
    run = save.joinpath(*RUN_DIR)
    argv = [*STATS, "--save_path", str(save)]
    assert _script_run(tmp_path, argv, _rows_past(run, 8), sig=signal.SIGTERM) == 143
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    # Written at the end of the step in progress, after every row that step logged.
    assert ckpt["next_step"] > 140
    assert read_metrics(run)[-1]["step"] < ckpt["next_step"]
    assert main([*argv, "--resume"]) == 0
    assert outputs(save) == reference


def test_statistics_process_run_sigterm_and_resume_equal_uninterrupted(reference, tmp_path, monkeypatch):
    """``--stats_worker process``: the SIGTERM checkpoint waits for the statistics process; the
    resumed run's files equal the uninterrupted (thread) run's."""
    monkeypatch.chdir(tmp_path)
    save = tmp_path / "logs"
    run = save.joinpath(*RUN_DIR)
    argv = [*STATS, "--save_path", str(save), "--stats_worker", "process"]
    assert _script_run(tmp_path, argv, _rows_past(run, 8), sig=signal.SIGTERM) == 143
    assert main([*argv, "--resume"]) == 0
    out = outputs(save)
    assert out["config"].pop("stats_worker") == out["summary"].pop("stats_worker") == "process"
    assert reference["summary"]["stats_worker"] == "thread"  # auto, on a run this short
    assert out == {**reference, "config": {k: v for k, v in reference["config"].items() if k != "stats_worker"},
                   "summary": {k: v for k, v in reference["summary"].items() if k != "stats_worker"}}


def test_resume_without_checkpoint_restarts_cleanly(reference, tmp_path, monkeypatch, capsys):
    from upgd import experiment

    monkeypatch.chdir(tmp_path)
    save = tmp_path / "logs"
    run = save.joinpath(*RUN_DIR)
    argv = [*STATS, "--save_path", str(save)]
    # A run that dies (here: a crash) at sample 50, before its first checkpoint, with rows logged.
    original, count = experiment.Experiment.step, {"n": 0}

    def crash(self):
        count["n"] += 1
        if count["n"] > 50:
            raise RuntimeError("simulated crash")
        return original(self)

    monkeypatch.setattr(experiment.Experiment, "step", crash)
    with pytest.raises(RuntimeError):
        main(argv)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert len(read_metrics(run)) == 3 and not (run / CHECKPOINT).exists()
    assert main([*argv, "--resume"]) == 0
    assert "no checkpoint in" in capsys.readouterr().err
    assert outputs(save) == reference
    # --resume on a folder that never existed simply starts
    assert main([*STATS, "--save_path", str(tmp_path / "fresh"), "--resume"]) == 0
    assert outputs(tmp_path / "fresh") == reference


def test_overwrite_replaces_an_interrupted_run(reference, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save = tmp_path / "logs"
    run = save.joinpath(*RUN_DIR)
    argv = [*STATS, "--save_path", str(save)]
    _interrupt_in_process(monkeypatch, at_step=250)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert torch.load(run / CHECKPOINT, weights_only=True)["next_step"] == 251
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="pass one of them"):
        main([*argv, "--resume", "--overwrite"])
    assert main([*argv, "--overwrite", "1"]) == 0
    assert outputs(save) == reference


def _interrupt_in_process(monkeypatch, at_step: int, sig=signal.SIGINT) -> None:
    """Send ``sig`` to this process while step ``at_step`` runs (a real signal, delivered mid-step)."""
    from upgd import experiment

    original = experiment.Experiment.step
    count = {"n": 0}

    def step(self):
        if count["n"] == at_step:
            os.kill(os.getpid(), sig)
        count["n"] += 1
        return original(self)

    monkeypatch.setattr(experiment.Experiment, "step", step)


@pytest.mark.parametrize("script,mode,argv,run_parts", [
    ("run_restarts.py", "restarts",
     ["--task", "input_permuted_digits", "--learner", "sgd", "--network", "fully_connected_relu", "--lr", "0.01",
      "--n_samples", "300", "--change_freq", "20"],
     ("_runs", "input_permuted_digits", "sgd", "fully_connected_relu", "lr_0.01", "0")),
    ("run_offline.py", "offline",
     ["--task", "label_permuted_emnist_offline", "--learner", "upgd_fo_global", "--network", "fully_connected_relu",
      "--lr", "0.01", "--sigma", "0.01", "--beta_utility", "0.9", "--n_samples", "300", "--change_freq", "20"],
     ("_runs", "label_permuted_emnist_offline", "upgd_fo_global", "fully_connected_relu",
      "lr_0.01_sigma_0.01_beta_utility_0.9", "0")),
    ("run_utility.py", "utility",
     ["--task", "weight_utils", "--learner", "sgd_with_hesscale", "--network", "small_fully_connected_relu",
      "--lr", "0.01", "--n_samples", "60"],
     ("_runs", "weight_utils", "sgd_with_hesscale", "small_fully_connected_relu", "lr_0.01", "0")),
])
def test_other_loops_resume_after_ctrl_c(script, mode, argv, run_parts, tmp_path, monkeypatch):
    """run.py's loop (plain, restarts: the global RNG re-initialises layers; offline: held-out lists)
    and run_utility's (lists of correlations and its own generator) resume to the same files."""
    monkeypatch.chdir(tmp_path)
    common = [*argv, "--fake_data", "1", "--checkpoint_every", "20", "--quiet"]
    assert main([*common, "--save_path", str(tmp_path / "ref")], mode=mode) == 0
    save = tmp_path / "cut"
    _interrupt_in_process(monkeypatch, at_step=30)
    with pytest.raises(KeyboardInterrupt):
        main([*common, "--save_path", str(save)], mode=mode)
    assert torch.load(save.joinpath(*run_parts, CHECKPOINT), weights_only=True)["next_step"] == 31
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main([*common, "--save_path", str(save), "--resume"], mode=mode) == 0
    assert outputs(save, run_parts) == outputs(tmp_path / "ref", run_parts)
