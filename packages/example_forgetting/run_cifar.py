"""run_cifar.py: the original command line (see README.md); the work is in example_forgetting."""

from example_forgetting.cli import cifar_main
from forgetting_common import run_main

if __name__ == "__main__":
    run_main(cifar_main, prog="run_cifar.py")
