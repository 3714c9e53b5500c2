"""TensorBoard read back from the event files, and the paper's figure (accuracy per state) from runs."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict

import pytest
from forgetting_common import testing
from lure import plots

TINY = ["--arch", "resnet20s", "--epochs", "2", "--decreasing_lr", "1", "--gamma", "0.1", "--batch_size", "16",
        "--meta_batch_size", "20", "--meta_batch_number", "3", "--seed", "1", "--device", "cpu", "--quiet",
        "--data_source", "synthetic", "--image_size", "8", "--test_limit", "16"]

EPOCH_TAGS = {"train/acc", "train/loss", "eval/val_acc", "eval/val_loss", "eval/best_val_acc", "stats/gen_gap",
              "stats/lr", "test/acc", "test/loss"}
STATE_TAGS = {"test/state_acc", "test/state_errors", "test/state_ece", "test/state_nll"}
UNLEARN_TAGS = {"test/state_acc_after_unlearn", "stats/mask_fraction"}  # from state 2 on
FINAL_TAGS = {"test/final_acc", "test/cer", "test/final_ece", "test/cumulative_error_rate"}


def is_drawn_png(path) -> bool:
    """A real PNG with drawn content: a blank canvas has one colour, a plot with axes, text and lines many."""
    from matplotlib.image import imread

    if path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n" or path.stat().st_size < 5000:
        return False
    image = imread(str(path))
    colours = {tuple(px) for px in image.reshape(-1, image.shape[-1])[::7].tolist()}
    return image.shape[0] > 200 and image.shape[1] > 200 and len(colours) > 20


@pytest.fixture(scope="module")
def lure_run(tmp_path_factory):
    from lure.cli import main

    save = tmp_path_factory.mktemp("tb") / "S"
    results = main(["--save_dir", str(save), "--use_snip", "--snip_examples", "8", *TINY])
    return save, results


def test_tensorboard_tags_are_namespaced_steps_monotonic(lure_run):
    save, results = lure_run
    points = testing.tensorboard_scalars(save / "wb_offline" / "tensorboard")
    steps = defaultdict(list)
    values = defaultdict(list)
    for tag, step, value in points:
        steps[tag].append(step)
        values[tag].append(value)
    assert set(steps) == EPOCH_TAGS | STATE_TAGS | UNLEARN_TAGS | FINAL_TAGS
    for tag, seen in steps.items():
        assert all(a < b for a, b in zip(seen, seen[1:])), (tag, seen)  # strictly increasing: no repeated point
    epochs, states = 2, 3
    for tag in EPOCH_TAGS:
        assert steps[tag] == list(range(states * epochs)), tag  # one point per epoch, one axis for the whole run
    for tag in STATE_TAGS:
        assert steps[tag] == [epochs - 1, 2 * epochs - 1, 3 * epochs - 1], tag  # the last epoch of each state
    for tag in UNLEARN_TAGS:
        assert steps[tag] == [2 * epochs - 1, 3 * epochs - 1], tag
    for tag in FINAL_TAGS:
        assert steps[tag] == [states * epochs], tag
    assert values["test/state_acc"] == pytest.approx(results["test_acc_per_state"])
    assert values["test/cer"] == [results["cer_sum"]]
    assert values["stats/lr"] == pytest.approx([0.1, 0.01] * 3)
    # counters stay in metrics.jsonl, where they locate the rows
    rows = testing.metrics_rows_without_time(save / "wb_offline" / "metrics.jsonl")
    assert [(r["state"], r["epoch"]) for r in rows if "epoch" in r] == [(k, e) for k in (1, 2, 3) for e in (0, 1)]


def test_every_run_draws_its_figure(lure_run):
    save, _ = lure_run
    assert is_drawn_png(save / "wb_offline" / plots.FIGURE_NAME)


def test_curves_hand_computed():
    def run(script, accs, after=None, seed=1, **flags):
        config = {"script": script, "dataset": "mnist5k", "arch": "mnistnet", "meta_batch_number": 2,
                  "meta_batch_size": 500, "gamma": 0.1, "seed": seed, **flags}
        states = [{"test_acc": a} for a in accs]
        if after is not None:
            states[1]["test_acc_after_unlearn"] = after
        return {"config": config, "states": states}

    runs = [run("LURE_main.py", [50, 62], 40, use_snip=True, snip_size=0.2),
            run("LURE_main.py", [52, 66], 44, seed=2, use_snip=True, snip_size=0.2),
            run("LURE_main.py", [50, 60]), run("LURE_main.py", [54, 64], seed=2),
            run("ALMA.py", [51, 58], gamma=1.0)]
    got = plots.curves(runs)
    assert [c.label for c in got] == ["ALMA.py warm start", "warm start, gamma 0.1", "LURE (SNIP 20%), gamma 0.1"]
    alma, warm, lure = got
    assert (alma.runs, alma.mean, alma.sd) == (1, [51, 58], [0.0, 0.0])
    assert warm.mean == [52, 62] and warm.sd == pytest.approx([2 ** 1.5, 2 ** 1.5])  # stdev of (50, 54)
    assert lure.mean == [51, 64] and lure.sd == pytest.approx([2 ** 0.5, 2 * 2 ** 0.5])
    assert (lure.after_unlearn_states, lure.after_unlearn_mean) == ([2], [42])
    assert warm.after_unlearn_states == [] and statistics.fmean(lure.mean) > statistics.fmean(warm.mean)
    assert plots.method_label({"script": "LURE_main.py", "use_randinit": True, "gamma": 1.0}) == "from scratch"
    assert plots.method_label({"script": "LURE_main.py", "use_llf": True, "use_shrink_perturb": True,
                               "gamma": 1.0}) == "LLF + shrink & perturb"


def test_log_dir_figure_puts_warm_start_beside_lure_and_plot_runs_collects_folders(runner, tmp_path):
    logs = tmp_path / "L"
    runner.main(["--save_dir", tmp_path / "warm", "--log-dir", logs, "--run", "warm", *TINY])
    _, out, _ = runner.main(["--save_dir", tmp_path / "lure", "--log-dir", logs, "--run", "lure", "--use_snip", *TINY])
    assert f"Figure: {logs / plots.FIGURE_NAME} (2 runs)" in out
    assert is_drawn_png(logs / plots.FIGURE_NAME) and is_drawn_png(logs / "lure" / plots.FIGURE_NAME)
    # the command: the save folders and the log folder hold copies of the same two runs, counted once
    out_png = tmp_path / "fig.png"
    plots.main([str(tmp_path / "warm"), str(tmp_path / "lure"), str(logs), "--out", str(out_png)])
    line = runner.capsys.readouterr().out.strip()
    assert line == f"{out_png}: warm start, gamma 0.1 (1 run); LURE (SNIP 20%), gamma 0.1 (1 run)"
    assert is_drawn_png(out_png)
    # a second seed of the warm start: error bars for it
    runner.main(["--save_dir", tmp_path / "warm2", *[a if a != "1" else "2" for a in TINY]])
    seeds = [json.loads((tmp_path / d / "results.json").read_text())["test_acc_per_state"] for d in ("warm", "warm2")]
    curves = plots.curves(plots.load_runs([tmp_path / "warm", tmp_path / "warm2", tmp_path / "lure"]))
    assert curves[0].runs == 2 and curves[0].sd == pytest.approx([statistics.stdev(s) for s in zip(*seeds)])


def test_plot_runs_bad_input_is_one_line(tmp_path, capsys):
    from forgetting_common import run_main

    def error(argv):
        with pytest.raises(SystemExit) as info:
            run_main(lambda: plots.main([str(a) for a in argv]), prog="plot_runs.py")
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return info.value.code, lines[0]

    (tmp_path / "empty").mkdir()
    assert error([tmp_path / "empty", "--out", tmp_path / "f.png"]) == (
        2, f"plot_runs.py: error: no LURE_main.py / ALMA.py results.json under {tmp_path / 'empty'}")
    code, line = error([tmp_path / "missing", "--out", tmp_path / "f.png"])
    assert code == 2 and "does not exist" in line
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    code, line = error([tmp_path / "bad", "--out", tmp_path / "f.png"])
    assert code == 2 and "is not a readable results file" in line
    (tmp_path / "f.png").write_bytes(b"mine")
    code, line = error([tmp_path / "empty", "--out", tmp_path / "f.png"])
    assert code == 2 and "exists; pass --overwrite" in line and (tmp_path / "f.png").read_bytes() == b"mine"
