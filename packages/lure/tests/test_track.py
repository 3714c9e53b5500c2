"""--track: the shared trackers on LURE_main.py / ALMA.py, off by default, never changing what is
trained; values in metrics.jsonl, TensorBoard and tracked.npz; kill-and-resume carries them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from forgetting_common import testing
from forgetting_common.safeload import load_checkpoint
from forgetting_common.trackers import TRACKER_NAMES, load_forgetting_counts, read_npz

PACKAGE = Path(__file__).resolve().parents[1]
ALL = ",".join(TRACKER_NAMES)
# 3 states of 18 train ids (full replay), 2 epochs each, batch 16: SNIP unlearning between states
TINY = ["--data_source", "synthetic", "--image_size", "8", "--test_limit", "16", "--meta_batch_size", "20",
        "--meta_batch_number", "3", "--epochs", "2", "--decreasing_lr", "1", "--gamma", "0.1", "--device", "cpu",
        "--quiet", "--batch_size", "16", "--seed", "1", "--arch", "resnet20s"]
LURE = [*TINY, "--use_snip", "--snip_examples", "8"]
ALMA = [a for a in TINY if a not in ("--gamma", "0.1")]
VOLATILE = {"time", "time_per_state", "elapsed", "save_dir", "track", "runlog", "resume"}  # track: the flag itself


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _weights(save: Path) -> dict:
    return {p.name: load_checkpoint(p)["state_dict"] for p in sorted(save.glob("*model_SA_best.pth.tar"))}


def _same_training(a: Path, b: Path) -> None:
    """Same results, same best models, same per-epoch rows (the tracked rows aside)."""
    assert _plain(json.loads((a / "results.json").read_text())) == _plain(json.loads((b / "results.json").read_text()))
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and len(wa) == 3
    for name in wa:
        assert all(torch.equal(wa[name][k], wb[name][k]) for k in wa[name]), name
    def untracked_rows(run: Path) -> list[dict]:
        return [r for r in testing.metrics_rows_without_time(run / "wb_offline" / "metrics.jsonl")
                if not any(k.startswith("track/") for k in r)]

    assert untracked_rows(a) == untracked_rows(b)


@pytest.mark.parametrize("alma", [False, True], ids=["LURE_main", "ALMA"])
def test_track_changes_nothing_trained_and_reaches_every_output(runner, tmp_path, alma):
    argv = ALMA if alma else LURE
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    runner.main(["--save_dir", plain, *argv], alma=alma)
    runner.main(["--save_dir", tracked, *argv, "--track", ALL], alma=alma)
    assert not (plain / "tracked.npz").exists()
    assert not [r for r in testing.metrics_rows_without_time(plain / "wb_offline" / "metrics.jsonl")
                if any(k.startswith("track/") for k in r)]
    _same_training(plain, tracked)

    rows = [r for r in testing.metrics_rows_without_time(tracked / "wb_offline" / "metrics.jsonl")
            if "track/forgetting_events" in r]
    assert [(r["state"], r["step"]) for r in rows] == [(k, 2 * (k - 1) + e) for k in (1, 2, 3) for e in (0, 1)]
    tags = {tag for tag, _, _ in testing.tensorboard_scalars(tracked / "wb_offline" / "tensorboard")}
    assert {"track/forgetting_events", "track/ece", "track/dead_units", "track/plasticity"} <= tags

    arrays = read_npz(tracked / "tracked.npz")
    counts = load_forgetting_counts(tracked / "tracked.npz")
    # 3 chunks of 18 train ids, full replay: chunk j is trained in states j..3, 2 epochs each; batch 16 of
    # 18, 36 or 54 ids never leaves a batch of one, so every example is presented at every epoch it is trained
    assert counts.ids.tolist() == list(range(54))
    assert counts.presentations.tolist() == [6] * 18 + [4] * 18 + [2] * 18
    assert counts.events.sum() == sum(r["track/forgetting_events"] for r in rows)
    assert np.array_equal(arrays["states.events_end"][-1], counts.events)
    # the first epoch's snapshot never exceeds the state's end, which never exceeds the next state's first epoch
    assert (arrays["states.events_first_epoch"] <= arrays["states.events_end"]).all()
    assert (arrays["states.events_end"][:-1] <= arrays["states.events_first_epoch"][1:]).all()
    # evaluated: state k's start on chunks 1..k, its end on the same
    for k in range(3):
        for when in ("start", "end"):
            correct = arrays[f"states.correct_{when}"][k]
            assert (correct[:18 * (k + 1)] >= 0).all() and (correct[18 * (k + 1):] == -1).all()
            margin = arrays[f"states.margin_{when}"][k]
            assert np.array_equal(margin[:18 * (k + 1)] > 0, correct[:18 * (k + 1)] == 1)
    for k in (1, 2):  # state k+1's start against state k's selected model, on the chunks trained before
        same = np.array_equal(arrays["states.margin_start"][k, :18 * k], arrays["states.margin_end"][k - 1, :18 * k])
        if alma:  # warm start, no intervention: a state starts from the previous state's selected model
            assert same
            assert np.array_equal(arrays["states.correct_start"][k, :18 * k],
                                  arrays["states.correct_end"][k - 1, :18 * k])
        else:  # SNIP re-initialised a fifth of the weights: the margins moved
            assert not same


def test_bad_track_value_is_one_line(runner, tmp_path):
    code, err = runner.error(["--save_dir", tmp_path / "S", *LURE, "--track", "forgetting,dead"])
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "LURE_main.py: error: argument --track: unknown tracker 'dead'; the trackers are "
        "forgetting,margin,dead_units,weight_rank,effective_rank,plasticity,ece,init_distance")
    assert not (tmp_path / "S").exists()


def test_resume_with_another_track_is_refused(runner, tmp_path, monkeypatch):
    from lure import checkpoint

    save, real = tmp_path / "S", checkpoint.save

    def save_then_stop(*args, **kwargs):  # stopped right after the first resume file
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        runner.main(["--save_dir", save, *LURE, "--track", "forgetting"])
    monkeypatch.setattr(checkpoint, "save", real)
    code, err = runner.error(["--save_dir", save, *LURE, "--track", "margin", "--resume"])
    assert code == 2 and "--resume: --track was 'forgetting'" in err
    code, err = runner.error(["--save_dir", save, *LURE, "--resume"])
    assert code == 2 and "--resume: --track was 'forgetting'" in err


def test_sigkill_then_resume_with_track_equals_uninterrupted(runner, tmp_path):
    argv = [*LURE, "--track", "forgetting,margin,ece,init_distance,weight_rank"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    runner.main(["--save_dir", whole, *argv])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # killed once state 2 is under way: the tracker state and the per-state snapshots come from the resume file
    code = testing.run_until_then_kill([str(PACKAGE / "LURE_main.py"), "--save_dir", str(cut), *argv],
                                       testing.exists(cut / "2checkpoint.pth.tar"), cwd=PACKAGE, env=env)
    assert code == -signal.SIGKILL
    assert not (cut / "tracked.npz").exists()
    state = load_checkpoint(cut / "anytime_state.pth.tar")
    assert state["tracking"]["trackers"]["forgetting"]["state"]["presentations"].sum() > 0
    assert "resuming " in runner.main(["--save_dir", cut, *argv, "--resume"])[1]
    assert (whole / "tracked.npz").read_bytes() == (cut / "tracked.npz").read_bytes()
    assert (testing.metrics_rows_without_time(whole / "wb_offline" / "metrics.jsonl")
            == testing.metrics_rows_without_time(cut / "wb_offline" / "metrics.jsonl"))
    _same_training(whole, cut)


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is needed")
def test_torchrun_trackers_see_every_example_once_per_step(tmp_path):
    import subprocess
    import sys

    def torchrun(save: Path, track: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("WORLD_SIZE", None)
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "--", str(PACKAGE / "LURE_main.py"), "--save_dir", str(save), *LURE, "--sync_bn",
                               "--track", track], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)

    done = torchrun(tmp_path / "S", "forgetting,margin,ece")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = load_forgetting_counts(tmp_path / "S" / "tracked.npz")
    # each rank trains on half of every batch; gathered, the trackers see each example once per epoch
    assert counts.presentations.tolist() == [6] * 18 + [4] * 18 + [2] * 18
    rows = [r for r in testing.metrics_rows_without_time(tmp_path / "S" / "wb_offline" / "metrics.jsonl")
            if "track/forgetting_events" in r]
    assert len(rows) == 6 and counts.events.sum() == sum(r["track/forgetting_events"] for r in rows)
    refused = torchrun(tmp_path / "R", "forgetting,plasticity")
    assert refused.returncode != 0
    assert ("LURE_main.py: error: --track plasticity is not available under torchrun: it reads the network's pass "
            "over each process's share of a minibatch") in refused.stderr
    assert not (tmp_path / "R").exists()
