"""``--help`` of the pair-style scripts (the original had none: its parser took every token as a pair)."""

from __future__ import annotations

import textwrap

from upgd.checkpoint import DEFAULT_EVERY

PURPOSE = {
    "stats": "online learning with per-task statistics (accuracy, plasticity, dead units, ranks, norms)",
    "plain": "online learning with per-step losses and accuracies",
    "restarts": "online learning that re-initialises the Linear layers at every task change",
    "offline": "online learning plus held-out EMNIST loss/accuracy at every task change",
    "utility": "rank correlations of approximate and oracle weight utilities",
    "utility_feature": "rank correlations of approximate and oracle unit (gate) utilities",
}


def _learner_groups() -> str:
    from upgd.learners import LEARNERS

    groups: dict[tuple[str, ...], list[str]] = {}
    for key, spec in LEARNERS.items():
        groups.setdefault(tuple(spec.hp_names()), []).append(key)
    lines = []
    for hps, keys in groups.items():
        names = textwrap.fill(", ".join(sorted(keys)), width=96, initial_indent="  ", subsequent_indent="  ")
        lines.append(f"{names}:\n      --{' --'.join(hps)}")
    return "\n".join(lines)


def _names(names) -> str:
    return textwrap.fill(", ".join(sorted(names)), width=96, initial_indent=" " * 23, subsequent_indent=" " * 23)


def help_text(prog: str, mode: str) -> str:
    from upgd.data import TASKS
    from upgd.models import NETWORKS

    return f"""usage: {prog} --task TASK --learner LEARNER --network NETWORK [--key value ...]

{PURPOSE.get(mode, PURPOSE['stats'])}.
Arguments are --key value pairs, as in the original. Every key that is not listed below is a
hyper-parameter of the learner, converted with float() (the keys in command-line order name the
result folder). Example (the student project's seed command):
  {prog} --task label_permuted_cifar10_stats --learner baseline --seed 19 --lr 0.01 \\
    --beta_utility 0.999 --sigma 0.001 --weight_decay 0.0 \\
    --network convolutional_network_relu_with_hooks --n_samples 1000000

original keys:
  --task TASK          required; one of:
{_names(TASKS)}
  --learner LEARNER    required (see below)
  --network NETWORK    required; one of:
{_names(NETWORKS)}
  --seed N             default 0
  --n_samples N        default 10000 (one sample = one update)
  --save_path DIR      default logs; the result is DIR/TASK/LEARNER/NETWORK/HPS/SEED.json

learners and their hyper-parameters (lr, sigma, decays, penalties >= 0; betas in [0, 1)):
{_learner_groups()}

extensions (defaults keep the original behaviour):
  --resume [0|1]       continue an interrupted run from its checkpoint (same command plus --resume);
                       without a checkpoint it starts from sample 0 and says so
  --overwrite [0|1]    replace a finished result or an interrupted run (refused without it)
  --checkpoint_every N checkpoint every N samples (default {DEFAULT_EVERY}; 0: only on SIGTERM,
                       Ctrl-C and SIGUSR1, which always checkpoint at the end of the current step)
  --data_dir DIR       data root (default $FORGETTING_DATA, else dataset/)
  --device D           auto, cpu, cuda, cuda:N or mps (default auto)
  --change_freq N      samples per task (default: the task's, 2500 or 5000)
  --stats_every K      statistics every K samples (default 1 = the original)
  --overlap 0|1        on the CPU, draw the next step's noise on a helper thread and (run_stats)
                       compute step t's statistics beside the next step's training (default 1;
                       the values are the same as with 0)
  --stats_worker auto|thread|process   where the helpers of --overlap 1 run: run_stats'
                       statistics and the noise drawn ahead on threads, or each in a forked
                       process fed through shared memory (Linux); auto (default): the processes
                       when the run has 20000 samples or more and two of its cores are idle,
                       otherwise the threads; the values are the same
  --dataset_limit N    use the first N training samples (alias --train_limit)
  --fake_data 0|1      random tensors of the task's shapes (alias --data_source real|synthetic)
  --save_model_dir DIR save the network every 100000 samples and at the end (the student's
                       checkpoints, off by default)
  --tensorboard 0|1    TensorBoard scalars in the run folder (default 1)
  --track NAME[,NAME...]   run_stats.py: also measure these per task with the shared trackers
                       (forgetting, margin, dead_units, weight_rank, effective_rank, plasticity,
                       ece, init_distance) into metrics.jsonl, TensorBoard and tracked.npz in the
                       run folder; never changes what is trained or the result JSON
  --utility_max raw|corrected, --utility_guard 0|1   UPGD scaling options (default raw, 0)
  --print_config       print the resolved configuration as JSON and exit
  --quiet              no progress bar and no messages
  -h, --help           this text"""
