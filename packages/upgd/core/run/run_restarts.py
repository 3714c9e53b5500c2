"""``python3 core/run/run_restarts.py --task input_permuted_mnist_restarts ...``: re-initialise the
Linear layers at every task change (the original's "Adam with restarts")."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from upgd.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry("restarts")
