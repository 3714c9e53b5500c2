"""Command line of ``main.py``: every flag of the original ``config.py``, the seed-only flags, and
the shared extension flags.

Parsing rules kept from the original (spec §1.1): ``parse_known_args`` (unknown flags are logged,
not rejected), repeated flags where the last one wins, argparse prefix abbreviation, and the
ENAS string-to-bool (a *substring* test against ``"true"``). ``--reward_c`` is a float so that
``--reward_c=1.`` from the CNN seed line parses (the original declared it ``int`` and aborted).
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
from typing import Any

from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    enas_str2bool,
    fraction,
    non_negative_float,
    positive_float,
)

logger = logging.getLogger("wpl_enas")

#: The micro-CNN op library, in the order of the original (spec §2.5).
CNN_OPS = ["identity", "avg3x3", "max3x3", "depthwise_3x3", "depthwise_5x5"]
RNN_ACTIVATIONS = ["tanh", "ReLU", "identity", "sigmoid"]

#: Flags that keep the command-line value when a run resumes (spec §1.3).
RESUME_KEEP = ("resume", "resume_with_new_params", "max_epoch", "load_path")


def str2bool(value: str) -> bool:
    """The original's string-to-bool: ``value.lower() in "true"`` (so ``"1"`` is False)."""
    return enas_str2bool(value)


def finite_float(value: str) -> float:
    """A float flag without a natural range (decays, clips where <= 0 means off): nan/inf refused."""
    try:
        number = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}") from err
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def literal(value: str) -> Any:
    """``type=eval`` of the original, made safe: a Python literal (list of names)."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError) as err:
        raise argparse.ArgumentTypeError(f"expected a Python literal such as ['tanh', 'ReLU'], got {value!r}") from err


def build_parser(prog: str = "main.py") -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog=prog, description="ENAS with Weight Plasticity Loss (Benyahia et al., ICML 2019)")

    cat = parser.add_argument_group("catastrophic")
    cat.add_argument("--start_using_fisher", type=int, default=0, help="first epoch (0-based) with WPL on")
    cat.add_argument("--num_batch_per_iter", type=int, default=10, help="training minibatches per sampled architecture")
    cat.add_argument("--set_fisher_zero_per_iter", type=int, default=-1, help="zero the Fisher every k epochs (k > 0)")
    cat.add_argument("--lambda_fisher", type=fraction, default=0.9, help="weight of the new squared gradient")
    cat.add_argument("--fisher_clip_by_norm", type=finite_float, default=0.0, help="per-tensor norm cap of the Fisher (0: off)")
    cat.add_argument("--alpha_fisher", type=non_negative_float, default=1.0, help="WPL strength alpha (folded into the Fisher)")
    cat.add_argument("--momentum", type=str2bool, default=True, help="decay the old Fisher by (1 - lambda)")
    cat.add_argument("--alpha_decay", type=finite_float, default=2, help="alpha decay per epoch")
    cat.add_argument("--alpha_decay_after", type=finite_float, default=15, help="epoch at which alpha starts to decay")
    cat.add_argument("--alpha_decay_mode", type=int, default=1, choices=(0, 1, 2),
                     help="0: constant alpha, 1: linear (original), 2: multiplicative alpha*decay^k")
    cat.add_argument("--alpha_small_scale", type=non_negative_float, default=0.0,
                     help="accepted for the README's command line; without effect, as in the released code")
    cat.add_argument("--shared_valid_fisher", type=str2bool, default=True, help="Fisher from one validation batch per step only")
    cat.add_argument("--shared_ce_fisher", type=str2bool, default=True, help="Fisher from the cross-entropy gradient alone")
    cat.add_argument("--controller_update_fisher", type=str2bool, default=False, help="unused, as in the original")
    cat.add_argument("--train_controller", type=str2bool, default=False)
    cat.add_argument("--start_training_controller", type=int, default=0, help="first epoch with a controller phase")
    cat.add_argument("--stop_training_controller", type=int, default=1000, help="the controller trains while epoch < this")
    cat.add_argument("--nb_batch_reward_controller", type=int, default=1,
                     help="CNN: validation batches behind each controller reward")
    cat.add_argument("--start_evaluate_diff", type=int, default=0, help="measure forgetting in epochs > this")

    cnn = parser.add_argument_group("cnn")
    cnn.add_argument("--search_mode", type=str, choices=["macro", "micro"], default="micro")
    cnn.add_argument("--output_classes", type=int, default=10)
    cnn.add_argument("--cnn_height", type=int, default=32)
    cnn.add_argument("--cnn_width", type=int, default=32)
    cnn.add_argument("--cnn_input_channels", type=int, default=3)
    cnn.add_argument("--cnn_final_filter_size", type=int, default=768 // 2)
    cnn.add_argument("--cnn_num_repeat_normal", type=int, default=6)
    cnn.add_argument("--cnn_num_modules", type=int, default=3)
    cnn.add_argument("--num_workers", type=int, default=4,
                     help="accepted; images are held as tensors and batched by index, so no workers run")

    net = parser.add_argument_group("Network")
    net.add_argument("--network_type", type=str, choices=["rnn", "micro_cnn", "marco_cnn"], default="rnn")
    net.add_argument("--num_blocks", type=int, default=12)
    net.add_argument("--tie_weights", type=str2bool, default=True)
    net.add_argument("--controller_hid", type=int, default=100)
    net.add_argument("--shared_wdrop", type=finite_float, default=0.5)
    net.add_argument("--shared_dropout", type=finite_float, default=0.4)
    net.add_argument("--shared_dropoute", type=finite_float, default=0.1)
    net.add_argument("--shared_dropouti", type=finite_float, default=0.65)
    net.add_argument("--shared_embed", type=int, default=1000)
    net.add_argument("--shared_hid", type=int, default=1000)
    net.add_argument("--shared_rnn_max_length", type=int, default=35)
    net.add_argument("--shared_rnn_activations", type=literal, default=list(RNN_ACTIVATIONS))
    net.add_argument("--shared_cnn_types", type=literal, default=list(CNN_OPS), help="unused, as in the original")
    net.add_argument("--shared_cnn_normal_types", type=literal, default=list(CNN_OPS))
    net.add_argument("--shared_cnn_reduce_types", type=literal, default=list(CNN_OPS))
    net.add_argument("--activation_regularization", type=str2bool, default=False)
    net.add_argument("--activation_regularization_amount", type=non_negative_float, default=2.0)
    net.add_argument("--temporal_activation_regularization", type=str2bool, default=False)
    net.add_argument("--temporal_activation_regularization_amount", type=non_negative_float, default=1.0)
    net.add_argument("--norm_stabilizer_regularization", type=str2bool, default=False)
    net.add_argument("--norm_stabilizer_regularization_amount", type=non_negative_float, default=1.0)
    net.add_argument("--norm_stabilizer_fixed_point", type=finite_float, default=5.0)
    net.add_argument("--cnn_hid", type=int, default=64, help="unused, as in the original")

    data = parser.add_argument_group("Data")
    data.add_argument("--dataset", type=str, default="ptb")

    learn = parser.add_argument_group("Learning")
    learn.add_argument("--mode", type=str, default="train", choices=["train", "derive", "test"])
    learn.add_argument("--batch_size", type=int, default=64)
    learn.add_argument("--test_batch_size", type=int, default=1)
    learn.add_argument("--max_epoch", type=int, default=100)
    learn.add_argument("--entropy_mode", type=str, default="reward", choices=["reward", "regularizer"])
    learn.add_argument("--policy_batch_size", type=int, default=5)
    learn.add_argument("--ppl_square", type=str2bool, default=False)
    learn.add_argument("--reward_c", type=non_negative_float, default=80, help="reward scale (80 for RNN, 1 for CNN)")
    learn.add_argument("--ema_baseline_decay", type=fraction, default=0.95)
    learn.add_argument("--discount", type=finite_float, default=1.0)
    learn.add_argument("--controller_max_step", type=int, default=1500)
    learn.add_argument("--controller_optim", type=str, default="adam", choices=["adam", "sgd"])
    learn.add_argument("--controller_lr", type=positive_float, default=3.5e-4)
    learn.add_argument("--controller_lr_cosine", type=str2bool, default=False, help="unused, as in the original")
    learn.add_argument("--controller_lr_max", type=finite_float, default=0.05, help="unused, as in the original")
    learn.add_argument("--controller_lr_min", type=finite_float, default=0.001, help="unused, as in the original")
    learn.add_argument("--controller_grad_clip", type=finite_float, default=0)
    learn.add_argument("--tanh_c", type=positive_float, default=2.5)
    learn.add_argument("--softmax_temperature", type=positive_float, default=5.0)
    learn.add_argument("--entropy_coeff", type=non_negative_float, default=1e-4)
    learn.add_argument("--shared_initial_step", type=int, default=0)
    learn.add_argument("--shared_max_step", type=int, default=50, help="a shared phase runs max_step + 1 architectures")
    learn.add_argument("--shared_num_sample", type=int, default=1)
    learn.add_argument("--shared_optim", type=str, default="sgd", choices=["sgd"])
    learn.add_argument("--shared_lr", type=positive_float, default=20.0)
    learn.add_argument("--shared_decay", type=positive_float, default=0.96)
    learn.add_argument("--shared_decay_after", type=finite_float, default=15)
    learn.add_argument("--shared_l2_reg", type=non_negative_float, default=1e-7)
    learn.add_argument("--shared_grad_clip", type=non_negative_float, default=0.25)
    learn.add_argument("--derive_num_sample", type=int, default=100)

    misc = parser.add_argument_group("Misc")
    misc.add_argument("--load_path", type=str, default="")
    misc.add_argument("--log_step", type=int, default=50)
    misc.add_argument("--save_epoch", type=int, default=5)
    misc.add_argument("--max_save_num", type=int, default=4)
    misc.add_argument("--log_level", type=str, default="INFO", choices=["INFO", "DEBUG", "WARN"])
    misc.add_argument("--log_dir", type=str, default="logs")
    misc.add_argument("--data_dir", type=str, default="data",
                      help="data root; if DATA_DIR/DATASET is missing and FORGETTING_DATA is set, that root is tried")
    misc.add_argument("--num_gpu", type=int, default=1)
    misc.add_argument("--random_seed", type=int, default=12345)
    misc.add_argument("--use_tensorboard", type=str2bool, default=True)
    misc.add_argument("--comment", type=str, default=None)
    misc.add_argument("--resume", type=str2bool, default=False,
                      help="continue the newest checkpoint of the run folder named by --comment")
    misc.add_argument("--resume_with_new_params", type=str2bool, default=False,
                      help="on resume, re-initialise the shared weights (keep controller and counters)")

    ext = parser.add_argument_group("extensions (not in the original)")
    add_common_flags(ext)
    ext.add_argument("--train_limit", type=int, default=None,
                     help="use at most this many training tokens (text) or images (smoke runs, slices)")
    ext.add_argument("--test_limit", type=int, default=None,
                     help="use at most this many validation and test tokens (text) or images")
    return parser


POSITIVE = ("num_batch_per_iter", "batch_size", "test_batch_size", "policy_batch_size", "controller_max_step",
            "shared_num_sample", "derive_num_sample", "log_step", "save_epoch", "num_blocks", "shared_embed",
            "shared_hid", "shared_rnn_max_length", "controller_hid", "nb_batch_reward_controller", "max_save_num",
            "cnn_num_modules", "cnn_num_repeat_normal", "cnn_final_filter_size", "cnn_height", "cnn_width",
            "cnn_input_channels", "output_classes")


def parse_args(argv: list[str] | None = None, prog: str = "main.py") -> tuple[argparse.Namespace, list[str]]:
    """Parse like the original (``parse_known_args``) and check the values; returns ``(args, unparsed)``."""
    from forgetting_common.errors import UserError

    parser = build_parser(prog)
    args, unparsed = parser.parse_known_args(argv)
    for name in POSITIVE:
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}")
    for name in ("train_limit", "test_limit"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive, got {getattr(args, name)}")
    if args.max_epoch < 0 or args.shared_max_step < 0:
        raise UserError("--max_epoch and --shared_max_step must not be negative")
    if not 0 <= args.random_seed < 2 ** 32:
        raise UserError(f"--random_seed must be in [0, 2**32), got {args.random_seed}")
    if args.num_gpu < 0 or args.num_gpu > 1:
        raise UserError(f"--num_gpu={args.num_gpu}: only 0 (CPU) or 1 GPU is supported, as in the original")
    for name in ("shared_dropout", "shared_dropoute", "shared_dropouti", "shared_wdrop"):
        if not 0.0 <= getattr(args, name) < 1.0:
            raise UserError(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if args.network_type == "marco_cnn":
        raise UserError("--network_type=marco_cnn: the original has no macro search (it raised "
                        "NotImplementedError); use rnn or micro_cnn")
    acts = args.shared_rnn_activations
    if not isinstance(acts, list | tuple) or not acts or any(str(a).lower() not in ACTIVATION_NAMES for a in acts):
        raise UserError(f"--shared_rnn_activations must be a list drawn from {RNN_ACTIVATIONS}, got {acts!r}")
    for name in ("shared_cnn_normal_types", "shared_cnn_reduce_types"):
        ops = getattr(args, name)
        if not isinstance(ops, list | tuple) or not ops or any(op not in CNN_OPS for op in ops):
            raise UserError(f"--{name} must be a list drawn from {CNN_OPS}, got {ops!r}")
    if args.network_type == "micro_cnn":
        from wpl_enas.models.shared_cnn import check_channel_plan

        check_channel_plan(args.cnn_final_filter_size, args.cnn_num_modules, args.cnn_input_channels,
                           args.cnn_height, args.cnn_width)
    if args.network_type == "rnn" and args.tie_weights and args.shared_embed != args.shared_hid:
        raise UserError(f"--tie_weights needs --shared_embed == --shared_hid (got {args.shared_embed} and {args.shared_hid})")
    return args, unparsed


ACTIVATION_NAMES = ("tanh", "relu", "identity", "sigmoid")
