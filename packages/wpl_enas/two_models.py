"""Two models sharing parameters, trained one after the other, with and without WPL (spec §4)."""

from forgetting_common.errors import run_main
from wpl_enas.two_models import main

if __name__ == "__main__":
    run_main(main, prog="two_models.py")
