"""run_mnist.py: the original command line (see README.md); the work is in example_forgetting."""

from example_forgetting.cli import mnist_main
from forgetting_common import run_main

if __name__ == "__main__":
    run_main(mnist_main, prog="run_mnist.py")
