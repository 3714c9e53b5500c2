"""The command line of ``train_KE_cls.py``: every original flag, parsed as the original did,
turned into one frozen :class:`Config` (with the original's derived fields and run name).

``--print_config``, ``config.json`` and each generation's ``settings.txt`` show the Config
under the original argparse names (``Config.as_dict``).
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    non_negative_float,
    positive_float,
)
from forgetting_common.errors import UserError
from forgetting_common.trackers import TRACKER_NAMES, track_argument

from llf_ke.models import ARCH_CHOICES, UNSUPPORTED_ARCHS

#: --set -> (number of classes, whether a separate test split is evaluated).
SETS: dict[str, tuple[int, bool]] = {
    "Flower102Pytorch": (102, True),
    "Flower102": (102, True),
    "CUB200": (200, False),
    "Aircrafts": (100, True),
    "Dog120": (120, False),
    "MIT67": (67, False),
    "CIFAR10": (10, False),
    "CIFAR10val": (10, False),
    "CIFAR100": (100, False),
    "CIFAR100val": (100, False),
    "tinyImagenet_full": (200, False),
    "tinyImagenet_val": (200, False),
    "CUB200_val": (200, False),
    "Dog120_val": (120, False),
    "MIT67_val": (67, False),
    # extension: any <data>/Folder/{train,val,test}/<class>/ tree; classes counted from disk
    "Folder": (0, True),
}
OPTIMIZERS = ("sgd", "sgd_TEMP", "adam", "rmsprop", "adamw")
LR_POLICIES = ("cosine_lr", "constant_lr", "val_dependent_lr", "multistep_lr", "step_lr", "long_cosine_lr")
INITS = ("kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_constant",
         "signed_constant", "unsigned_constant", "standard")


@dataclass(frozen=True)
class Config:
    """Every flag of ``train_KE_cls.py`` (argparse destination names) and the derived fields.

    As in the original, ``name`` is rewritten into the run name (trailing slash included);
    the ``--name`` value itself is ``user_name``. ``bias_split_rate`` equals ``split_rate``
    and ``trainer`` is ``default_cls`` whatever was passed.
    """

    # ---- original flags
    data: str
    optimizer: str
    set: str
    arch: str
    config_file: str | None
    log_dir: str | None
    evolve_mode: str
    num_threads: int
    epochs: int
    eval_intermediate_tst: int
    start_epoch: int | None
    batch_size: int
    lr: float
    warmup_length: int
    momentum: float
    weight_decay: float
    print_freq: int
    samples_per_class: int
    alpha: float
    warm: int
    resume: str
    reset_layer_name: str | None
    pretrained: str | None
    seed: int | None
    gpu: int
    test_interval: int
    lr_policy: str
    multistep_lr_adjust: int
    multistep_lr_gamma: float
    name: str
    log_file: str
    save_every: int
    num_generations: int
    lr_decay_step: int
    lr_decay_gamma: float
    split_rate: float
    bias_split_rate: float
    slim_factor: float
    split_mode: str
    conv_type: str
    linear_type: str
    mode: str
    nonlinearity: str
    bn_type: str
    init: str
    no_bn_decay: bool
    scale_fan: bool
    save_model: bool
    cs_kd: bool
    reset_hypothesis: bool
    reverse_reset: bool
    reverse_freeze: bool
    freeze_non_reset: bool
    no_wandb: bool
    group_vars: str | list[str]
    label_smoothing: float
    trainer: str
    reset_bn: bool
    no_reset: bool
    fix_seed: bool
    # ---- extensions
    device: str
    print_config: bool
    quiet: bool
    checkpoints_dir: str
    image_size: int
    init_seed: int | None
    eval_after_reset: bool
    no_flip: bool
    sync_bn: bool
    track: str | None
    # ---- derived, as the original derived them
    user_name: str | None
    num_cls: int
    eval_tst: bool
    group_name: str | None
    exp_name: str
    exp_dir: str

    def as_dict(self) -> dict[str, Any]:
        """The configuration under the original argparse names (``print_config`` included)."""
        return asdict(self)

    def with_classes(self, num_cls: int) -> Config:
        """``--set Folder`` counts its classes on disk; the run records that count."""
        return replace(self, num_cls=num_cls)

    @property
    def csv_name(self) -> str:
        return f"{self.exp_name}.csv"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="train_KE_cls.py", description="Knowledge Evolution / Later-Layer Forgetting")
    p.add_argument("--data", default="./datasets", help="root holding <set>/{train,val,test}/<class>/")
    p.add_argument("--optimizer", default="sgd", help="sgd, sgd_TEMP (trainable parameters only), adam, rmsprop, adamw")
    p.add_argument("--set", default="Flower102", choices=list(SETS), help="dataset")
    p.add_argument("-a", "--arch", default="Split_ResNet18", choices=ARCH_CHOICES, help="architecture")
    p.add_argument("--config_file", default=None, help="accepted and ignored, as in the original")
    p.add_argument("--log-dir", dest="log_dir", default=None, help="where per-generation run folders go")
    p.add_argument("--evolve_mode", default="rand", choices=["rand", "zero"], help="re-initialise the reset part randomly or with zeros")
    p.add_argument("-t", "--num_threads", type=int, default=10, help="data-loader workers")
    p.add_argument("--epochs", type=int, default=200, help="epochs per generation")
    p.add_argument("--eval_intermediate_tst", type=int, default=0, help="evaluate the test split every N epochs instead of at the end")
    p.add_argument("--start-epoch", dest="start_epoch", type=int, default=None, help="overwritten with 0 each generation")
    p.add_argument("-b", "--batch_size", type=int, default=32)
    p.add_argument("--lr", "--learning-rate", dest="lr", type=positive_float, default=0.256)
    p.add_argument("--warmup_length", type=int, default=5, help="warm-up epochs")
    p.add_argument("--momentum", type=non_negative_float, default=0.9)
    p.add_argument("--wd", "--weight_decay", dest="weight_decay", type=non_negative_float, default=1e-4)
    p.add_argument("-p", "--print-freq", dest="print_freq", type=int, default=10000)
    p.add_argument("--samples_per_class", type=int, default=1)
    p.add_argument("--alpha", type=float, default=32)
    p.add_argument("--warm", type=int, default=1)
    p.add_argument("--resume", nargs="?", const="auto", default="",
                   help="bare --resume (or 'auto'): continue this run from <exp_dir>/checkpoint_last.pth (a "
                        "folder without one restarts); a path: an original-style checkpoint (state_dict, "
                        "optimizer) to start from, as the original did")
    p.add_argument("--reset_layer_name", default=None, help="LLF: reset the first parameter whose name contains this and all after it")
    p.add_argument("--pretrained", default=None, help="checkpoint to start from")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--test_interval", type=int, default=10)
    p.add_argument("--lr_policy", default="cosine_lr", choices=LR_POLICIES)
    p.add_argument("--multistep-lr-adjust", dest="multistep_lr_adjust", type=int, default=30)
    p.add_argument("--multistep-lr-gamma", dest="multistep_lr_gamma", type=float, default=0.1)
    p.add_argument("--name", default=None)
    p.add_argument("--log_file", default="train_log.txt")
    p.add_argument("--save_every", type=int, default=-1)
    p.add_argument("--num_generations", type=int, default=5)
    p.add_argument("--lr-decay-step", dest="lr_decay_step", type=int, default=10)
    p.add_argument("--lr-decay-gamma", dest="lr_decay_gamma", type=float, default=0.5)
    p.add_argument("--split_rate", type=float, default=0.5)
    p.add_argument("--bias_split_rate", type=float, default=0.5)
    p.add_argument("--slim_factor", type=float, default=1.0)
    p.add_argument("--split_mode", default="wels", choices=["kels", "wels"])
    p.add_argument("--conv_type", default="SplitConv", choices=["SplitConv", "DenseConv"])
    p.add_argument("--linear_type", default="SplitLinear", choices=["SplitLinear", "DenseLinear"])
    p.add_argument("--mode", default="fan_in", choices=["fan_in", "fan_out"])
    p.add_argument("--nonlinearity", default="relu")
    p.add_argument("--bn_type", default="SplitBatchNorm", choices=["NormalBatchNorm", "NonAffineBatchNorm", "SplitBatchNorm"])
    p.add_argument("--init", default="kaiming_normal", choices=INITS)
    p.add_argument("--no-bn-decay", dest="no_bn_decay", action="store_true")
    p.add_argument("--scale-fan", dest="scale_fan", action="store_true")
    p.add_argument("--save_model", action="store_true")
    p.add_argument("--cs_kd", action="store_true")
    p.add_argument("--reset_hypothesis", action="store_true")
    p.add_argument("--reverse_reset", action="store_true")
    p.add_argument("--reverse_freeze", action="store_true")
    p.add_argument("--freeze_non_reset", action="store_true")
    p.add_argument("--no_wandb", action="store_true")
    p.add_argument("--group_vars", nargs="+", default="")
    p.add_argument("--label_smoothing", type=non_negative_float, default=0.1)
    p.add_argument("--trainer", default="default")
    p.add_argument("--reset_bn", action="store_true")
    p.add_argument("--no_reset", action="store_true")
    p.add_argument("--fix_seed", action="store_true")
    # ---- extensions (defaults keep the original behaviour)
    add_common_flags(p)
    p.add_argument("--checkpoints_dir", default="./checkpoints", help="checkpoint root (created if missing)")
    p.add_argument("--image_size", type=int, default=224, help="crop size; images are first squashed to round(N*256/224)")
    p.add_argument("--init_seed", type=int, default=None, help="seed every RNG once at start (no per-generation re-seeding)")
    p.add_argument("--eval_after_reset", action="store_true", help="also evaluate the test split right after each reset")
    p.add_argument("--no_flip", action="store_true", help="no random horizontal flip (e.g. for digits)")
    p.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over the global batch, as one process computes them")
    p.add_argument("--track", type=track_argument, default=None, metavar="NAME[,NAME...]",
                   help="also measure these on the training batches (and the validation passes), per epoch, into "
                   "metrics.jsonl, TensorBoard and <exp_dir>/tracked.npz, with each reset's forgotten examples "
                   f"(never changes what is trained): {', '.join(TRACKER_NAMES)}")
    return p


def run_name(flags: dict[str, Any]) -> str:
    """The original's run name from the parsed flags, trailing slash included."""
    f = flags
    return (f"SPLT_CLS_{f['set']}_{f['arch']}_cskd{f['cs_kd']}_smth{f['label_smoothing']}_k{f['split_rate']}"
            f"_G{f['num_generations']}_e{f['epochs']}_ev{f['evolve_mode']}_hReset{f['reset_hypothesis']}"
            f"_sm{f['split_mode']}_{f['name']}_seed{f['seed']}/")


def parse_args(argv: list[str] | None = None) -> Config:
    """Parse and validate the flags once; derive the original's fields (num_cls, eval_tst, name, exp_dir ...)."""
    a = build_parser().parse_args(argv)
    if a.config_file:
        warnings.warn("--config_file is ignored (the original never read it)", stacklevel=2)
    _validate(a)
    flags = vars(a)
    num_cls, eval_tst = SETS[a.set]
    if a.cs_kd:
        flags.update(samples_per_class=2, label_smoothing=0.0)
    flags.update(user_name=a.name, num_cls=num_cls, eval_tst=eval_tst, bias_split_rate=a.split_rate,
                 group_name=a.name, trainer="default_cls")
    name = run_name(flags)  # before "name" is overwritten: it holds --name here
    exp_name = name.rstrip("/")
    flags.update(name=name, exp_name=exp_name,
                 exp_dir=str(Path(a.checkpoints_dir) / Path(os.getcwd()).name / exp_name))
    return Config(**flags)


#: The Config fields that are not flags (the tests check Config = parser destinations + these).
DERIVED = ("user_name", "num_cls", "eval_tst", "group_name", "exp_name", "exp_dir")


def _validate(a: argparse.Namespace) -> None:
    """Refuse what cannot run, before anything is read or written (one line each)."""
    if a.arch in UNSUPPORTED_ARCHS:
        raise UserError(f"--arch {a.arch}: DenseNet and GoogLeNet (channel-concatenation masks) are not "
                        "part of this re-implementation; use Split_ResNet18/34/50/101, the Norm variants, vgg11 or vgg11_bn")
    if not 0.0 < a.split_rate < 1.0:
        raise UserError(f"--split_rate {a.split_rate}: must be above 0 and below 1 (the reset part re-initialises "
                        "the entries the fit hypothesis does not keep)")
    for flag, value, low in (("--epochs", a.epochs, 1), ("--num_generations", a.num_generations, 1),
                             ("--batch_size", a.batch_size, 1), ("--test_interval", a.test_interval, 1),
                             ("--image_size", a.image_size, 8), ("--num_threads", a.num_threads, 0),
                             ("--warmup_length", a.warmup_length, 0), ("--eval_intermediate_tst", a.eval_intermediate_tst, 0)):
        if value < low:
            raise UserError(f"{flag} {value}: must be at least {low}")
    if a.optimizer not in OPTIMIZERS:
        raise UserError(f"--optimizer {a.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if not 0.0 <= a.label_smoothing < 1.0:
        raise UserError(f"--label_smoothing {a.label_smoothing}: must be in [0, 1)")
    if a.reset_hypothesis and a.split_mode == "kels":
        raise UserError("--reset_hypothesis redraws WELS masks; it does not work with --split_mode kels")
    if a.freeze_non_reset and not a.reset_layer_name:
        raise UserError("--freeze_non_reset needs --reset_layer_name (it decides which layers freeze)")
    if a.freeze_non_reset and a.reverse_reset:
        raise UserError("--freeze_non_reset with --reverse_reset is unsupported (as in the original)")
    if a.fix_seed and a.seed is None:
        raise UserError("--fix_seed needs --seed N")
    if a.scale_fan:
        raise UserError("--scale-fan is not supported (it crashed in the original: prune_rate is never defined)")
    if a.set in ("CUB200_val", "Dog120_val", "MIT67_val"):
        raise UserError(f"--set {a.set}: the original listed this choice but never implemented it; "
                        f"use --set {a.set[:-4]}")
