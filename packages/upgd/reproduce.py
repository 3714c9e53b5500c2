"""Small real-data reproduction: SGD loses accuracy and units across tasks where UPGD keeps them.

    uv run python reproduce.py                                   # label-permuted digits, 60k samples
    uv run python reproduce.py --task input_permuted_mnist_stats --n_samples 20000 --change_freq 1000
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from upgd.reproduce import entry  # noqa: E402

if __name__ == "__main__":
    entry()
