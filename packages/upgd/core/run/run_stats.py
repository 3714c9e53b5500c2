"""``python3 core/run/run_stats.py --task ... --learner ... --network ... [--key value ...]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # works without installing too

from upgd.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry("stats")
