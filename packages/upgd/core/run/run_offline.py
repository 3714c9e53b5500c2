"""``python3 core/run/run_offline.py --task label_permuted_emnist_offline ...``: online learning plus,
at each task change, the loss and accuracy on 250 held-out EMNIST test images (Figure 1a)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from upgd.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry("offline")
