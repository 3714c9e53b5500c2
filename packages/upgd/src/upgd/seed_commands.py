"""The seed README's command lines (the student project's hyper-parameters for every variant)."""

SEED_HPS = ["--seed", "19", "--lr", "0.01", "--beta_utility", "0.999", "--sigma", "0.001", "--weight_decay", "0.0"]
SEED_HP_DIR = "lr_0.01_beta_utility_0.999_sigma_0.001_weight_decay_0.0"
STUDENT_KEYS = ["baseline", "usgd", "weight_norm", "grad_norm", "ratio_norm", "entire_kernel", "column_kernel",
                "KernelConvexCombi"]


def seed_command(learner: str, task: str = "label_permuted_cifar10_stats",
                 network: str = "convolutional_network_relu_with_hooks", n_samples: str = "1000000") -> list[str]:
    """The seed README's argument list for ``learner`` (``baseline`` and ``ratio_norm`` are printed there)."""
    return ["--task", task, "--learner", learner, *SEED_HPS, "--network", network, "--n_samples", n_samples]
