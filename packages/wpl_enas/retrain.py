"""Train a derived cell (best_dag.json of a main.py run) from scratch; report valid/test figures."""

from forgetting_common.errors import run_main
from wpl_enas.retrain import main

if __name__ == "__main__":
    run_main(main, prog="retrain.py")
