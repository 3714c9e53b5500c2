"""The paper's figures: the forgetting-count histogram (Fig. 1) and the removal curve (Fig. 5/6)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from example_forgetting import plots
from example_forgetting.cli import order_main
from example_forgetting.naming import MNIST_NAME_ARGS, STATS_SUFFIX, parse_fname, save_fname
from example_forgetting.stats import order_examples, run_forgetting
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_pickle

MNIST_FILTER = ["dataset", "mnist", "no_dropout", "True", "sorting_file", "none", "remove_n", "0",
                "keep_lowest_n", "0"]


def assert_real_png(path):
    """A PNG that holds a drawing: large enough, and not one flat colour."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 300 and image.shape[1] >= 500
    assert image[..., :3].std() > 0.05


def bar_heights(ax):
    return [round(p.get_height(), 6) for p in ax.patches]


def test_histogram_bars_are_fractions_per_count_with_never_learned_apart(tmp_path):
    # six examples: totals 0, 0, 0, 1, 2 and one never learned (penalty 4 per run, 1 run)
    counts = np.array([0, 0, 0, 1, 2, 4])
    never = np.array([False] * 5 + [True])
    fig = plots.forgetting_histogram(counts, never, title="hand")
    ax = fig.axes[0]
    # bars 0, 1, 2 of the learned examples, then the "never" bar; no bar at the penalty 4
    assert bar_heights(ax)[:4] == [round(x, 6) for x in (3 / 6, 1 / 6, 1 / 6, 1 / 6)]
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "never"
    assert "3 of 6 unforgettable (50.0%)" in ax.get_title()
    path = plots.save_figure(fig, tmp_path / "h.png")
    assert_real_png(path)


def test_never_learned_mask_flags_examples_some_run_never_learned():
    run1 = run_forgetting({0: [[0.1] * 3, [1, 1, 1], [0.1] * 3], 1: [[0.1] * 3, [0, 0, 0], [0.1] * 3],
                           2: [[0.1] * 3, [1, 0, 1], [0.1] * 3]}, 3)
    run2 = run_forgetting({0: [[0.1] * 3, [1, 1, 1], [0.1] * 3], 1: [[0.1] * 3, [0, 1, 1], [0.1] * 3],
                           2: [[0.1] * 3, [0, 0, 0], [0.1] * 3]}, 3)
    ordering = order_examples([run1, run2], 3)
    # totals: ex0 0, ex1 3 + 0, ex2 1 + 3; ex1 and ex2 were never learned in one run each
    assert ordering.indices.tolist() == [0, 1, 2] and ordering.counts.tolist() == [0, 3, 4]
    assert plots.never_learned_mask(ordering).tolist() == [False, True, True]


def test_order_script_draws_the_histogram_beside_its_output(mnist_dirs, tmp_path, run):
    m = mnist_dirs["M"]
    assert_real_png(m / "mnist_sorted_histogram.png")
    run(order_main, ["--output_dir", tmp_path, "--output_name", "s", "--input_dir", m, "--input_fname_args",
                     *MNIST_FILTER, "--epochs", 3, "--no_plot"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.pkl"]
    # the sorted output is the original's two-key pickle whether or not a figure is drawn
    assert set(load_pickle(tmp_path / "s.pkl")) == {"indices", "forgetting counts"}


def test_order_script_refuses_to_overwrite_an_existing_histogram(mnist_dirs, tmp_path, run):
    (tmp_path / "s_histogram.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="s_histogram.png already exists"):
        run(order_main, ["--output_dir", tmp_path, "--output_name", "s", "--input_dir", mnist_dirs["M"],
                         "--input_fname_args", *MNIST_FILTER, "--epochs", 3])
    assert (tmp_path / "s_histogram.png").read_bytes() == b"mine" and not (tmp_path / "s.pkl").exists()


def _fake_run(folder, test_acc, **names):
    values = {"dataset": "mnist", "no_dropout": False, "seed": 1, "sorting_file": "none", "remove_n": 0,
              "keep_lowest_n": 0, **names}
    stats = {0: [[0.1], [1], [0.2]], "train": [[], [50.0]], "test": [[], list(test_acc)]}
    path = folder / (save_fname(values, MNIST_NAME_ARGS) + STATS_SUFFIX)
    path.write_bytes(pickle.dumps(stats))
    return path


@pytest.fixture
def removal_folder(tmp_path):
    """Hand-made statistics files: two full-data runs, selected and random removal of 10 and 20
    over two seeds, a window run, and statistics runs without dropout (another setting)."""
    d = tmp_path / "runs"
    d.mkdir()
    for seed, acc in ((1, [50, 60]), (2, [70, 65])):
        _fake_run(d, acc, seed=seed)
    for seed in (1, 2):
        _fake_run(d, [10, 90 + seed], no_dropout=True, seed=seed)  # statistics runs: left out
        for n, sel, rnd in ((10, 58 + seed, 55 + seed), (20, 50 + seed, 40 + seed)):
            _fake_run(d, [0, sel], seed=seed, sorting_file="s", remove_n=n, keep_lowest_n=0)
            _fake_run(d, [rnd, 0], seed=seed, sorting_file="s", remove_n=n, keep_lowest_n=-1)
    _fake_run(d, [0, 33], sorting_file="s", remove_n=10, keep_lowest_n=5)
    (d / "s.pkl").write_bytes(pickle.dumps({"indices": np.arange(30), "forgetting counts": np.r_[np.zeros(12), np.ones(18)]}))
    return d


def test_file_names_parse_back(removal_folder):
    name = save_fname({"dataset": "permuted_mnist", "no_dropout": True, "seed": 3, "sorting_file": "mnist_sorted",
                       "remove_n": 5, "keep_lowest_n": -1}, MNIST_NAME_ARGS) + STATS_SUFFIX
    assert parse_fname(name) == {"dataset": "permuted_mnist", "no_dropout": "True", "seed": "3",
                                 "sorting_file": "mnist_sorted", "remove_n": "5", "keep_lowest_n": "-1"}
    assert parse_fname("mnist_sorted.pkl") is None


def test_removal_table_from_a_folder(removal_folder):
    table = plots.removal_table(plots.removal_runs(removal_folder))
    # best test accuracy per run; full-data runs are the point 0 of both curves
    assert table == {"selected": {0: [60.0, 70.0], 10: [59.0, 60.0], 20: [51.0, 52.0]},
                     "random": {0: [60.0, 70.0], 10: [56.0, 57.0], 20: [41.0, 42.0]}}
    final = plots.removal_table(plots.removal_runs(removal_folder, metric="final"))
    assert final["selected"][0] == [60.0, 65.0] and final["random"][10] == [0.0, 0.0]


def test_removal_runs_of_two_settings_need_a_filter(removal_folder):
    _fake_run(removal_folder, [1, 2], no_dropout=True, sorting_file="s", remove_n=10, keep_lowest_n=0)
    with pytest.raises(UserError, match="differ in no_dropout False / True.*--input_fname_args no_dropout"):
        plots.removal_table(plots.removal_runs(removal_folder))
    table = plots.removal_table(plots.removal_runs(removal_folder, ["no_dropout", "False"]))
    assert table["selected"][10] == [59.0, 60.0]


def test_removal_command_draws_curve_window_and_points(removal_folder, capsys):
    out = plots.main(["removal", "--input_dir", str(removal_folder)])
    assert out == removal_folder / "removal_curve.png"
    assert_real_png(out)
    assert_real_png(removal_folder / "removal_curve_window.png")
    points = json.loads((removal_folder / "removal_curve.json").read_text())
    assert points["unforgettable"] == 12 and points["setting"] == {"dataset": "mnist", "no_dropout": "False"}
    assert points["curves"]["random"]["20"] == [41.0, 42.0] and points["windows"] == {"5": 33.0}
    with pytest.raises(UserError, match="removal_curve.png already exists"):
        plots.main(["removal", "--input_dir", str(removal_folder)])


def test_removal_curve_draws_mean_and_seed_spread():
    fig = plots.removal_curve({"selected": {0: [60.0, 70.0], 10: [59.0, 61.0]}, "random": {0: [60.0, 70.0], 10: [50.0]}},
                              unforgettable=12, train_size=30)
    ax = fig.axes[0]
    selected = ax.lines[0]
    assert selected.get_xdata().tolist() == [0, 10] and selected.get_ydata().tolist() == [65.0, 60.0]
    assert any("all 12 unforgettable removed" in t.get_text() for t in ax.get_legend().get_texts())


def test_removal_curve_of_the_smoke_runs(mnist_dirs, tmp_path):
    """The README's removal commands (selected and random, 16 removed) beside the full-data run
    with dropout; the statistics runs without dropout are another setting and stay out."""
    m = mnist_dirs["M"]
    out = plots.main(["removal", "--input_dir", str(m), "--output", str(tmp_path / "r.png")])
    assert_real_png(out)
    points = json.loads((tmp_path / "r.json").read_text())

    def best(name):
        return max(load_pickle(m / (name + STATS_SUFFIX))["test"][1])

    full = best("dataset_mnist__no_dropout_False__seed_1__sorting_file_none__remove_n_0__keep_lowest_n_0")
    removed = "dataset_mnist__no_dropout_False__seed_1__sorting_file_mnist_sorted__remove_n_16__keep_lowest_n_{}"
    assert points["curves"] == {"selected": {"0": [full], "16": [best(removed.format(0))]},
                                "random": {"0": [full], "16": [best(removed.format(-1))]}}
    counts = load_pickle(m / "mnist_sorted.pkl")["forgetting counts"]
    assert points["unforgettable"] == int((counts == 0).sum())
