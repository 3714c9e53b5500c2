"""Bad input: one clear line, a non-zero exit, and nothing written or overwritten."""

from __future__ import annotations

import pickle

import pytest
from example_forgetting.cli import cifar_main, mnist_main, order_main
from forgetting_common.errors import UserError

SMOKE = ["--data_source", "synthetic", "--train_limit", "64", "--test_limit", "32", "--quiet",
         "--device", "cpu", "--no_tensorboard", "--epochs", "1"]


def _files(path):
    return sorted(p.relative_to(path) for p in path.rglob("*")) if path.exists() else []


def _mnist(tmp_path, *extra):
    return ["--dataset", "mnist", "--output_dir", str(tmp_path / "out"), "--input_dir", str(tmp_path / "in"),
            *SMOKE, *map(str, extra)]


@pytest.fixture
def sorted_dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    return d


def test_missing_sorting_file(tmp_path, sorted_dir):
    with pytest.raises(UserError, match="sorting file not found"):
        mnist_main(_mnist(tmp_path, "--sorting_file", "mnist_sorted", "--remove_n", 10))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps({"idx": [1, 2]}), pickle.dumps({"indices": ["a"]}),
                                     pickle.dumps({"indices": [1, 1, 2]})])
def test_malformed_sorting_file(tmp_path, sorted_dir, content):
    (sorted_dir / "mnist_sorted.pkl").write_bytes(content)
    with pytest.raises(UserError, match="sorting file"):
        mnist_main(_mnist(tmp_path, "--sorting_file", "mnist_sorted", "--remove_n", 10))
    assert not (tmp_path / "out").exists()


def test_sorting_file_for_another_dataset(tmp_path, sorted_dir):
    (sorted_dir / "big.pkl").write_bytes(pickle.dumps({"indices": list(range(1000))}))
    with pytest.raises(UserError, match="holds example ids up to 999"):
        mnist_main(_mnist(tmp_path, "--sorting_file", "big", "--remove_n", 10))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("k", [0, -1])
def test_remove_n_larger_than_training_set(tmp_path, sorted_dir, k):
    (sorted_dir / "s.pkl").write_bytes(pickle.dumps({"indices": list(range(64))}))
    with pytest.raises(UserError, match="larger than the training set"):
        mnist_main(_mnist(tmp_path, "--sorting_file", "s", "--remove_n", 65, "--keep_lowest_n", k))
    assert not (tmp_path / "out").exists()


def test_sorting_file_name_with_a_path(tmp_path):
    with pytest.raises(UserError, match="not a path"):
        mnist_main(_mnist(tmp_path, "--sorting_file", "../x"))


@pytest.mark.parametrize("main,argv", [
    (mnist_main, ["--dataset", "fashion"]),
    (cifar_main, ["--dataset", "svhn"]),
    (cifar_main, ["--model", "vgg"]),
    (cifar_main, ["--optimizer", "rmsprop"]),
    (mnist_main, ["--epochs", "x"]),
])
def test_unknown_choices_exit_2_in_one_line(tmp_path, capsys, main, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--output_dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
    assert not (tmp_path / "out").exists()


def test_filter_that_matches_nothing(tmp_path):
    (tmp_path / "dataset_mnist__seed_1__stats_dict.pkl").write_bytes(pickle.dumps({0: [[0.1], [1], [0.2]]}))
    with pytest.raises(UserError, match="No input files found"):
        order_main(["--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--output_name", "x",
                    "--input_fname_args", "dataset", "permuted_mnist"])
    assert not (tmp_path / "o").exists()


def test_odd_filter_and_malformed_stats(tmp_path):
    with pytest.raises(UserError, match="odd number"):
        order_main(["--input_dir", str(tmp_path), "--output_dir", str(tmp_path), "--output_name", "x",
                    "--input_fname_args", "dataset"])
    (tmp_path / "a__stats_dict.pkl").write_bytes(b"\x80garbage")
    with pytest.raises(UserError, match="cannot read statistics file"):
        order_main(["--input_dir", str(tmp_path), "--output_dir", str(tmp_path), "--output_name", "x"])
    assert not (tmp_path / "x.pkl").exists()


def test_finished_results_are_not_overwritten(tmp_path):
    argv = _mnist(tmp_path)
    res = mnist_main(argv)
    before = res.stats_path.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        mnist_main(argv)
    assert res.stats_path.read_bytes() == before
    mnist_main([*argv, "--overwrite"])  # explicit replacement works
    order_argv = ["--input_dir", str(tmp_path / "out"), "--output_dir", str(tmp_path / "out"), "--output_name", "s",
                  "--epochs", "1"]
    order_main(order_argv)
    with pytest.raises(UserError, match="already exists"):
        order_main(order_argv)


def test_remove_subsample_needs_a_sorting_file(tmp_path):
    with pytest.raises(UserError, match="needs a --sorting_file"):
        cifar_main(["--remove_subsample", "4", "--keep_lowest_n", "16", "--output_dir", str(tmp_path / "o"), *SMOKE])
    assert not (tmp_path / "o").exists()


def test_missing_real_data_names_layout_and_flag(tmp_path):
    with pytest.raises(UserError, match=r"MNIST not found .*--data_root"):
        mnist_main(["--output_dir", str(tmp_path / "o"), "--data_root", str(tmp_path / "nodata"), "--no_download",
                    "--quiet", "--device", "cpu"])
    assert not (tmp_path / "o").exists()


def test_bad_input_through_the_script_is_one_line(tmp_path, script):
    proc = script("run_cifar.py", "--output_dir", tmp_path / "o", "--sorting_file", "nope", "--input_dir", tmp_path,
                  *SMOKE)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("run_cifar.py: error: sorting file not found")
    assert not (tmp_path / "o").exists()
