"""The command line of ``mixed_group_training.py``: every original flag, plus the extensions,
parsed once into the frozen :class:`Config` the rest of the package takes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from forgetting_common.trackers import TRACKER_NAMES, track_argument

from targeted_forgetting.forgetting import REINIT_SCOPES


def make_parser(prog: str = "mixed_group_training.py") -> argparse.ArgumentParser:
    p = OneLineErrorParser(
        prog=prog,
        description="Targeted-forgetting probes (Zhou et al., ICLR 2022): train a classifier, and every "
        "--print_every steps apply a forgetting operation to a copy and compare per-group accuracy.",
    )
    # ----- original flags (names, types and defaults as in the paper's script)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_iters", type=positive_int, default=2000, help="number of training iterations")
    p.add_argument("--train_perc", type=fraction, default=1.0, help="fraction of the training set used")
    p.add_argument("--random_perc", type=fraction, default=0.0,
                   help="probability that an example gets a random label")
    p.add_argument("--batch_size", type=positive_int, default=128, help="training batch size")
    p.add_argument("--save_path", type=str, default="exp_logged",
                   help="root of the output folders (the run goes to SAVE_PATH/FNAME)")
    p.add_argument("--fname", type=str, default="base", help="run name: the output folder under --save_path")
    p.add_argument("--print_every", type=positive_int, default=100, help="probe every n iterations")
    p.add_argument("--resume_path", type=str, default=None,
                   help="load {'state_dict': ...} (tensors only) from this file as the starting weights")
    p.add_argument("--rewind_to_init", action="store_true",
                   help="rewind the copy to the initial weights before masking")
    p.add_argument("--fixed_mask", action="store_true", help="accepted, unused (as in the original)")
    p.add_argument("--train_data", type=str, default="mnist", choices=("mnist", "cifar10"))
    p.add_argument("--arch", type=str, default="lenet", choices=("lenet", "conv4", "resnet18"),
                   help="lenet for mnist, conv4 or resnet18 for cifar10")
    p.add_argument("--same_mask", action="store_true",
                   help="compute the masks once from the initial weights and reuse them")
    p.add_argument("--weight_mask", action="store_true", help="magnitude masks instead of random ones")
    p.add_argument("--reset_to_zero", action="store_true", help="zero forgotten weights instead of re-initialising")
    p.add_argument("--margin_groups", action="store_true",
                   help="groups = 10%% lowest-margin examples of the batch vs the rest")
    p.add_argument("--keep_perc", type=fraction, default=1.0, help="fraction of weights kept")
    p.add_argument("--group_vars", type=str, nargs="+", default="", help="flags that name the W&B run")
    p.add_argument("--no_wandb", action="store_true", help="do not log to W&B")
    p.add_argument("--lr", type=non_negative_float, default=0.1, help="accepted, unused (as in the original)")
    p.add_argument("--opt", type=str, default="sgd", choices=("sgd", "adam"),
                   help="accepted, unused (as in the original)")
    p.add_argument("--rewind_to_epoch", type=non_negative_int, default=0,
                   help="late rewinding: probe only from this epoch, with its weights as the rewind point")
    p.add_argument("--num_workers", type=non_negative_int, default=6, help="accepted, unused (data are held as tensors)")
    # ----- extensions (the original behaviour at their defaults)
    add_common_flags(p, device=True, data_source=True, limits=True)
    p.add_argument("--data_dir", type=str, default=None,
                   help="data root holding MNIST/raw or CIFAR-10 (default: $FORGETTING_DATA, else ./datasets)")
    p.add_argument("--no_download", action="store_true",
                   help="never try to download a missing dataset (the original downloaded it)")
    p.add_argument("--reinit_scope", choices=REINIT_SCOPES, default="top_level",
                   help="top_level: re-draw only top-level modules, as the original (block convs of "
                   "conv4/resnet18 are then never re-initialised); all: every conv/linear layer")
    p.add_argument("--num_threads", type=non_negative_int, default=0,
                   help="CPU threads for torch (0: torch's default)")
    p.add_argument("--no_plot", action="store_true", help="do not write groups.png at the end")
    p.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard scalars")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in SAVE_PATH/FNAME from its checkpoint.pt (same flags); "
                   "the result equals an uninterrupted run")
    p.add_argument("--checkpoint_every", type=non_negative_int, default=1000,
                   help="write SAVE_PATH/FNAME/checkpoint.pt every n iterations (0: only on Ctrl-C/SIGTERM); "
                   "it is removed when the run finishes")
    p.add_argument("--track", type=track_argument, default=None, metavar="NAME[,NAME...]",
                   help="also measure these on the training batches, per epoch, into metrics.jsonl, TensorBoard "
                   f"and SAVE_PATH/FNAME/tracked.npz (never changes what is trained): {', '.join(TRACKER_NAMES)}")
    return p


@dataclass(frozen=True)
class Config:
    """One run's flags under their original names, in the parser's order (config.json keeps it)."""

    seed: int
    train_iters: int
    train_perc: float
    random_perc: float
    batch_size: int
    save_path: str
    fname: str
    print_every: int
    resume_path: str | None
    rewind_to_init: bool
    fixed_mask: bool
    train_data: str
    arch: str
    same_mask: bool
    weight_mask: bool
    reset_to_zero: bool
    margin_groups: bool
    keep_perc: float
    group_vars: str | tuple[str, ...]
    no_wandb: bool
    lr: float
    opt: str
    rewind_to_epoch: int
    num_workers: int
    device: str
    print_config: bool
    quiet: bool
    data_source: str
    train_limit: int | None
    test_limit: int | None
    data_dir: str | None
    no_download: bool
    reinit_scope: str
    num_threads: int
    no_plot: bool
    no_tensorboard: bool
    resume: bool
    checkpoint_every: int
    track: str | None

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> Config:
        values = vars(args).copy()
        if isinstance(values["group_vars"], list):
            values["group_vars"] = tuple(values["group_vars"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The flags as argparse would hold them, keyed by the original names."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_config(argv: list[str] | None = None) -> Config:
    return Config.from_namespace(make_parser().parse_args(argv))
