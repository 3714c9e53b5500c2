"""Shared fixtures: a fake 102-class Flower102 folder, the script's main(), seed-line runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from forgetting_common.testing import load_module

PACKAGE = Path(__file__).resolve().parents[1]
SCRIPT = PACKAGE / "train_KE_cls.py"

SEED_LINES = {
    "S1": "--epochs 200 --num_generations 11 --name resetlayer4_flower_resnet18 --weight_decay 0.0001 --arch Split_ResNet18 --reset_layer_name layer4 --set Flower102 --data $DATA_DIR --no_wandb",
    "S2": "--epochs 200 --num_generations 11 --name ke_kels_flower_resnet18 --weight_decay 0.0001 --arch Split_ResNet18 --split_rate 0.8 --split_mode kels --set Flower102 --data $DATA_DIR --no_wandb",
    "S3": "--epochs 2200 --num_generations 1 --name resetlayer4_flower_resnet18_long2200 --weight_decay 0.0001 --arch Split_ResNet18 --reset_layer_name layer4 --set Flower102 --eval_intermediate_tst 200 --data $DATA_DIR --no_wandb",
    "S4": "--epochs 200 --num_generations 11 --name resetlayer4_flower_resnet18_freeze_reset_layers --weight_decay 0.0001 --arch Split_ResNet18 --reset_layer_name layer4 --data $DATA_DIR --set Flower102 --reverse_freeze --freeze_non_reset --optimizer sgd_TEMP --no_wandb",
    "S5": "--epochs 200 --num_generations 11 --name resetlayer4_flower_resnet18_freeze_nonreset_layers --weight_decay 0.0001 --arch Split_ResNet18 --reset_layer_name layer4 --data $DATA_DIR --set Flower102 --freeze_non_reset --optimizer sgd_TEMP --no_wandb",
    "S6": "--epochs 200 --num_generations 11 --name resetlayer4_flower_resnet18_freeze_reset_layers --weight_decay 0.0001 --arch Split_ResNet18 --reset_layer_name layer4 --data $DATA_DIR --set Flower102 --reverse_freeze --freeze_non_reset --optimizer sgd_TEMP --seed 0 --fix_seed --no_wandb",
}

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def script():
    """The real ``train_KE_cls.py`` module; call ``script.main(argv)``."""
    return load_module(SCRIPT, "train_KE_cls_script")


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Path:
    """``<root>/Folder/{train,val,test}/``: 4 classes of 12-px images (3 / 2 / 2 per class), for the
    short kill-and-resume and tracking runs (their argv: ``llf_ke.fake.tiny_run_argv``)."""
    from llf_ke.fake import write_fake_folder_set

    root = tmp_path_factory.mktemp("folder_data")
    write_fake_folder_set(root, "Folder", 4, {"train": 3, "val": 2, "test": 2}, size=12)
    return root


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory) -> Path:
    """``<root>/Flower102/{train,val,test}/{000..101}/``: one 20-px image per class and split."""
    from llf_ke.fake import write_fake_folder_set

    root = tmp_path_factory.mktemp("data")
    write_fake_folder_set(root, "Flower102", 102, {"train": 1, "val": 1, "test": 1}, size=20)
    return root


def smoke_argv(seed_key: str, data: Path, ckpt: Path, *, epochs: int, generations: int, name: str,
               extra: tuple[str, ...] = ()) -> list[str]:
    """A seed line with tiny sizes: epochs/generations replaced, the CPU smoke suffix added."""
    tokens = SEED_LINES[seed_key].replace("$DATA_DIR", str(data)).split()
    out = []
    skip = False
    for i, tok in enumerate(tokens):
        if skip:
            skip = False
            continue
        if tok in ("--epochs", "--num_generations", "--name"):
            skip = True
            continue
        out.append(tok)
        _ = i
    return ["--epochs", str(epochs), "--num_generations", str(generations), "--name", name, *out,
            "--device", "cpu", "--image_size", "16", "-t", "0", "--test_interval", "1", "--warmup_length", "1",
            "--checkpoints_dir", str(ckpt), "--quiet", *extra]


def exp_dir_of(ckpt: Path) -> Path:
    """The one experiment folder under ``<ckpt>/<cwd name>/``."""
    dirs = [d for d in (ckpt / Path(os.getcwd()).name).iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def gen_state(exp: Path, g: int, which: str) -> dict[str, torch.Tensor]:
    """``init_model.state`` (right after the reset) or the final ``epoch_<E-1>.state`` of generation g."""
    folder = next((exp / f"gen_{g}").glob("*/*_g0/checkpoints"))
    files = sorted(folder.glob(which))
    assert files, (folder, which)
    return torch.load(files[-1], map_location="cpu", weights_only=True)["state_dict"]


class Runs:
    """Runs each smoke configuration once per session (shared by many tests)."""

    def __init__(self, script, root: Path, base: Path) -> None:
        self.script, self.root, self.base = script, root, base
        self.cache: dict[str, Path] = {}

    def get(self, key: str, seed_key: str, *, epochs: int, generations: int, extra: tuple[str, ...] = ()) -> Path:
        if key not in self.cache:
            ckpt = self.base / key
            if ckpt.exists():
                shutil.rmtree(ckpt)
            self.script.main(smoke_argv(seed_key, self.root, ckpt, epochs=epochs, generations=generations,
                                        name=f"smoke_{key}", extra=extra))
            self.cache[key] = exp_dir_of(ckpt)
        return self.cache[key]


@pytest.fixture(scope="session")
def runs(script, fake_root, tmp_path_factory) -> Runs:
    return Runs(script, fake_root, tmp_path_factory.mktemp("ckpt"))


class Helpers:
    smoke_argv = staticmethod(smoke_argv)
    exp_dir_of = staticmethod(exp_dir_of)
    gen_state = staticmethod(gen_state)
    seed_lines = SEED_LINES
    script_path = SCRIPT
    package = PACKAGE


@pytest.fixture(scope="session")
def helpers() -> type[Helpers]:
    return Helpers
