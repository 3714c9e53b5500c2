"""Knowledge Evolution / Later-Layer Forgetting over generations (the original entry point).

    uv run python train_KE_cls.py --epochs 200 --num_generations 11 --name resetlayer4_flower_resnet18 \
        --weight_decay 0.0001 --arch Split_ResNet18 --reset_layer_name layer4 --set Flower102 \
        --data $DATA_DIR --no_wandb
"""

from __future__ import annotations

import sys

from forgetting_common.cli import maybe_print_config
from forgetting_common.errors import run_main


def main(argv: list[str] | None = None) -> None:
    from llf_ke.cli import parse_args

    cfg = parse_args(argv)
    if maybe_print_config(cfg.as_dict()):
        return
    from llf_ke.train import run

    run(cfg)


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="train_KE_cls.py")
