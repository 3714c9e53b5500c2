"""A fake ``Flower102`` (or any ImageFolder set) for smoke tests, in the real on-disk layout."""

from __future__ import annotations

from pathlib import Path

from forgetting_common.data.fake import write_image_folder


def write_fake_folder_set(root: str | Path, set_name: str = "Flower102", num_classes: int = 102,
                          per_split: dict[str, int] | None = None, size: int = 40, seed: int = 0) -> Path:
    """``root/<set>/<split>/{000..}/NNNN.png``: class-patterned images plus noise (learnable).

    Class folders are named ``000``, ``001``, … as the Flower102 preparation names them.
    """
    counts = per_split or {"train": 2, "val": 1, "test": 1}
    write_image_folder(Path(root) / set_name, splits=tuple(counts), classes=[f"{c:03d}" for c in range(num_classes)],
                       per_class=counts, size=size, fmt="png", seed=seed)
    return Path(root)


def tiny_run_argv(data: str | Path, ckpt: str | Path, name: str, *extra: str, epochs: int,
                  test_interval: int) -> list[str]:
    """The first seed line (LLF, reset layer4) on a 4-class ``Folder`` set under ``data``: 2 generations
    at 16 px on the CPU, for kill-and-resume and tracking tests."""
    return ["--epochs", str(epochs), "--num_generations", "2", "--name", name, "--weight_decay", "0.0001",
            "--arch", "Split_ResNet18", "--reset_layer_name", "layer4", "--set", "Folder", "--data", str(data),
            "--no_wandb", "--device", "cpu", "--image_size", "16", "-t", "0", "--test_interval", str(test_interval),
            "--warmup_length", "1", "--checkpoints_dir", str(ckpt), "--init_seed", "0", "--quiet", *extra]
