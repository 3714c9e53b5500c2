"""Smoke tests driving the real scripts (in-process main(argv), a few subprocesses) over every
seed command line and the other flag variants, at tiny sizes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from ease_of_teaching.seeds import C3, C4, C5, C6, C7
from forgetting_common.errors import UserError
from forgetting_common.runlog import read_metrics

TINY = ("--trainIters", "40")


@pytest.mark.parametrize("cmd,reset_num", [(C3, "4"), (C4, "4"), (C5, "4")], ids=["C3", "C4", "C5"])
def test_forget_train_seed_commands(run_forget, read_json, cmd, reset_num):
    summary, folder = run_forget(cmd, *TINY, "--resetNum", reset_num, "--eot_every", "2")
    for name in ("config.json", "metrics.jsonl", "langDict.npy", "langDict.json", "topo.json", "eot.json",
                 "evalAcc.npy", "trainAcc.npy", "summary.json", "accuracy.png", "topographic_similarity.png",
                 "ease_of_teaching.png"):
        assert (folder / name).exists(), name
    for name in ("accuracy.png", "topographic_similarity.png", "ease_of_teaching.png"):
        assert _is_real_png(folder / name), name
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    topo = read_json(folder / "topo.json")
    assert topo["Iter"] == [0, 10, 20, 30, 40] and len(topo["Topographic Similarity"]) == 5
    new = topo["New Topographic Similarity"]
    records = read_metrics(folder)
    accs = [r for r in records if "Training accuracy" in r]
    assert [r["Iter"] for r in accs] == [0]  # every 100 iterations
    n_new = sum(1 for r in records if "New Topographic Similarity" in r)
    if "reset_receiver" in cmd or "forget_sender" in cmd:
        assert n_new == 3 and len(new) == 5  # NaN (None) allowed: a constant early language
    else:
        assert n_new == 0
    eot = np.load(folder / "evalAcc.npy")
    assert eot.shape == (2, 3, 20)  # generation 2 and the end
    lang = np.load(folder / "langDict.npy", allow_pickle=True).item()
    assert set(lang) == {"circle", "square", "star", "triangle"}
    cfg = read_json(folder / "config.json")
    assert cfg["resetIter"] == 10 and cfg["fname"] == folder.name
    assert summary["trainIters"] == 40


@pytest.mark.parametrize("extra", [
    ("--forget_sender", "--sender_keep_perc", "0.5", "--reset_to_zero"),
    ("--forget_receiver", "--receiver_keep_perc", "0.3"),
    ("--forget_sender", "--sender_keep_perc", "0.2", "--same_mask"),
    ("--forget_sender", "--sender_keep_perc", "0"),
    ("--freeze_receiver", "--freeze_after_gen_num", "1"),
    ("--easy_limit", "1"),
], ids=["zero", "random-mask", "random-same-mask", "full-sender-reset", "freeze", "easy-limit"])
def test_forget_train_variants(run_forget, extra):
    summary, folder = run_forget("--fname v --seed 1 --no_wandb --no_eot", *TINY, "--resetNum", "2", *extra)
    assert (folder / "summary.json").exists()
    assert not (folder / "evalAcc.npy").exists()


def test_track_examples_and_save_weights(run_forget):
    _, folder = run_forget("--fname t --seed 0 --no_wandb --no_eot --track_examples --save_weights",
                           *TINY, "--resetNum", "2")
    import h5py

    tr = h5py.File(folder / "seed0_example_tracker.h5", "r")
    assert tr.attrs["resetIter"] == 20 and tr.attrs["trainIters"] == 40 and tr.attrs["resetNum"] == 2
    assert tr["hard_color_tracker"].shape == (4 + 1, 32)  # every 10 iterations + after the event
    assert tr["message_tracker"].shape == (5, 32, 2)
    assert tr["all_color_hard_examples"].shape == (32, 5, 2)
    assert list(tr["time_tracker"][:]) == [0, 10, 20, 20, 30]
    ex = tr["all_easy_examples"][:]
    assert np.all(ex[:, 1:, 0] != ex[:, :1, 0]) and np.all(ex[:, 1:, 1] != ex[:, :1, 1])
    tr.close()
    w = h5py.File(folder / "seed0_weight_trajectory.h5", "r")
    assert w["sbot_weights_all_time"].shape == (1, 46108) and w["rbot_weights_all_time"].shape == (1, 55400)
    assert list(w["time_ind"][:]) == [20] and w["topo_tracker"].shape == (1,)
    w.close()


def test_mixed_language_seed_commands(run_mixed, read_json):
    s6, f6 = run_mixed(C6, "--trainIters", "30")
    assert f6.name == ("same_maskFalse_weight_maskFalse_reset_to_zeroFalse_keep_perc0.5_seed0_trainIters30_"
                       "train_with_resetFalse_reset_every1")
    recs = read_metrics(f6)
    assert len(recs) == 30 and "Copy Exact Match Permuted" in recs[0] and "Perm 2 Entropy" in recs[0]
    assert _is_real_png(f6 / "copy_accuracy.png")
    s7, f7 = run_mixed(C7, "--trainIters", "30")
    assert f7.parent.name == "same_weight_zero"
    lang = read_json(f7 / "language.json")
    msgs = np.array(lang["target_messages"])
    order = np.array(lang["object_order"])
    assert np.array_equal(msgs[:16, 0], order[:16] // 4) and np.array_equal(msgs[:16, 1], order[:16] % 4)
    assert sorted(map(tuple, np.array(lang["target_messages"])[16:].tolist())) != []


def test_mixed_language_train_with_reset(run_mixed):
    _, folder = run_mixed("--fname r --seed 0 --keep_perc 0.7 --train_with_reset --reset_every 5",
                          "--trainIters", "12")
    recs = read_metrics(folder)
    # right after a reset the live sender is the forgotten copy, so its next "before" loss is the copy's
    assert recs[1]["Sender loss"] == pytest.approx(recs[0]["Copy Sender loss"], rel=1e-5)
    assert recs[6]["Sender loss"] == pytest.approx(recs[5]["Copy Sender loss"], rel=1e-5)


def test_print_config_writes_nothing(tmp_path, capsys):
    from ease_of_teaching.mixed_language import main as mixed_main
    from ease_of_teaching.train import main

    assert main(C5.split() + ["--out_dir", str(tmp_path), "--print_config"]) is None
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["resetNum"] == 100 and cfg["sender_keep_perc"] == 0.1 and cfg["resetIter"] == 3000
    assert mixed_main(C7.split() + ["--out_dir", str(tmp_path), "--print_config"]) is None
    cfg = json.loads(capsys.readouterr().out.strip())
    assert cfg["group_vars"][0] == "same_mask" and cfg["run_name"].startswith("same_maskTrue")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,match", [
    ("--sender_keep_perc 1.5 --forget_sender", "1.5"),
    ("--trainIters 40 --resetNum 7", "does not divide"),
    ("--trainIters 40 --resetNum 0", "positive"),
    ("--trainIters 40 --resetNum 80", "exceeds"),
    ("--trainIters 40 --resetNum 4 --same_mask", "no effect"),
    ("--trainIters 40 --resetNum 4 --receiver_keep_perc 0.5", "no effect"),
    ("--trainIters 40 --resetNum 4 --reset_receiver --forget_receiver", "already"),
    ("--trainIters 40 --resetNum 4 --group_vars nosuchflag", "unknown"),
    ("--trainIters 40 --resetNum 4 --device tpu", "not a device"),
])
def test_forget_train_bad_input(tmp_path, capsys, argv, match):
    from ease_of_teaching.train import main

    with pytest.raises((UserError, SystemExit)) as info:
        main(argv.split() + ["--out_dir", str(tmp_path), "--fname", "bad"])
    text = str(info.value) if info.type is UserError else capsys.readouterr().err
    assert match in text
    assert not (tmp_path / "bad").exists()


def test_mixed_bad_input(tmp_path):
    from ease_of_teaching.mixed_language import main

    with pytest.raises(UserError, match="reset_every"):
        main(["--reset_every", "3", "--out_dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--keep_perc", "-0.1", "--out_dir", str(tmp_path)])


def test_finished_run_is_never_overwritten(run_forget, tmp_path):
    _, folder = run_forget("--fname keep --seed 0 --no_wandb --no_eot", *TINY, "--resetNum", "2")
    before = (folder / "trainAcc.npy").read_bytes()
    with pytest.raises(UserError, match="already holds"):
        run_forget("--fname keep --seed 1 --no_wandb --no_eot", *TINY, "--resetNum", "2")
    assert (folder / "trainAcc.npy").read_bytes() == before
    run_forget("--fname keep --seed 1 --no_wandb --no_eot", *TINY, "--resetNum", "2", "--overwrite")
    assert json.loads((folder / "config.json").read_text())["seed"] == 1


def test_scripts_from_the_command_line(package_dir, tmp_path):
    """The real entry points: one-line error with exit 2, and a real (tiny) run."""
    bad = subprocess.run([sys.executable, "forget_train.py", "--receiver_keep_perc", "2", "--forget_receiver"],
                         cwd=package_dir, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "receiver_keep_perc" in bad.stderr
    ok = subprocess.run([sys.executable, str(package_dir / "mixed_language_forget_samebatch.py"), *C6.split(),
                         "--trainIters", "5", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert len(list((tmp_path / "new_rand_reinit").glob("*/metrics.jsonl"))) == 1


def _is_real_png(path) -> bool:
    """A PNG of at least 300 x 200 pixels and 10 kB (axes, curves and labels drawn, not a blank)."""
    data = path.read_bytes()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return data[:8] == b"\x89PNG\r\n\x1a\n" and width >= 300 and height >= 200 and len(data) > 10_000
