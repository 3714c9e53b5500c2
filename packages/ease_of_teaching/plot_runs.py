"""Overlay finished ``forget_train.py`` runs: accuracy, topographic similarity, ease of teaching.

    uv run python plot_runs.py baseline_no_reset baseline_reset_receiver \
        same_weight_reinit_sender10_receiver10_reset100 --out regimes.png
"""

import argparse
from pathlib import Path

from ease_of_teaching.analysis import game_run_record
from ease_of_teaching.plots import plot_regimes
from forgetting_common import run_main
from forgetting_common.cli import OneLineErrorParser
from forgetting_common.errors import UserError


def main() -> None:
    p: argparse.ArgumentParser = OneLineErrorParser(prog="plot_runs.py", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run folders written by forget_train.py")
    p.add_argument("--out", default="regimes.png", help="PNG to write")
    args = p.parse_args()
    records = {}
    for run in args.runs:
        folder = Path(run)
        if not (folder / "topo.json").exists():
            raise UserError(f"{folder} is not a finished forget_train.py run (no topo.json)")
        try:
            records[folder.name] = [game_run_record(folder)]
        except (ValueError, KeyError, IndexError, TypeError) as err:  # a damaged or foreign file in the folder
            raise UserError(f"{folder} is not a readable forget_train.py run ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:150]})") from err
    print(plot_regimes(records, Path(args.out)))


if __name__ == "__main__":
    run_main(main, prog="plot_runs.py")
