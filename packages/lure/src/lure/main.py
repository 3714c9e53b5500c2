"""Entry points behind ``LURE_main.py`` and ``ALMA.py``."""

from __future__ import annotations

from collections.abc import Sequence

from lure.cli import parse_args, print_config_and_exit, validate


def main(argv: Sequence[str] | None = None, alma: bool = False) -> dict | None:
    """Parse the original flags and run; ``--print_config`` prints the configuration and returns."""
    args = parse_args(argv, alma=alma)
    if print_config_and_exit(args):
        return None
    validate(args)
    from lure.engine import run_anytime

    return run_anytime(args)
