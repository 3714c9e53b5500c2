"""Make a GIF of the cell drawings of a run: ``python generate_gif.py --model_name=NAME --output=sample.gif``."""

from forgetting_common.errors import run_main
from wpl_enas.gif import main

if __name__ == "__main__":
    run_main(main, prog="generate_gif.py")
