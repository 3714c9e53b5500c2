"""Targeted forgetting on a mixed compositional/permuted language (Zhou et al., ICLR 2022).

    uv run python mixed_language_forget_samebatch.py --group_vars same_mask weight_mask \
        reset_to_zero keep_perc seed trainIters train_with_reset reset_every --seed 0 \
        --keep_perc 0.5 --fname new_rand_reinit

All flags: ``--help``; the library is :mod:`ease_of_teaching.mixed_language`.
"""

from ease_of_teaching.mixed_language import main
from forgetting_common import run_main

if __name__ == "__main__":
    run_main(main, prog="mixed_language_forget_samebatch.py")
