"""The small reproduction of the emergent-communication experiments (see README).

    uv run python reproduce.py --out_dir runs/reproduction --seeds 0 1 2 --trainIters 30000
"""

from ease_of_teaching.reproduce import main
from forgetting_common import run_main

if __name__ == "__main__":
    run_main(main, prog="reproduce.py")
