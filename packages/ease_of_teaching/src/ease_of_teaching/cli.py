"""The command lines of ``forget_train.py`` and ``mixed_language_forget_samebatch.py``: every
original flag, the extensions, the checks, and the frozen configurations the library takes.

Both originals copy one block of Li & Bowling's flags; where they agree (names, types, order)
the flags come from one function here. They differ in their defaults (``--trainIters`` 300000 vs
700, ``--batchSize`` 100 vs 32), which each parser keeps from its own original.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

from forgetting_common import cli
from forgetting_common.errors import UserError

from ease_of_teaching.game import NUM_COLORS, NUM_SHAPES

#: Settings the original computes from its constants; config.json shows them beside the flags.
DERIVED = {
    "numColors": NUM_COLORS, "numShapes": NUM_SHAPES, "attrSize": NUM_COLORS + NUM_SHAPES,
    "vocabSize": 8, "messageLen": 2, "distractNum": 5, "deterResetNums": 30, "deterResetIter": 1000,
    "population": False, "hiddenSize": 100,
}


# --------------------------------------------------------------------------- flags both originals share
def add_game_flags(p: argparse.ArgumentParser, *, train_iters: int, batch_size: int) -> None:
    """The first block of both originals, in their order (only the two defaults differ)."""
    p.add_argument("--gpu", type=int, default=0, help="CUDA index used when --device is auto and CUDA is present")
    p.add_argument("--fname", type=str, default="test", help="folder name to save results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jupyter", action="store_true", help="accepted, unused (as in the original)")
    p.add_argument("--slambda", type=float, default=0.1, help="speaker entropy regularisation weight")
    p.add_argument("--rlambda", type=float, default=0.1, help="listener entropy regularisation weight")
    p.add_argument("--receiverNum", type=int, default=1, help="accepted, unused (population code disabled)")
    p.add_argument("--topk", type=int, default=3, help="messages per object in the language table")
    p.add_argument("--evaluateSize", type=int, default=1000, help="accepted, unused")
    p.add_argument("--trainIters", type=cli.positive_int, default=train_iters, help="training iterations")
    p.add_argument("--resetNum", type=int, default=50, help="generations; reset/forget every trainIters//resetNum")
    p.add_argument("--batchSize", type=cli.positive_int, default=batch_size, help="games per iteration")


def add_learning_rates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sLearnRate", type=cli.positive_float, default=0.001, help="Adam learning rate of the sender")
    p.add_argument("--rLearnRate", type=cli.positive_float, default=0.001, help="Adam learning rate of the receiver")


def add_mask_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--same_mask", action="store_true", help="masks fixed once from the initial weights")
    p.add_argument("--weight_mask", action="store_true", help="forget the smallest-magnitude weights (else random)")
    p.add_argument("--reset_to_zero", action="store_true", help="set forgotten weights to 0 (else re-initialise)")


def add_wandb_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--group_vars", type=str, nargs="+", default="", help="options naming the W&B run")
    p.add_argument("--no_wandb", action="store_true", help="do not write to wandb")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Extensions of both scripts (the original computation at their defaults)."""
    cli.add_common_flags(p)
    p.add_argument("--out_dir", default=".", help="folder holding the <fname>/ run folder (default: here)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in the same folder")
    p.add_argument("--num_threads", type=int, default=1, help="torch CPU threads (0: torch's default)")


def add_resume_flags(p: argparse.ArgumentParser, checkpoint_every: int) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in its folder from checkpoint.pt (same flags); "
                   "the result equals an uninterrupted run")
    p.add_argument("--checkpoint_every", type=cli.non_negative_int, default=checkpoint_every,
                   help="write checkpoint.pt in the run folder every n iterations (0: only at the end of "
                   "training and on Ctrl-C/SIGTERM); it is removed when the run finishes")


# --------------------------------------------------------------------------- forget_train.py
def build_parser(prog: str = "forget_train.py") -> argparse.ArgumentParser:
    p = cli.OneLineErrorParser(prog=prog, description="Referential game settings (forgetting in emergent communication)")
    add_game_flags(p, train_iters=300000, batch_size=100)
    p.add_argument("--easy_limit", type=int, default=5, help="max easy distractors per game (active if < 4)")
    add_learning_rates(p)
    p.add_argument("--weight_decay", type=cli.non_negative_float, default=0)
    p.add_argument("--reset_receiver", action="store_true", help="reset the receiver completely every generation")
    p.add_argument("--freeze_receiver", action="store_true", help="freeze the receiver from a generation on")
    p.add_argument("--freeze_after_gen_num", type=int, default=1, help="freeze the receiver after n generations")
    p.add_argument("--forget_sender", action="store_true", help="partial reset of the sender every generation")
    p.add_argument("--forget_receiver", action="store_true", help="partial reset of the receiver every generation")
    add_mask_flags(p)
    p.add_argument("--sender_keep_perc", type=cli.fraction, default=1, help="fraction of sender weights kept")
    p.add_argument("--receiver_keep_perc", type=cli.fraction, default=1, help="fraction of receiver weights kept")
    add_wandb_flags(p)
    p.add_argument("--track_examples", action="store_true", help="save the per-example tracker")
    p.add_argument("--save_weights", action="store_true", help="save the weight trajectory")
    add_run_flags(p)
    p.add_argument("--eot_every", type=int, default=10,
                   help="ease-of-teaching evaluation every this many generations (0: only at the end)")
    p.add_argument("--eot_receivers", type=cli.positive_int, default=30, help="fresh receivers per evaluation")
    p.add_argument("--eot_iters", type=cli.positive_int, default=1000, help="iterations per fresh receiver")
    p.add_argument("--no_eot", action="store_true", help="skip the ease-of-teaching evaluation")
    add_resume_flags(p, checkpoint_every=5000)
    return p


@dataclass(frozen=True)
class Flags:
    """What both configurations answer: their flags as a dict under the original names."""

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_namespace(cls, args: argparse.Namespace):
        values = vars(args).copy()
        if isinstance(values["group_vars"], list):
            values["group_vars"] = tuple(values["group_vars"])
        return cls(**values)

    def run_name(self) -> str:
        """The original run name ``var1<val1>_var2<val2>...`` built from ``--group_vars``."""
        flags = self.as_dict()
        return "_".join(f"{var}{flags[var]}" for var in self.group_vars)


@dataclass(frozen=True)
class Config(Flags):
    """``forget_train.py``'s flags, in the parser's order (config.json keeps it)."""

    gpu: int
    fname: str
    seed: int
    jupyter: bool
    slambda: float
    rlambda: float
    receiverNum: int
    topk: int
    evaluateSize: int
    trainIters: int
    resetNum: int
    batchSize: int
    easy_limit: int
    sLearnRate: float
    rLearnRate: float
    weight_decay: float
    reset_receiver: bool
    freeze_receiver: bool
    freeze_after_gen_num: int
    forget_sender: bool
    forget_receiver: bool
    same_mask: bool
    weight_mask: bool
    reset_to_zero: bool
    sender_keep_perc: float
    receiver_keep_perc: float
    group_vars: str | tuple[str, ...]
    no_wandb: bool
    track_examples: bool
    save_weights: bool
    device: str
    print_config: bool
    quiet: bool
    out_dir: str
    overwrite: bool
    num_threads: int
    eot_every: int
    eot_receivers: int
    eot_iters: int
    no_eot: bool
    resume: bool
    checkpoint_every: int

    @property
    def reset_iter(self) -> int:
        return self.trainIters // self.resetNum

    def resolved(self) -> dict[str, Any]:
        """config.json: the flags, the original's derived constants and ``resetIter``."""
        cfg = cli.config_dict(self.as_dict())
        cfg.update(DERIVED)
        cfg["resetIter"] = self.reset_iter
        return cfg


def check_generations(reset_num: int) -> None:
    if reset_num < 1:
        raise UserError(f"--resetNum must be a positive number of generations, got {reset_num}")


def check_common(cfg: Config | MixedConfig) -> None:
    check_generations(cfg.resetNum)
    if cfg.num_threads < 0:
        raise UserError(f"--num_threads must be >= 0, got {cfg.num_threads}")
    flags = cfg.as_dict()
    unknown = [v for v in cfg.group_vars or () if v not in flags]
    if unknown:
        raise UserError(f"--group_vars names unknown option(s): {', '.join(unknown)}")


def validate(cfg: Config) -> None:
    """Reject values and combinations the original would crash on or silently ignore."""
    T, N = cfg.trainIters, cfg.resetNum
    check_generations(N)
    if N > T:
        raise UserError(f"--resetNum {N} exceeds --trainIters {T}: a generation would last 0 iterations")
    if T % N:
        raise UserError(
            f"--resetNum {N} does not divide --trainIters {T}; generations would have unequal lengths "
            f"(try --resetNum {max(d for d in range(1, N + 1) if T % d == 0)})"
        )
    forgetting = cfg.forget_sender or cfg.forget_receiver
    for flag, value in (("same_mask", cfg.same_mask), ("weight_mask", cfg.weight_mask),
                        ("reset_to_zero", cfg.reset_to_zero)):
        if value and not forgetting:
            raise UserError(f"--{flag} has no effect without --forget_sender or --forget_receiver")
    if cfg.sender_keep_perc != 1 and not cfg.forget_sender:
        raise UserError("--sender_keep_perc has no effect without --forget_sender")
    if cfg.receiver_keep_perc != 1 and not cfg.forget_receiver:
        raise UserError("--receiver_keep_perc has no effect without --forget_receiver")
    if cfg.reset_receiver and cfg.forget_receiver:
        raise UserError("--reset_receiver already re-initialises the whole receiver; drop --forget_receiver "
                        "(or use --forget_receiver --receiver_keep_perc 0)")
    if cfg.freeze_after_gen_num != 1 and not cfg.freeze_receiver:
        raise UserError("--freeze_after_gen_num has no effect without --freeze_receiver")
    if cfg.freeze_after_gen_num < 0:
        raise UserError(f"--freeze_after_gen_num must be >= 0, got {cfg.freeze_after_gen_num}")
    if cfg.easy_limit < 0:
        raise UserError(f"--easy_limit must be >= 0, got {cfg.easy_limit}")
    if cfg.topk < 1:
        raise UserError(f"--topk must be >= 1, got {cfg.topk}")
    if cfg.eot_every < 0:
        raise UserError(f"--eot_every must be >= 0, got {cfg.eot_every}")
    check_common(cfg)


def parse_config(argv: list[str] | None = None) -> Config:
    """``forget_train.py``'s flags, parsed and checked."""
    cfg = Config.from_namespace(build_parser().parse_args(argv))
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- mixed_language_forget_samebatch.py
def build_mixed_parser(prog: str = "mixed_language_forget_samebatch.py") -> argparse.ArgumentParser:
    p = cli.OneLineErrorParser(prog=prog, description="Targeted forgetting on a mixed compositional/permuted language")
    add_game_flags(p, train_iters=700, batch_size=32)  # the game flags other than trainIters are unused here
    add_learning_rates(p)  # only --sLearnRate is used (the imitation sender's Adam)
    add_mask_flags(p)
    p.add_argument("--reset_every", type=cli.positive_int, default=1,
                   help="with --train_with_reset: the live sender takes the forgotten copy every n iterations")
    p.add_argument("--train_with_reset", action="store_true", help="make the forgetting real (forget and relearn)")
    p.add_argument("--keep_perc", type=cli.fraction, default=1, help="fraction of each tensor kept")
    add_wandb_flags(p)
    p.add_argument("--iter_per_batch", type=int, default=1, help="accepted, unused in this variant")
    add_run_flags(p)
    add_resume_flags(p, checkpoint_every=100)
    return p


@dataclass(frozen=True)
class MixedConfig(Flags):
    """``mixed_language_forget_samebatch.py``'s flags, in the parser's order."""

    gpu: int
    fname: str
    seed: int
    jupyter: bool
    slambda: float
    rlambda: float
    receiverNum: int
    topk: int
    evaluateSize: int
    trainIters: int
    resetNum: int
    batchSize: int
    sLearnRate: float
    rLearnRate: float
    same_mask: bool
    weight_mask: bool
    reset_to_zero: bool
    reset_every: int
    train_with_reset: bool
    keep_perc: float
    group_vars: str | tuple[str, ...]
    no_wandb: bool
    iter_per_batch: int
    device: str
    print_config: bool
    quiet: bool
    out_dir: str
    overwrite: bool
    num_threads: int
    resume: bool
    checkpoint_every: int

    def resolved(self) -> dict[str, Any]:
        cfg = cli.config_dict(self.as_dict())
        cfg["resetIter"] = self.trainIters // self.resetNum
        if self.group_vars:
            cfg["run_name"] = self.run_name()
        return cfg


def validate_mixed(cfg: MixedConfig) -> None:
    if cfg.reset_every != 1 and not cfg.train_with_reset:
        raise UserError("--reset_every has no effect without --train_with_reset")
    check_common(cfg)


def parse_mixed_config(argv: list[str] | None = None) -> MixedConfig:
    """``mixed_language_forget_samebatch.py``'s flags, parsed and checked."""
    cfg = MixedConfig.from_namespace(build_mixed_parser().parse_args(argv))
    validate_mixed(cfg)
    return cfg
