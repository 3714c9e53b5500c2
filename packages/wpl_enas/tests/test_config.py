"""Parsing rules of the original command line (spec §1) and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from forgetting_common.errors import UserError
from wpl_enas.cli import parse_args, str2bool
from wpl_enas.fixtures import CNN_SEED, RNN_SEED

PACKAGE = Path(__file__).resolve().parents[1]

TRUE = ["True", "true", "TRUE", "t", "r", "u", "e", "tr", "ru", "ue", "tru", "rue", ""]
FALSE = ["False", "false", "0", "1", "yes", "no", "y", "on", "truee"]


@pytest.mark.parametrize("text", TRUE)
def test_str2bool_true(text):
    assert str2bool(text) is True


@pytest.mark.parametrize("text", FALSE)
def test_str2bool_false(text):
    assert str2bool(text) is False


def test_rnn_seed_line_resolves():
    args, unparsed = parse_args(RNN_SEED)
    assert unparsed == []
    assert args.comment == "rnn-train" and args.train_controller is True
    assert args.start_training_controller == 1 and args.start_using_fisher == 5
    assert args.alpha_decay == 1.0 and args.alpha_decay_after == 15
    assert args.alpha_small_scale == pytest.approx(1e-4)
    assert args.reward_c == 80.0 and args.num_blocks == 12 and args.num_batch_per_iter == 7
    assert args.dataset == "ptb" and args.network_type == "rnn"


def test_cnn_seed_line_resolves():
    args, unparsed = parse_args(CNN_SEED)
    assert unparsed == []
    assert args.reward_c == 1.0  # '1.' parses (the original declared int and aborted)
    assert args.controller_max_step == 1000  # repeated flag: the last one wins
    assert args.momentum is False and args.resume is True and args.resume_with_new_params is False
    assert args.nb_batch_reward_controller == 20 and args.alpha_decay_mode == 1
    assert args.dataset == "cifar10" and args.network_type == "micro_cnn" and args.log_level == "INFO"
    assert args.softmax_temperature == 8.0 and args.ema_baseline_decay == 0.99


def test_config_is_one_frozen_object_matching_the_parser():
    import dataclasses

    from wpl_enas.cli import Config, build_parser

    config, _ = parse_args(RNN_SEED)
    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert {f.name for f in dataclasses.fields(Config)} == dests | {"model_name", "model_dir", "data_path", "cuda"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.shared_lr = 1.0
    assert config.model_name == "ptb_rnn-train" and config.model_dir == "logs/ptb_rnn-train"
    assert config.data_path == "data/ptb" and config.cuda is False
    assert config.shared_rnn_activations == ("tanh", "ReLU", "identity", "sigmoid")
    # --load_path names the run folder; the original names are what config.json shows
    loaded, _ = parse_args(["--load_path=ptb_x"])
    assert loaded.to_dict()["model_dir"] == "logs/ptb_x" and "print_config" not in loaded.to_dict()
    assert loaded.to_dict()["shared_rnn_activations"] == ["tanh", "ReLU", "identity", "sigmoid"]


def test_last_flag_wins_and_unknown_kept():
    args, unparsed = parse_args(["--reward_c=80", "--reward_c", "3.5", "--no_such_flag=1"])
    assert args.reward_c == 3.5
    assert unparsed == ["--no_such_flag=1"]


def test_print_config_in_process(workdir, capsys):
    from wpl_enas.run import main

    main(CNN_SEED + ["--print_config"])
    config = json.loads(capsys.readouterr().out)
    assert config["controller_max_step"] == 1000 and config["reward_c"] == 1.0
    assert config["model_dir"].endswith("cifar10_cnn-train")
    assert not (workdir / "logs").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["--dataset=nope"], "not found"),
    (["--dataset=empty"], "no train.txt"),
    (["--load_path=does_not_exist"], "does not exist"),
    (["--mode=derive"], "needs --load_path"),
    (["--network_type=marco_cnn"], "macro"),
    (["--num_gpu=2"], "num_gpu"),
    (["--network_type=micro_cnn", "--cnn_final_filter_size=16"], "multiple of"),
    (["--shared_embed=8", "--shared_hid=16"], "tie_weights"),
])
def test_bad_input_is_one_clear_line(workdir, argv, fragment):
    from wpl_enas.run import main

    (workdir / "mydata" / "empty").mkdir(parents=True)
    (workdir / "mydata" / "empty" / "valid.txt").write_text("a b\n")
    with pytest.raises(UserError) as err:
        extra = ["--data_dir=mydata"] if "empty" in argv[0] else []
        main(argv + extra + ["--num_gpu=0", "--quiet"] * (argv[0] != "--num_gpu=2"))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_existing_run_is_not_overwritten(workdir, rnn_tiny):
    from wpl_enas.run import main

    run = workdir / "logs" / "ptb_2018-02-15_11-20-02"
    run.mkdir(parents=True)
    (run / "params.json").write_text('{"finished": true}')
    with pytest.raises(UserError, match="resume=True"):
        main(RNN_SEED + rnn_tiny)
    assert (run / "params.json").read_text() == '{"finished": true}'


def test_script_bad_input_exit_status(workdir):
    """The real script: one line on stderr and exit status 2 (argparse choice and a missing dataset)."""
    proc = subprocess.run([sys.executable, str(PACKAGE / "main.py"), "--dataset=missing", "--num_gpu=0"],
                          capture_output=True, text=True, cwd=workdir, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("main.py: error:") and "missing" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (workdir / "logs").exists() or not any((workdir / "logs").iterdir())
