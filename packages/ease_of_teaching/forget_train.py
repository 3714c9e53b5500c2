"""Forgetting in the referential game (Zhou et al., ICLR 2022; game of Li & Bowling, 2019).

    uv run python forget_train.py --fname baseline_no_reset --seed 0 --no_wandb

All flags: ``--help``; the library is :mod:`ease_of_teaching.train`.
"""

from ease_of_teaching.train import main
from forgetting_common import run_main

if __name__ == "__main__":
    run_main(main, prog="forget_train.py")
