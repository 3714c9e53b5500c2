"""``python3 core/run/run_utility_feature.py --task feature_utils --learner sgd_with_hesscale
--network small_fully_connected_relu_gates --lr 0.01 --n_samples 2000``: rank correlations between
approximate and oracle *unit* utilities (a unit's utility is that of its gate)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from upgd.cli import entry  # noqa: E402

if __name__ == "__main__":
    entry("utility_feature")
