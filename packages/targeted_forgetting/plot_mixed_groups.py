"""Plot per-group accuracy before/after forgetting from one or more run folders (seeds averaged).

    uv run python plot_mixed_groups.py exp_logged/run_a exp_logged/run_b --out groups.png
"""

from forgetting_common.errors import run_main
from targeted_forgetting.plots import plot_main

if __name__ == "__main__":
    run_main(plot_main, prog="plot_mixed_groups.py")
