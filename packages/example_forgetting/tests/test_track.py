"""``--track``: the shared trackers on run_mnist.py / run_cifar.py, off by default, never changing what
is trained; their values in metrics.jsonl, TensorBoard and tracked.npz; and
order_examples_by_forgetting.py reading tracked.npz as it reads the statistics pickles."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil

import numpy as np
import pytest
from example_forgetting.cli import mnist_main
from example_forgetting.counting import run_forgetting
from example_forgetting.naming import STATS_SUFFIX
from example_forgetting.order import TRACKED_FILE
from forgetting_common import testing
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_pickle
from forgetting_common.trackers import COMPACT_FILE, TRACKER_NAMES, load_forgetting_counts

ALL = ",".join(TRACKER_NAMES)
SMOKE = ["--data_source", "synthetic", "--train_limit", "64", "--test_limit", "32", "--quiet", "--device", "cpu",
         "--no_tensorboard"]
# with dropout (torch's RNG in every step: plasticity's extra pass must not move it)
MNIST = ["--dataset", "mnist", "--epochs", "3", "--batch_size", "16", "--seed", "2", *SMOKE]
MNIST_NAME = "dataset_mnist__no_dropout_False__seed_2__sorting_file_none__remove_n_0__keep_lowest_n_0"
# BatchNorm (plasticity restores its buffers), augmentation and Cutout, the best weights saved
CIFAR = ["--dataset", "cifar10", "--epochs", "2", "--batch_size", "16", "--data_augmentation", "--cutout",
         "--length", "8", "--save_weights", *SMOKE]


def _same_training(a, b, name: str, t7: str | None = None) -> None:
    """The statistics pickle, the best accuracies, the .t7 weights and the metrics rows less the
    track/ values are the same; only the tracked run has tracked.npz."""
    for suffix in (STATS_SUFFIX, "__best_acc.txt"):
        assert (a / (name + suffix)).read_bytes() == (b / (name + suffix)).read_bytes(), suffix
    if t7 is not None:
        assert (a / t7).read_bytes() == (b / t7).read_bytes()
    rows_a = testing.metrics_rows_without_time(a / "runs" / name / "metrics.jsonl")
    rows_b = [{k: v for k, v in r.items() if not k.startswith("track/")}
              for r in testing.metrics_rows_without_time(b / "runs" / name / "metrics.jsonl")]
    assert rows_a == rows_b
    config_a = json.loads((a / "runs" / name / "config.json").read_text())
    config_b = json.loads((b / "runs" / name / "config.json").read_text())
    assert config_a.pop("track") is None and config_b.pop("track") == ALL
    config_a.pop("output_dir"), config_b.pop("output_dir")
    assert config_a == config_b
    assert not (a / "runs" / name / COMPACT_FILE).exists() and (b / "runs" / name / COMPACT_FILE).is_file()


def test_mnist_training_is_the_same_with_and_without_track(tmp_path, run):
    run(run.mnist, [*MNIST, "--output_dir", tmp_path / "plain"])
    run(run.mnist, [*MNIST, "--output_dir", tmp_path / "tracked", "--track", ALL])
    _same_training(tmp_path / "plain", tmp_path / "tracked", MNIST_NAME)


def test_cifar_training_is_the_same_with_and_without_track(tmp_path, run, narrow):
    name = run(run.cifar, [*CIFAR, "--output_dir", tmp_path / "plain"]).save_fname
    run(run.cifar, [*CIFAR, "--output_dir", tmp_path / "tracked", "--track", ALL])
    _same_training(tmp_path / "plain", tmp_path / "tracked", name, t7=f"checkpoint/cifar10/{name}.t7")


def test_tracked_values_reach_metrics_tensorboard_and_tracked_npz(tmp_path, run):
    """The forgetting tracker counts what the statistics pickle holds: per example, the events,
    whether and when it was first learned (the original's rules applied to the pickle's
    accuracies); the per-epoch events add up to the file's; ids are full-training-set ids."""
    out = tmp_path / "out"
    argv = [a for a in MNIST if a != "--no_tensorboard"]
    run(run.mnist, [*argv, "--output_dir", out, "--track", "forgetting,margin,ece"])
    run_dir = out / "runs" / MNIST_NAME
    rows = testing.metrics_rows_without_time(run_dir / "metrics.jsonl")
    keys = {"track/forgetting_events", "track/learned_fraction", "track/unforgettable_fraction",
            "track/margin_mean", "track/margin_median", "track/misclassified_fraction",
            "track/eval_margin_mean", "track/eval_misclassified_fraction", "track/ece", "track/train_ece"}
    assert len(rows) == 3 and all(keys <= set(r) for r in rows)
    # the recorder's own summaries and the tracker's are the same numbers
    for r in rows:
        for key in ("forgetting_events", "learned_fraction", "unforgettable_fraction"):
            assert r[f"track/{key}"] == r[f"stats/{key}"]
    scalars = testing.tensorboard_scalars(run_dir / "tensorboard")
    assert keys <= {tag for tag, _step, _value in scalars}

    counts = load_forgetting_counts(run_dir / COMPACT_FILE)
    stats = load_pickle(out / (MNIST_NAME + STATS_SUFFIX))
    expected = run_forgetting(stats, 3)
    order = np.argsort(expected.ids)
    assert np.array_equal(counts.ids, np.arange(64)) and np.array_equal(expected.ids[order], counts.ids)
    assert np.array_equal(counts.events, expected.events[order])
    assert np.array_equal(counts.learned, expected.learned[order])
    np.testing.assert_array_equal(counts.first_learned, expected.first_learned[order])  # NaN: never learned
    assert (counts.presentations == 3).all() and counts.epochs == 3
    assert counts.events.sum() == sum(r["track/forgetting_events"] for r in rows)
    # the margins at the last presentation are the pickle's last column
    margins = np.load(run_dir / COMPACT_FILE)["margin.last"]
    np.testing.assert_allclose(margins, np.array([stats[i][2][-1] for i in range(64)]), rtol=1e-12)


def test_tracked_ids_are_full_training_set_ids_after_removal(tmp_path, run):
    (tmp_path / "in").mkdir()
    order = np.random.RandomState(0).permutation(64)
    (tmp_path / "in" / "s.pkl").write_bytes(pickle.dumps({"indices": order}))
    result = run(run.mnist, [*MNIST, "--output_dir", tmp_path / "out", "--sorting_file", "s", "--input_dir",
                             tmp_path / "in", "--remove_n", "20", "--keep_lowest_n", "0", "--track", "forgetting"])
    counts = load_forgetting_counts(tmp_path / "out" / "runs" / result.save_fname / COMPACT_FILE)
    assert sorted(counts.ids.tolist()) == sorted(order[20:].tolist()) and len(counts.ids) == 44


# ---- the order script on tracked.npz ------------------------------------------------------------


@pytest.fixture(scope="module")
def tracked_runs(tmp_path_factory):
    """Two seeds and a permuted-MNIST run with --track forgetting; ``compact/`` holds only their
    run folders (config.json, tracked.npz ...), as a copy without the statistics pickles would."""
    root = tmp_path_factory.mktemp("tracked")
    for dataset, seed in (("mnist", 1), ("mnist", 2), ("permuted_mnist", 1)):
        with contextlib.redirect_stdout(io.StringIO()):
            mnist_main(["--dataset", dataset, "--no_dropout", "--epochs", "4", "--seed", str(seed), *SMOKE,
                        "--output_dir", str(root / "full"), "--track", "forgetting"])
    shutil.copytree(root / "full" / "runs", root / "compact" / "runs")
    return root


MNIST_ONLY = ["--input_fname_args", "dataset", "mnist", "no_dropout", "True", "sorting_file", "none"]


def test_order_from_tracked_npz_equals_order_from_the_pickles(tracked_runs, run):
    root = tracked_runs
    common = ["--epochs", "4", "--no_plot", *MNIST_ONLY]
    pickles = run(run.order, ["--input_dir", root / "full", "--output_dir", root / "o1", "--output_name", "s", *common])
    text_full = run.stdout
    compact = run(run.order, ["--input_dir", root / "compact", "--output_dir", root / "o2", "--output_name", "s",
                              *common])
    text_compact = run.stdout
    # from the pickles: the two mnist pickles, their tracked.npz skipped as the same runs
    included = [line for line in text_full.splitlines() if line.startswith("including file:")]
    assert len(included) == 2 and all(line.endswith("__stats_dict.pkl") for line in included)
    assert text_full.count("(the same run as its statistics file)") == 3
    # from tracked.npz alone: config.json matched (permuted_mnist is not 'mnist')
    included = [line for line in text_compact.splitlines() if line.startswith("including file:")]
    assert len(included) == 2 and all("dataset_mnist__" in line and TRACKED_FILE in line for line in included)
    assert np.array_equal(compact.indices, pickles.indices) and np.array_equal(compact.counts, pickles.counts)
    assert (root / "o1" / "s.pkl").read_bytes() == (root / "o2" / "s.pkl").read_bytes()
    assert pickles.counts.max() > 0 and pickles.unforgettable == compact.unforgettable


def test_order_matches_input_fname_args_against_config_json(tracked_runs, run):
    root = tracked_runs
    one = run(run.order, ["--input_dir", root / "compact", "--output_dir", root / "o3", "--output_name", "s",
                          "--epochs", "4", "--no_plot", *MNIST_ONLY, "seed", "2"])
    assert len(one.runs) == 1 and "seed_2" in one.runs[0].source
    with pytest.raises(UserError, match="No input files found"):
        run(run.order, ["--input_dir", root / "compact", "--output_dir", root / "o4", "--output_name", "s",
                        "--no_plot", "--input_fname_args", "seed", "7"])
    # more presentations than --epochs: refused in one line, nothing written
    with pytest.raises(UserError, match=r"counted up to 4 presentations per example, more than --epochs 3"):
        run(run.order, ["--input_dir", root / "compact", "--output_dir", root / "o5", "--output_name", "s",
                        "--epochs", "3", "--no_plot", *MNIST_ONLY])
    assert not (root / "o5" / "s.pkl").exists()


def test_tracked_file_name_is_the_trackers_one():
    assert TRACKED_FILE == COMPACT_FILE


def test_the_order_script_still_runs_without_torch():
    """Reading tracked.npz imports the trackers (and torch) only when there is one to read."""
    import subprocess
    import sys

    code = ("import sys; from example_forgetting.cli import parse_order; import example_forgetting.order; "
            "parse_order(['--input_dir', 'a', '--output_dir', 'b', '--output_name', 'c']); "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
