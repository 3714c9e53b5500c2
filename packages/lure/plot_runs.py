"""Test accuracy per state over several runs of LURE_main.py / ALMA.py (warm start beside LURE, error bars over seeds).

    uv run python plot_runs.py runs/repro --out results/accuracy_per_state.png
    uv run python plot_runs.py <log_dir>/lure-seed10 <log_dir>/warm-seed10 --out fig.png
"""

import sys

from forgetting_common import run_main
from lure.plots import main

if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="plot_runs.py")
