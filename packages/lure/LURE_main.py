"""Learn, Unlearn and Relearn (LURE) in the anytime protocol: the original command line.

    uv run python LURE_main.py --data <data_dir> --log-dir <log_dir> --run <name> --dataset cifar10 \
        --arch resnet18 --seed 10 --epochs 50 --decreasing_lr 20,40 --batch_size 64 --weight_decay 1e-4 \
        --meta_batch_size 6250 --meta_batch_number 8 --snip_size 0.20 --save_dir <save-dir> \
        --sparsity_level 1 -wb --gamma 0.1 --use_snip
"""

import sys

from forgetting_common import run_main
from lure.cli import main

if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:], alma=False), prog="LURE_main.py")
