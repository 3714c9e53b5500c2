"""order_examples_by_forgetting.py: the original command line (see README.md); the work is in example_forgetting."""

from example_forgetting.cli import order_main
from forgetting_common import run_main

if __name__ == "__main__":
    run_main(order_main, prog="order_examples_by_forgetting.py")
