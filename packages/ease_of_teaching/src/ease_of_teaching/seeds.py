"""The five command lines of the original README for this sub-project (C3-C7 of the spec)."""

C3 = "--fname baseline_no_reset --seed 0 --no_wandb"
C4 = "--resetNum 50 --fname baseline_reset_receiver --seed 0 --reset_receiver --no_wandb"
C5 = ("--resetNum 100 --fname same_weight_reinit_sender10_receiver10_reset100 --seed 0 --forget_sender "
      "--sender_keep_perc 0.1 --forget_receiver --receiver_keep_perc 0.1 --weight_mask --same_mask --no_wandb")
GROUP = "--group_vars same_mask weight_mask reset_to_zero keep_perc seed trainIters train_with_reset reset_every"
C6 = f"{GROUP} --seed 0 --keep_perc 0.5 --fname new_rand_reinit"
C7 = f"{GROUP} --seed 0 --keep_perc 0.5 --fname same_weight_zero --same_mask --weight_mask --reset_to_zero"

SEED_COMMANDS = {
    "C3": ("forget_train.py", C3),
    "C4": ("forget_train.py", C4),
    "C5": ("forget_train.py", C5),
    "C6": ("mixed_language_forget_samebatch.py", C6),
    "C7": ("mixed_language_forget_samebatch.py", C7),
}
