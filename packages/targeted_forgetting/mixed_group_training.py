"""Targeted forgetting probes (Zhou et al., ICLR 2022): the original script's command line.

    uv run python mixed_group_training.py --seed 1 --train_perc 0.1 --random_perc 0.1 \
        --keep_perc 0.5 --train_iters 50000 --fname new_rand_reinit_train0.1_mislabel0.1 --no_wandb
"""

from forgetting_common.errors import run_main
from targeted_forgetting.train import main

if __name__ == "__main__":
    run_main(main, prog="mixed_group_training.py")
