"""Bad input: one clear line, a non-zero exit, nothing overwritten; --print_config touches nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from forgetting_common.errors import UserError
from upgd.cli import main
from upgd.seed_commands import seed_command

PACKAGE = Path(__file__).resolve().parents[1]
FAKE = ["--n_samples", "12", "--change_freq", "4", "--fake_data", "1", "--tensorboard", "0", "--quiet"]


@pytest.mark.parametrize("argv,needle", [
    (["--task", "label_permuted_cifar", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks"],
     "valid tasks: feature_utils"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "upgd", "--network", "fully_connected_relu_with_hooks"],
     "valid learners: KernelConvexCombi"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "resnet"],
     "valid networks: conv_mnist"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
      "--beta_utility", "0.9"], "takes no hyper-parameter 'beta_utility'"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "baseline", "--lr"], "odd number of tokens"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
      "--lr", "fast"], "expected a number"),
    (["--learner", "sgd", "--network", "fully_connected_relu_with_hooks"], "--task is required"),
    (["--task", "label_permuted_cifar10_stats", "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
      "--n_samples", "1.5e3x"], "expected an integer"),
])
def test_bad_arguments_raise_user_error(argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=None) as err:
        main([*argv, "--save_path", str(tmp_path)])
    assert needle in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_missing_dataset_names_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for task, what in (("input_permuted_mnist_stats", "MNIST"), ("label_permuted_cifar10_stats", "CIFAR10"),
                       ("label_permuted_emnist_stats", "EMNIST"), ("label_permuted_mini_imagenet_stats", "mini-ImageNet")):
        with pytest.raises(UserError) as err:
            main(["--task", task, "--learner", "sgd", "--network", "fully_connected_relu_with_hooks",
                  "--data_dir", str(tmp_path / "nowhere"), "--save_path", str(tmp_path / "logs"), "--quiet"])
        assert what in str(err.value) and "--data_dir" in str(err.value)


def test_finished_result_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1",
            "--network", "fully_connected_relu_with_hooks", "--save_path", str(tmp_path / "logs"), *FAKE]
    main(argv)
    result = next(p for p in (tmp_path / "logs").rglob("0.json"))
    before = result.read_bytes()
    with pytest.raises(UserError, match="already holds a finished result"):
        main(argv)
    assert result.read_bytes() == before
    main([*argv, "--overwrite", "1", "--seed", "0"])  # explicit opt-in replaces it


def test_repeated_hyper_parameter_keeps_first_position_last_value(tmp_path, monkeypatch):
    from upgd.cli import parse

    cfg, _, _ = parse(["--task", "label_permuted_cifar10_stats", "--learner", "baseline", "--network",
                       "convolutional_network_relu_with_hooks", "--lr", "0.1", "--sigma", "0.5", "--lr", "0.01"])
    assert cfg.hp_string() == "lr_0.01_sigma_0.5"


def test_print_config_touches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [*seed_command("ratio_norm"), "--data_dir", str(tmp_path / "nowhere"), "--save_path", str(tmp_path / "x"),
            "--print_config"]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["learner"] == "ratio_norm" and config["n_samples"] == 1000000 and config["lr"] == 0.01
    assert config["seed"] == 19 and config["network"] == "convolutional_network_relu_with_hooks"
    assert not any(tmp_path.iterdir())


def test_script_one_line_error_and_exit_code(tmp_path):
    script = PACKAGE / "core" / "run" / "run_stats.py"
    proc = subprocess.run([sys.executable, str(script), "--task", "label_permuted_cifar10_stats", "--learner",
                           "baseline", "--network", "nope", "--save_path", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_stats.py: error: unknown network 'nope'")
    assert not any(tmp_path.iterdir())


def test_failure_inside_run_writes_failed_files_and_raises(tmp_path, monkeypatch):
    import upgd.train

    monkeypatch.chdir(tmp_path)

    def boom(net, *args):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(upgd.train, "weight_and_grad_stats", boom)
    argv = ["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1",
            "--network", "fully_connected_relu_with_hooks", "--save_path", str(tmp_path / "logs"), *FAKE]
    with pytest.raises(RuntimeError, match="simulated failure"):
        main(argv)
    assert "label_permuted_digits_stats" in (tmp_path / "failed_sgd.txt").read_text()
    assert "simulated failure" in (tmp_path / "failed_sgd_msgs.txt").read_text()
    assert not list((tmp_path / "logs").rglob("0.json"))  # no result for a failed run


def test_save_model_dir_checkpoint(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    main(["--task", "label_permuted_digits_stats", "--learner", "sgd", "--lr", "0.1", "--network",
          "fully_connected_relu_with_hooks", "--save_path", str(tmp_path / "logs"), "--save_model_dir",
          str(tmp_path / "models"), *FAKE])
    state = torch.load(tmp_path / "models" / "model_sgd_label_permuted_digits_stats_final.pth", weights_only=True)
    assert state["linear_1.weight"].shape == (300, 64)


# -- the bad-input table (README "Bad input"): input -> first line on stderr -> exit code ---------------

BASE = ["--task", "label_permuted_digits_stats", "--learner", "baseline", "--network",
        "fully_connected_relu_with_hooks", "--n_samples", "30", "--change_freq", "10", "--fake_data", "1"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _corrupt_jpeg(tmp_path):
    from forgetting_common.data.fake import write_image_folder

    root = tmp_path / "data"
    write_image_folder(root / "cifar10-jpeg", ("train", "test"), CIFAR_CLASSES, 1)
    (root / "cifar10-jpeg" / "train" / "cat" / "0000.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    return ["--task", "label_permuted_cifar10_stats", "--network", "convolutional_network_relu_with_hooks",
            "--fake_data", "0", "--data_dir", str(root)]


def _malicious_checkpoint(tmp_path):
    import pickle

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    run = (tmp_path / "logs" / "_runs" / "label_permuted_digits_stats" / "baseline" / "fully_connected_relu_with_hooks"
           / "0")
    run.mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(pickle.dumps(Exploit()))
    return ["--resume"]


def _no_space(monkeypatch):
    import errno

    import upgd.checkpoint

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(upgd.checkpoint, "atomic_torch_save", full)
    return ["--checkpoint_every", "10"]


def _read_only(monkeypatch):
    import errno

    import forgetting_common.runlog

    def read_only(path, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(forgetting_common.runlog, "atomic_write_json", read_only)
    return []


BAD_INPUT = [
    # (name, extra argv or a setup(tmp_path, monkeypatch) -> argv, expected first line (start), exit code)
    ("negative lr", ["--lr", "-1"], "run_stats.py: error: --lr -1: must be zero or more", 2),
    ("nan sigma", ["--sigma", "nan"], "run_stats.py: error: --sigma nan: expected a finite number", 2),
    ("infinite weight decay", ["--weight_decay", "inf"], "run_stats.py: error: --weight_decay inf: expected a finite", 2),
    ("negative weight decay", ["--weight_decay", "-0.1"], "run_stats.py: error: --weight_decay -0.1: must be zero", 2),
    ("beta_utility 1", ["--beta_utility", "1"], "run_stats.py: error: --beta_utility 1: must lie in [0, 1)", 2),
    ("lr not a number", ["--lr", "fast"], "run_stats.py: error: --lr 'fast': expected a number", 2),
    ("zero samples", ["--n_samples", "0"], "run_stats.py: error: --n_samples 0: must be at least 1", 2),
    ("negative checkpoint interval", ["--checkpoint_every", "-5"],
     "run_stats.py: error: --checkpoint_every -5: must be at least 0", 2),
    ("bad 0/1 value", ["--fake_data", "maybe"], "run_stats.py: error: --fake_data 'maybe': expected 0/1", 2),
    ("unknown choice", ["--utility_max", "best"], "run_stats.py: error: --utility_max 'best': use raw", 2),
    ("unknown worker", ["--stats_worker", "gpu"], "run_stats.py: error: --stats_worker 'gpu': use auto, thread or process", 2),
    ("unknown learner", ["--learner", "upgd"], "run_stats.py: error: unknown learner 'upgd'; valid learners:", 2),
    ("unknown network", ["--network", "resnet"], "run_stats.py: error: unknown network 'resnet'", 2),
    ("network without hooks", ["--network", "fully_connected_relu"],
     "run_stats.py: error: run_stats needs a network with hooks", 2),
    ("missing value", ["--seed"], "run_stats.py: error: arguments come as --key value pairs", 2),
    ("resume and overwrite", ["--resume", "--overwrite"], "run_stats.py: error: --resume 1 continues a run", 2),
    ("missing data", ["--fake_data", "0", "--task", "input_permuted_mnist_stats", "--data_dir", "/nonexistent"],
     "run_stats.py: error: MNIST not found at /nonexistent", 2),
    ("corrupt JPEG", lambda tmp, mp: _corrupt_jpeg(tmp), "run_stats.py: error: image ", 2),
    ("checkpoint that runs code", lambda tmp, mp: _malicious_checkpoint(tmp), "run_stats.py: error: checkpoint ", 2),
    ("output folder under /proc", ["--save_path", "/proc/upgd_out"], "run_stats.py: error: /proc/upgd_out: ", 2),
    ("read-only output folder", lambda tmp, mp: _read_only(mp), "run_stats.py: error: ", 2),
    ("full disk at a checkpoint", lambda tmp, mp: _no_space(mp), "run_stats.py: error: ", 2),
    ("unknown tracker", ["--track", "forgetting,dead"],
     "run_stats.py: error: --track forgetting,dead: unknown tracker 'dead'; the trackers are forgetting,margin,", 2),
    ("help", ["--help"], None, 0),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name,extra,first_line,code", BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
def test_bad_input_table(name, extra, first_line, code, tmp_path, monkeypatch, capsys):
    from forgetting_common.errors import run_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    extra = extra(tmp_path, monkeypatch) if callable(extra) else extra
    argv = [*BASE, "--save_path", str(tmp_path / "logs"), "--quiet", *extra]
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: sys.exit(main(argv, prog="run_stats.py")), prog="run_stats.py")
    out, err = capsys.readouterr()
    assert stop.value.code == code
    if first_line is None:  # --help: the flags, the original's and ours, on stdout
        assert out.startswith("usage: run_stats.py --task TASK") and "--resume" in out and "--beta_utility" in out
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(first_line), err
    assert "pwned" not in out + err
    if name in ("read-only output folder", "full disk at a checkpoint"):
        assert ("Read-only" if name.startswith("read") else "No space left on device") in lines[0]
    if name == "full disk at a checkpoint":
        assert not list((tmp_path / "logs").rglob("checkpoint.pt*"))  # nothing half-written
    if name != "full disk at a checkpoint":
        assert not list((tmp_path / "logs").rglob("*.json")) or name in ("read-only output folder",)


def test_progress_bar_on_a_terminal_and_the_output_folder_first(tmp_path, monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stderr", screen)
    assert main([*BASE, "--save_path", str(tmp_path / "logs")], prog="run_stats.py") == 0
    text = screen.getvalue()
    assert text.startswith("run_stats.py: writing ") and str(tmp_path / "logs") in text.splitlines()[0]
    assert "30/30" in text and "it/s" in text  # tqdm's bar
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    main([*BASE, "--save_path", str(tmp_path / "quiet"), "--quiet"], prog="run_stats.py")
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("argv,first_line", [
    (["--smooth", "-3", "x.json"], "plot_stats.py: error: argument --smooth: expected a positive integer, got '-3'"),
    (["/nonexistent"], "plot_stats.py: error: /nonexistent: no such file or folder"),
    (["bad.json"], "plot_stats.py: error: cannot read result bad.json: "),
    (["--format", "gif", "x.json"], "plot_stats.py: error: argument --format: invalid choice: 'gif'"),
])
def test_plot_stats_bad_input(argv, first_line, tmp_path, monkeypatch, capsys):
    from forgetting_common.errors import run_main
    from upgd.plot_cli import main as plot_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text("{bad")
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: plot_main([*argv, "--out", str(tmp_path / "figures")]), prog="plot_stats.py")
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith(first_line), lines
    assert not (tmp_path / "figures").exists()
