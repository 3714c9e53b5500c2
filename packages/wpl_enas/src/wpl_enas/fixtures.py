"""Generators of the small datasets the tests, the benchmark and the smoke runs use (spec §7.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from forgetting_common.data.fake import write_cifar, write_image_folder

RNN_SEED = [
    "--comment=rnn-train", "--train_controller=True", "--start_training_controller=1", "--start_using_fisher=5",
    "--max_epoch=150", "--shared_max_step=60", "--save_epoch=30", "--fisher_clip_by_norm=10.0",
    "--alpha_fisher=60.0", "--alpha_decay=1.", "--alpha_decay_after=15", "--set_fisher_zero_per_iter=2",
    "--policy_batch_size=1", "--controller_max_step=2000", "--num_blocks=12", "--num_batch_per_iter=7",
    "--alpha_decay=1.", "--alpha_decay_after=15", "--alpha_small_scale=.0001", "--reward_c=80",
]

CNN_SEED = [
    "--comment=cnn-train", "--dataset=cifar10", "--network_type=micro_cnn", "--num_blocks=5",
    "--cnn_num_repeat_normal=5", "--batch_size=32", "--test_batch_size=16", "--train_controller=True",
    "--start_using_fisher=50000", "--start_training_controller=2", "--max_epoch=310", "--controller_max_step=100",
    "--save_epoch=10", "--fisher_clip_by_norm=10.0", "--momentum=False", "--alpha_decay_mode=1",
    "--alpha_fisher=60.0", "--alpha_decay=1.", "--alpha_decay_after=15", "--num_batch_per_iter=7",
    "--set_fisher_zero_per_iter=3", "--stop_training_controller=1000", "--nb_batch_reward_controller=20",
    "--log_level=INFO", "--entropy_coeff=0.0001", "--controller_lr=0.0035", "--controller_max_step=1000",
    "--policy_batch_size=1", "--shared_max_step=70", "--reward_c=1.", "--ema_baseline_decay=0.99",
    "--softmax_temperature=8.", "--resume=True", "--resume_with_new_params=False",
]


def write_markov_text(folder: str | Path, vocab: int = 40, lines: tuple[int, int, int] = (300, 60, 60),
                      successors: int = 3, min_len: int = 4, max_len: int = 12, seed: int = 0) -> Path:
    """``folder/{train,valid,test}.txt``: sentences of a seeded first-order Markov chain over ``w0…``."""
    rng = np.random.default_rng(seed)
    nxt = rng.integers(0, vocab, size=(vocab, successors))
    probs = rng.dirichlet(np.ones(successors) * 0.5, size=vocab)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), lines):
        rows = []
        for _ in range(n):
            w = int(rng.integers(vocab))
            words = [w]
            for _ in range(int(rng.integers(min_len, max_len + 1)) - 1):
                w = int(nxt[w, rng.choice(successors, p=probs[w])])
                words.append(w)
            rows.append(" ".join(f"w{i}" for i in words))
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_tiny_cifar(root: str | Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` in torchvision's pickle layout (10 images per training batch)."""
    return write_cifar(root, "cifar10", n_train=n_train, n_test=n_test, seed=seed)


def write_tiny_images(folder: str | Path, classes: int = 3, per_class: tuple[int, int, int] = (8, 4, 4),
                      seed: int = 0) -> Path:
    """``folder/{train,valid,test}/c{k}/NNNN.jpg`` 32×32 RGB."""
    names = [f"c{k}" for k in range(classes)]
    write_image_folder(folder, ("train", "valid", "test"), names,
                       {"train": per_class[0], "valid": per_class[1], "test": per_class[2]}, size=32, seed=seed)
    return Path(folder)


def write_all(data_dir: str | Path) -> Path:
    """Every §7.1 fixture under ``data_dir``: ptb, tiny_text, cifar-10-batches-py, tiny_images."""
    data_dir = Path(data_dir)
    write_markov_text(data_dir / "ptb", seed=0)
    write_markov_text(data_dir / "tiny_text", seed=1)
    write_tiny_cifar(data_dir)
    write_tiny_images(data_dir / "tiny_images")
    return data_dir
