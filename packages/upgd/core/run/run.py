"""``python3 core/run/run.py --task ... --learner ... --network ...``: per-step losses/accuracies."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from upgd.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry("plain")
