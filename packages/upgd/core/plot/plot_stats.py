"""Figures (online accuracy, plasticity, dead units per task) and the student notebook's table
from run_stats JSON files::

    python core/plot/plot_stats.py logs/ [more files or folders] --out figures [--table]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from upgd.plot_cli import entry  # noqa: E402

if __name__ == "__main__":
    entry()
