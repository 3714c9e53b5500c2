"""The ALMA warm-start baseline: anytime learning without unlearning and with a constant LR."""

import sys

from forgetting_common import run_main
from lure.cli import main

if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:], alma=True), prog="ALMA.py")
