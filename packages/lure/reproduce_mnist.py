"""Small real reproduction on MNIST-5k: LURE, warm start (same schedule), ALMA warm start, from scratch.

    uv run python reproduce_mnist.py --data ../../../shared/data --out runs/repro --seeds 1,2,3
"""

import sys

import torch
from forgetting_common import run_main
from lure.reproduce import main

if __name__ == "__main__":
    torch.set_num_threads(1)
    run_main(lambda: main(sys.argv[1:]), prog="reproduce_mnist.py")
