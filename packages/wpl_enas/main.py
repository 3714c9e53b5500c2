"""ENAS with Weight Plasticity Loss: search RNN cells (PTB) or micro-CNN cells (CIFAR-10).

Thin entry point; the work is in ``wpl_enas.run``. Run ``python main.py --help`` for the flags.
"""

from forgetting_common.errors import run_main
from wpl_enas.run import main

if __name__ == "__main__":
    run_main(main, prog="main.py")
