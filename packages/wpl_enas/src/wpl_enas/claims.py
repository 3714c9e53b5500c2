"""WPL-on-ENAS claims (Benyahia et al., 2019) for `forgetting reproduce`, as plain data.

Not sweeps yet: the recorded results come from ``two_models.py`` and ``main.py`` runs listed in
the package README; their verdicts are derived from the recorded numbers by the rules below.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2]
TITLE = "WPL on ENAS (Benyahia et al., 2019)"


BENCHMARKS = [  # `forgetting bench`: shared steps/s of ENAS+WPL beside plain ENAS (random data of the real shapes)
    {"name": "search", "script": "benchmarks/bench_search.py", "args": [],
     "quick_args": ["--steps", "2", "--controller_steps", "5"]},
]


def paper() -> dict:
    return {
        "name": "wpl_enas",
        "title": TITLE,
        "package_dir": PACKAGE_DIR,
        "benchmarks": BENCHMARKS,
        "commands": {
            "rnn_train": ["main.py", "--comment=rnn-train", "--train_controller=True", "--start_training_controller=1",
                          "--start_using_fisher=5", "--max_epoch=150", "--shared_max_step=60", "--save_epoch=30",
                          "--fisher_clip_by_norm=10.0", "--alpha_fisher=60.0", "--alpha_decay=1.",
                          "--alpha_decay_after=15", "--set_fisher_zero_per_iter=2", "--policy_batch_size=1",
                          "--controller_max_step=2000", "--num_blocks=12", "--num_batch_per_iter=7",
                          "--alpha_small_scale=.0001", "--reward_c=80"],
            "two_models_mnist": ["two_models.py", "--dataset=mnist", "--train_limit=10000", "--test_limit=2000",
                                 "--epochs_a=5", "--epochs_b=5", "--seeds=1,2,3"],
        },
        "claims": [
            {"name": "two_models", "statement": "Training B after A on shared weights raises A's loss; WPL prevents it while B still learns",
             "source": "Fig. 2 / mnist_result.png", "paper_value": "qualitative: \"drastic\" drop without WPL, kept with WPL",
             "verdict": ("greater", "plain_a_loss_rise", "wpl_a_loss_rise"),
             "not_run": "not a sweep yet: recorded from `cd packages/wpl_enas && uv run python two_models.py --dataset=mnist --train_limit=10000 --test_limit=2000 --epochs_a=5 --epochs_b=5 --seeds=1,2,3`"},
            {"name": "enas_search", "statement": "ENAS search forgets (mean err2 − err1 > 0) and WPL lowers it",
             "source": "enas_rnn.png (curves)", "paper_value": "peak ≈57 without WPL vs ≈15 with it (read off the README figure)",
             "verdict": ("greater", "plain_diff", "wpl_diff"),
             "not_run": "not a sweep yet: recorded from `main.py … --dataset=ptb --train_limit=100000 …` (README §2), plain vs `--start_using_fisher=2`, seeds 1-3"},
            {"name": "seed_lines_run", "statement": "Both seed command lines run", "source": "the README",
             "paper_value": "—", "verdict": ("within", "crashed_lines", 0.0, 0.0),
             "not_run": "a test, not a sweep: the README's two `main.py` lines with tiny overrides (`uv run pytest packages/wpl_enas/tests`)"},
        ],
    }
