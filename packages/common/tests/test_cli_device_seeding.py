import argparse
import json
import random

import numpy as np
import pytest
import torch
from forgetting_common import cli, device, seeding
from forgetting_common.errors import UserError, run_main


@pytest.mark.parametrize(
    "text, expected",
    [("True", True), ("true", True), ("TRUE", True), ("t", True), ("r", True), ("u", True), ("e", True),
     ("tr", True), ("ru", True), ("ue", True), ("tru", True), ("rue", True), ("", True),
     ("False", False), ("false", False), ("0", False), ("1", False), ("yes", False), ("no", False),
     ("tue", False), ("truee", False)],
)
def test_enas_str2bool_substring_quirk(text, expected):
    assert cli.enas_str2bool(text) is expected


def test_repeated_flags_last_wins_and_single_dash_long_flags():
    parser = argparse.ArgumentParser()
    parser.add_argument("--controller_max_step", type=int, default=5)
    parser.add_argument("-wb", action="store_true")
    parser.add_argument("--train_controller", type=cli.enas_str2bool, default=False)
    args = parser.parse_args(["--controller_max_step=100", "-wb", "--controller_max_step=1000",
                              "--train_controller=True"])
    assert args.controller_max_step == 1000 and args.wb and args.train_controller


def test_print_config_prints_one_json_object(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    cli.add_common_flags(parser, data_source=True)
    args = parser.parse_args(["--lr", "0.5", "--print_config"])
    assert cli.maybe_print_config(args)
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 0.5 and printed["device"] == "auto" and printed["data_source"] == "real"
    assert "print_config" not in printed
    assert not cli.maybe_print_config(parser.parse_args([]))
    assert cli.maybe_print_config(args, config={"lr": 0.5, "resetIter": 6000})
    assert json.loads(capsys.readouterr().out) == {"lr": 0.5, "resetIter": 6000}


def test_fraction_and_integer_types():
    assert cli.fraction("0.25") == 0.25
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.fraction(bad)
    assert cli.non_negative_int("0") == 0 and cli.positive_int("3") == 3
    for bad_int, kind in (("-1", cli.non_negative_int), ("0", cli.positive_int), ("x", cli.non_negative_int)):
        with pytest.raises(argparse.ArgumentTypeError):
            kind(bad_int)


def test_one_line_parser_error(capsys):
    parser = cli.OneLineErrorParser(prog="prog")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--n", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value" in err


def test_run_main_turns_user_error_into_one_line(capsys):
    def bad():
        raise UserError("the file\nis missing")

    with pytest.raises(SystemExit) as exc:
        run_main(bad, prog="tool")
    assert exc.value.code == 2
    assert capsys.readouterr().err == "tool: error: the file is missing\n"


def test_resolve_device():
    assert device.resolve_device("cpu").type == "cpu"
    assert device.resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(UserError, match="not a device"):
        device.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            device.resolve_device("cuda:0")
    assert device.peak_memory_bytes(torch.device("cpu")) > 0


def test_seeding_streams_and_state_roundtrip():
    seeding.seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seeding.seed_everything(7)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    g1 = seeding.make_generator(1, "data")
    g2 = seeding.make_generator(1, "mask")
    assert not torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))
    assert seeding.stream_seed(1, "data") == seeding.stream_seed(1, "data")
    state = seeding.get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    seeding.set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    gens = seeding.Generators(3)
    x = torch.rand(2, generator=gens["noise"])
    saved = gens.state_dict()
    y = torch.rand(2, generator=gens["noise"])
    gens.load_state_dict(saved)
    assert torch.equal(torch.rand(2, generator=gens["noise"]), y) and not torch.equal(x, y)
