"""Command line of ``main.py``: every flag of the original ``config.py``, the seed-only flags, and
the shared extension flags, parsed once into the frozen :class:`Config` that the library takes.

Parsing rules kept from the original (spec §1.1): ``parse_known_args`` (unknown flags are logged,
not rejected), repeated flags where the last one wins, argparse prefix abbreviation, and the
ENAS string-to-bool (a *substring* test against ``"true"``). ``--reward_c`` is a float so that
``--reward_c=1.`` from the CNN seed line parses (the original declared it ``int`` and aborted).
"""

from __future__ import annotations

import argparse
import ast
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    config_dict,
    enas_str2bool,
    finite_float,
    fraction,
    non_negative_float,
    positive_float,
)
from forgetting_common.errors import UserError

#: The micro-CNN op library, in the order of the original (spec §2.5).
CNN_OPS = ["identity", "avg3x3", "max3x3", "depthwise_3x3", "depthwise_5x5"]
RNN_ACTIVATIONS = ["tanh", "ReLU", "identity", "sigmoid"]


def str2bool(value: str) -> bool:
    """The original's string-to-bool: ``value.lower() in "true"`` (so ``"1"`` is False)."""
    return enas_str2bool(value)


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


@dataclass(frozen=True)
class Config:
    """The resolved configuration of a ``main.py`` run, under the original flag names.

    The defaults live in :func:`build_parser` alone; the fields after ``test_limit`` are resolved
    from the flags (spec §5.4) and shown by ``--print_config`` and ``params.json`` as the
    original's namespace held them.
    """

    # catastrophic (the WPL additions)
    start_using_fisher: int
    num_batch_per_iter: int
    set_fisher_zero_per_iter: int
    lambda_fisher: float
    fisher_clip_by_norm: float
    alpha_fisher: float
    momentum: bool
    alpha_decay: float
    alpha_decay_after: float
    alpha_decay_mode: int
    alpha_small_scale: float
    shared_valid_fisher: bool
    shared_ce_fisher: bool
    controller_update_fisher: bool
    train_controller: bool
    start_training_controller: int
    stop_training_controller: int
    nb_batch_reward_controller: int
    start_evaluate_diff: int
    # cnn
    search_mode: str
    output_classes: int
    cnn_height: int
    cnn_width: int
    cnn_input_channels: int
    cnn_final_filter_size: int
    cnn_num_repeat_normal: int
    cnn_num_modules: int
    num_workers: int
    # Network
    network_type: str
    num_blocks: int
    tie_weights: bool
    controller_hid: int
    shared_wdrop: float
    shared_dropout: float
    shared_dropoute: float
    shared_dropouti: float
    shared_embed: int
    shared_hid: int
    shared_rnn_max_length: int
    shared_rnn_activations: tuple[str, ...]
    shared_cnn_types: tuple[str, ...]
    shared_cnn_normal_types: tuple[str, ...]
    shared_cnn_reduce_types: tuple[str, ...]
    activation_regularization: bool
    activation_regularization_amount: float
    temporal_activation_regularization: bool
    temporal_activation_regularization_amount: float
    norm_stabilizer_regularization: bool
    norm_stabilizer_regularization_amount: float
    norm_stabilizer_fixed_point: float
    cnn_hid: int
    # Data
    dataset: str
    # Learning
    mode: str
    batch_size: int
    test_batch_size: int
    max_epoch: int
    entropy_mode: str
    policy_batch_size: int
    ppl_square: bool
    reward_c: float
    ema_baseline_decay: float
    discount: float
    controller_max_step: int
    controller_optim: str
    controller_lr: float
    controller_lr_cosine: bool
    controller_lr_max: float
    controller_lr_min: float
    controller_grad_clip: float
    tanh_c: float
    softmax_temperature: float
    entropy_coeff: float
    shared_initial_step: int
    shared_max_step: int
    shared_num_sample: int
    shared_optim: str
    shared_lr: float
    shared_decay: float
    shared_decay_after: float
    shared_l2_reg: float
    shared_grad_clip: float
    derive_num_sample: int
    # Misc
    load_path: str
    log_step: int
    save_epoch: int
    max_save_num: int
    log_level: str
    log_dir: str
    data_dir: str
    num_gpu: int
    random_seed: int
    use_tensorboard: bool
    comment: str | None
    resume: bool
    resume_with_new_params: bool
    # extensions (not in the original)
    device: str
    print_config: bool
    quiet: bool
    train_limit: int | None
    test_limit: int | None
    # resolved after parsing
    model_name: str
    model_dir: str
    data_path: str
    cuda: bool

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, **resolved: Any) -> Config:
        values = dict(vars(ns), **resolved)
        names = {f.name for f in fields(cls)}
        if set(values) != names:  # a flag added to the parser but not here, or the reverse
            raise TypeError(f"{cls.__name__} and the parser disagree: {sorted(set(values) ^ names)}")
        for name, value in values.items():
            if isinstance(value, list):
                values[name] = tuple(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, keyed by the original names (without ``print_config``), in field order."""
        return config_dict({f.name: getattr(self, f.name) for f in fields(self)})

    def with_data(self, data_path: str, output_classes: int) -> Config:
        """The configuration once the data are read (the image classes may override the flag)."""
        return replace(self, data_path=data_path, output_classes=output_classes)


POSITIVE = ("num_batch_per_iter", "batch_size", "test_batch_size", "policy_batch_size", "controller_max_step",
            "shared_num_sample", "derive_num_sample", "log_step", "save_epoch", "num_blocks", "shared_embed",
            "shared_hid", "shared_rnn_max_length", "controller_hid", "nb_batch_reward_controller", "max_save_num",
            "cnn_num_modules", "cnn_num_repeat_normal", "cnn_final_filter_size", "cnn_height", "cnn_width",
            "cnn_input_channels", "output_classes")
ACTIVATION_NAMES = ("tanh", "relu", "identity", "sigmoid")


def check_values(args: argparse.Namespace) -> None:
    """Refuse values the search cannot run with, in one line each."""
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


def resolve_names(args: argparse.Namespace) -> dict[str, str]:
    """``model_name``, ``model_dir`` and ``data_path`` of the original (spec §5.4)."""
    if args.load_path:
        lp = args.load_path.rstrip("/")
        if lp.startswith(args.log_dir):
            model_dir, model_name = lp, Path(lp).name
        else:
            model_name = lp if lp.startswith(args.dataset) else f"{args.dataset}_{lp}"
            model_dir = str(Path(args.log_dir) / model_name)
    else:
        suffix = args.comment if args.comment else time.strftime("%Y-%m-%d_%H-%M-%S")
        model_name = f"{args.dataset}_{suffix}"
        model_dir = str(Path(args.log_dir) / model_name)
    return {"model_name": model_name, "model_dir": model_dir, "data_path": str(Path(args.data_dir) / args.dataset)}


def parse_namespace(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Parse like the original (``parse_known_args``) and check the values; returns ``(args, unparsed)``."""
    args, unparsed = parser.parse_known_args(argv)
    check_values(args)
    return args, unparsed


def parse_args(argv: list[str] | None = None, prog: str = "main.py") -> tuple[Config, list[str]]:
    """The ``main.py`` command line as a :class:`Config` (``cuda`` still False) and the unknown flags."""
    args, unparsed = parse_namespace(build_parser(prog), argv)
    return Config.from_namespace(args, **resolve_names(args), cuda=False), unparsed
