"""Argparse helpers for the originals' flag conventions and the shared extension flags.

The originals parse flags in several styles that users' command lines depend on:

* ENAS-style booleans (``--train_controller=True``) through :func:`enas_str2bool`, which keeps
  the legacy substring rule exactly;
* single-dash long flags (``-wb``, ``-no_replay``), which plain argparse already accepts when
  declared with one dash;
* repeated flags, where the last occurrence wins (argparse's ``store`` behaviour);
* ``--print_config``: every script prints its resolved configuration as one JSON object, keyed
  by the original argparse destinations, and exits without touching data or writing files.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEVICE_HELP = "where to run: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"


def enas_str2bool(value: str) -> bool:
    """The ENAS code's string-to-bool, reproduced exactly.

    The legacy function lowercases the string and tests whether it is a *substring* of
    ``"true"``. So ``True``, ``t``, ``rue`` and the empty string are true, while ``False``,
    ``0``, ``yes`` and even ``1`` are false. Command lines written for the original depend on it.
    """
    return value.lower() in "true"


def fraction(value: str) -> float:
    """An argparse type for a number in [0, 1]."""
    try:
        number = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}") from err
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}")
    return number


def positive_int(value: str) -> int:
    """An argparse type for an integer greater than zero."""
    try:
        number = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from err
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def non_negative_int(value: str) -> int:
    """An argparse type for an integer of zero or more."""
    try:
        number = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}") from err
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return number


def _finite(value: str, expected: str) -> float:
    try:
        number = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from err
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")
    return number


def finite_float(value: str) -> float:
    """An argparse type for any finite number (nan and inf refused), for flags with no natural range."""
    return _finite(value, "a finite number")


def non_negative_float(value: str) -> float:
    """An argparse type for a finite number of zero or more (learning rates, decays, sigmas)."""
    number = _finite(value, "a finite number of zero or more")
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of zero or more, got {value!r}")
    return number


def positive_float(value: str) -> float:
    """An argparse type for a finite number greater than zero."""
    number = _finite(value, "a finite number greater than zero")
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number greater than zero, got {value!r}")
    return number


def add_device_flag(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--device {auto,cpu,cuda,cuda:N,mps}`` (validated later by ``resolve_device``)."""
    parser.add_argument("--device", default=default, help=DEVICE_HELP)


def add_print_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--print_config",
        action="store_true",
        help="print the resolved configuration as one JSON object and exit (reads and writes nothing)",
    )


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data_source_flags(parser: argparse.ArgumentParser, limits: bool = True) -> None:
    """``--data_source {real,synthetic}`` and, optionally, ``--train_limit`` / ``--test_limit``."""
    parser.add_argument(
        "--data_source",
        choices=("real", "synthetic"),
        default="real",
        help="real: the dataset from the data root; synthetic: small random data of the same shape (smoke runs)",
    )
    if limits:
        parser.add_argument("--train_limit", type=positive_int, default=None,
                            help="use at most this many training examples (smoke runs)")
        parser.add_argument("--test_limit", type=positive_int, default=None,
                            help="use at most this many test examples (smoke runs)")


def add_common_flags(
    parser: argparse.ArgumentParser,
    *,
    device: bool = True,
    data_source: bool = False,
    limits: bool = True,
) -> None:
    """The shared extension flags: ``--device``, ``--print_config``, ``--quiet`` (and data source)."""
    if device:
        add_device_flag(parser)
    add_print_config_flag(parser)
    add_quiet_flag(parser)
    if data_source:
        add_data_source_flags(parser, limits=limits)


def config_dict(args: argparse.Namespace | dict[str, Any]) -> dict[str, Any]:
    """The namespace as a JSON-safe dict keyed by argparse destinations (original names)."""
    items = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    return {key: _jsonable(value) for key, value in items.items() if key != "print_config"}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def maybe_print_config(
    args: argparse.Namespace | dict[str, Any], file=None, config: dict[str, Any] | None = None
) -> bool:
    """If ``args.print_config`` is set, print the configuration as JSON and return True.

    ``config``: print this resolved configuration instead of ``args`` itself (a script that
    derives settings after parsing passes them here; the flag is still read from ``args``).
    """
    flag = args.get("print_config") if isinstance(args, dict) else getattr(args, "print_config", False)
    if not flag:
        return False
    print(json.dumps(config_dict(config if config is not None else args), sort_keys=True), file=file or sys.stdout)
    return True


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2.

    argparse prints the whole usage block before the message; a scripted sweep then shows
    dozens of lines per bad flag. This keeps the message and the exit status, and drops the block.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")
