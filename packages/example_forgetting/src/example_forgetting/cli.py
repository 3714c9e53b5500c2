"""Command lines of the three original scripts, parsed once into frozen configurations.

Every original flag keeps its spelling and default; the shared extension flags (``--device``,
``--print_config``, ``--quiet``, ``--data_source`` with ``--train_limit``/``--test_limit``,
``--data_root`` ...) keep the original behaviour by default. The parsed flags become a
:class:`MnistConfig`, :class:`CifarConfig` or :class:`OrderConfig`, whose fields are the
original argparse names (``--print_config`` and ``config.json`` show them so); the library takes
that object, never the argparse namespace.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    finite_float,
    maybe_print_config,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from forgetting_common.errors import UserError

from example_forgetting.naming import CIFAR_NAME_ARGS, MNIST_NAME_ARGS, save_fname


def _extension_flags(parser: argparse.ArgumentParser) -> None:
    # imported here: the trackers import torch, which the order script's parser does without
    from forgetting_common.trackers import TRACKER_NAMES, track_argument

    add_common_flags(parser, device=True, data_source=True, limits=True)
    parser.add_argument("--data_root", default=None,
                        help="data root (default: $FORGETTING_DATA, else the original's /tmp/data); "
                             "MNIST in ROOT/MNIST/raw, CIFAR in ROOT/cifar-10-batches-py, "
                             "ROOT/cifar-100-python or ROOT/cifar10-jpeg/cifar10-jpeg.zip")
    parser.add_argument("--no_download", action="store_true",
                        help="never try a torchvision download when the data is absent")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the outputs of an earlier run with the same file name")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run of this configuration from its checkpoint "
                             "(OUTPUT_DIR/runs/<save_fname>/checkpoint.pt, written every epoch and on "
                             "Ctrl-C/SIGTERM); starts from the beginning if there is none")
    parser.add_argument("--test_batch_size", type=positive_int, default=32,
                        help="evaluation batch size (the original's hard-coded 32)")
    parser.add_argument("--no_tensorboard", action="store_true", help="no TensorBoard event files")
    parser.add_argument("--track", type=track_argument, default=None, metavar="NAME[,NAME...]",
                        help="also measure these on the training minibatches (and the test set), per epoch, into "
                             "metrics.jsonl (track/<key>), TensorBoard and OUTPUT_DIR/runs/<save_fname>/tracked.npz "
                             f"(never changes what is trained): {', '.join(TRACKER_NAMES)}")


def mnist_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="run_mnist.py", description="training MNIST")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "permuted_mnist"),
                   help="dataset to use, can be mnist or permuted_mnist")
    p.add_argument("--batch_size", type=positive_int, default=64, metavar="N")
    p.add_argument("--epochs", type=positive_int, default=200, metavar="N")
    p.add_argument("--lr", type=non_negative_float, default=0.01, metavar="LR")
    p.add_argument("--momentum", type=non_negative_float, default=0.5, metavar="M")
    p.add_argument("--no_cuda", action="store_true", default=False, help="disables CUDA training")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument("--sorting_file", default="none",
                   help='name of the sorted-order file in --input_dir (default "none": no removal)')
    p.add_argument("--remove_n", type=non_negative_int, default=0, help="number of sorted examples to remove")
    p.add_argument("--keep_lowest_n", type=int, default=0,
                   help="start rank of the removal; a negative number removes a random draw")
    p.add_argument("--no_dropout", action="store_true", default=False, help="remove dropout")
    p.add_argument("--input_dir", default="mnist_results/", help="directory of the sorting file")
    p.add_argument("--output_dir", required=True, help="directory where to save results")
    p.add_argument("--permutation_seed", type=int, default=None,
                   help="permuted_mnist: draw the pixel permutation from this seed instead of from "
                        "torch's global RNG after --seed (the original; each seed its own task)")
    _extension_flags(p)
    return p


def cifar_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="run_cifar.py", description="CNN")
    p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
    p.add_argument("--model", default="resnet18", choices=("resnet18", "wideresnet"))
    p.add_argument("--batch_size", type=positive_int, default=128)
    p.add_argument("--epochs", type=positive_int, default=200)
    p.add_argument("--learning_rate", type=non_negative_float, default=0.1)
    p.add_argument("--data_augmentation", action="store_true", default=False,
                   help="augment data by flipping and cropping")
    p.add_argument("--cutout", action="store_true", default=False, help="apply cutout")
    p.add_argument("--n_holes", type=non_negative_int, default=1, help="number of holes to cut out from image")
    p.add_argument("--length", type=non_negative_int, default=16, help="length of the holes")
    p.add_argument("--no-cuda", dest="no_cuda", action="store_true", default=False,
                   help="disables CUDA training (a no-op in the original; here it forces the CPU)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sorting_file", default="none")
    p.add_argument("--remove_n", type=non_negative_int, default=0)
    p.add_argument("--keep_lowest_n", type=int, default=0)
    p.add_argument("--remove_subsample", type=non_negative_int, default=0)
    p.add_argument("--noise_percent_labels", type=int, default=0)
    p.add_argument("--noise_percent_pixels", type=int, default=0)
    # The default is the int 0 (argparse leaves non-string defaults alone), so default runs are
    # named ..._noise_std_pixels_0 and given values print as floats (1 -> 1.0), as in the original.
    p.add_argument("--noise_std_pixels", type=non_negative_float, default=0)
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    p.add_argument("--input_dir", default="cifar10_results/")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--fix_lr_offbyone", action="store_true",
                   help="decay the LR at epochs 60/120/160 instead of the original's 61/121/161")
    p.add_argument("--pixel_noise_mean", type=finite_float, default=120.0,
                   help="mean of the pixel noise (the original's hard-coded 120)")
    p.add_argument("--pixel_noise_clip", action="store_true",
                   help="clip noisy pixels to 0..255 instead of the original's uint8 wrap-around")
    p.add_argument("--save_weights", action="store_true",
                   help="also store the model weights in the best-accuracy checkpoint (.t7)")
    p.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over the whole global minibatch (all ranks), "
                        "so a step equals the single-process one; no effect in one process")
    _extension_flags(p)
    return p


def order_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="order_examples_by_forgetting.py", description="Options")
    p.add_argument("--input_dir", type=str, required=True, help="searched recursively")
    p.add_argument("--input_fname_args", nargs="+",
                   help="arguments and values that file names must contain, i.e. arg1 val1 arg2 val2 (a tracked.npz "
                        "file: its run's config.json must hold them)")
    p.add_argument("--output_dir", type=str, required=True)
    p.add_argument("--output_name", "--output_fname", dest="output_name", type=str, required=True,
                   help=".pkl is appended unless present (--output_fname, as the README spells it, is an alias)")
    p.add_argument("--epochs", type=positive_int, default=200,
                   help="presentations considered per run; also the count of a never-learned example")
    p.add_argument("--tie_seed", type=int, default=0, help="seed of the random tie-break among equal counts")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--print_config", action="store_true",
                   help="print the resolved configuration as one JSON object and exit (reads and writes nothing)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no list of skipped files")
    p.add_argument("--no_plot", action="store_true",
                   help="do not draw OUTPUT_NAME_histogram.png beside the output (Fig. 1: forgetting counts)")
    return p


# ---------------------------------------------------------------------------------------------
# The parsed configurations


@dataclass(frozen=True, kw_only=True)
class _Flags:
    """Common ground of the configurations: built from a parsed namespace, shown under its names."""

    #: The names as the parser produced them, in its order: ``config.json`` and ``--print_config``
    #: list exactly these (a field the script has no flag for stays out unless it was set).
    names: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace):
        values = {k: v for k, v in vars(args).items() if k != "print_config"}
        known = {f.name for f in fields(cls)} - {"names"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field for {', '.join(unknown)}")
        return cls(**values, names=tuple(values))

    def to_dict(self) -> dict[str, Any]:
        """The configuration under the original argparse names, in the parser's order."""
        names = self.names or tuple(f.name for f in fields(self) if f.name != "names")
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True, kw_only=True)
class RunConfig(_Flags):
    """The flags ``run_mnist.py`` and ``run_cifar.py`` share (original ones, then extensions)."""

    script: ClassVar[str]
    name_args: ClassVar[tuple[str, ...]]

    dataset: str
    batch_size: int
    epochs: int
    no_cuda: bool
    seed: int
    sorting_file: str
    remove_n: int
    keep_lowest_n: int
    input_dir: str
    output_dir: str
    device: str
    quiet: bool
    data_source: str
    train_limit: int | None
    test_limit: int | None
    data_root: str | None
    no_download: bool
    overwrite: bool
    resume: bool
    test_batch_size: int
    no_tensorboard: bool
    track: str | None = None

    @property
    def save_fname(self) -> str:
        """The original's output file stem (``dataset_mnist__no_dropout_True__seed_1__...``)."""
        return save_fname(self.to_dict(), self.name_args)


@dataclass(frozen=True, kw_only=True)
class MnistConfig(RunConfig):
    """``run_mnist.py``."""

    script: ClassVar[str] = "mnist"
    name_args: ClassVar[tuple[str, ...]] = MNIST_NAME_ARGS

    lr: float
    momentum: float
    no_dropout: bool
    permutation_seed: int | None
    # No flag: the original MNIST script has no label noise; the library sets it for the small
    # reproduction's Figure 3 run (python -m example_forgetting.reproduce).
    noise_percent_labels: int = 0
    sync_bn: bool = False  # no flag: the MNIST network has no BatchNorm


@dataclass(frozen=True, kw_only=True)
class CifarConfig(RunConfig):
    """``run_cifar.py``."""

    script: ClassVar[str] = "cifar"
    name_args: ClassVar[tuple[str, ...]] = CIFAR_NAME_ARGS

    model: str
    learning_rate: float
    data_augmentation: bool
    cutout: bool
    n_holes: int
    length: int
    remove_subsample: int
    noise_percent_labels: int
    noise_percent_pixels: int
    noise_std_pixels: float  # the default stays the int 0, so file names read noise_std_pixels_0
    optimizer: str
    fix_lr_offbyone: bool
    pixel_noise_mean: float
    pixel_noise_clip: bool
    save_weights: bool
    sync_bn: bool


Config = MnistConfig | CifarConfig


@dataclass(frozen=True, kw_only=True)
class OrderConfig(_Flags):
    """``order_examples_by_forgetting.py``."""

    input_dir: str
    input_fname_args: list[str] | None
    output_dir: str
    output_name: str
    epochs: int
    tie_seed: int
    overwrite: bool
    quiet: bool
    no_plot: bool

    @property
    def output_file(self) -> str:
        """``--output_name`` with ``.pkl`` appended unless present (the original's rule)."""
        return self.output_name if self.output_name.endswith(".pkl") else self.output_name + ".pkl"


def resolved(config: Config) -> Config:
    """``--data_root`` resolved (the flag, else ``$FORGETTING_DATA``, else ``/tmp/data``) for real data."""
    if config.data_source != "real":
        return config
    from example_forgetting import data as D  # torch: not for the order script

    return replace(config, data_root=str(D.data_root(config.data_root)))


def validate(config: Config) -> None:
    """Checks that need no data: flag ranges, combinations and the output name."""
    for name in ("batch_size", "epochs"):
        if getattr(config, name) <= 0:
            raise UserError(f"--{name} must be a positive integer, got {getattr(config, name)}")
    if config.remove_n < 0:
        raise UserError(f"--remove_n must be >= 0, got {config.remove_n}")
    if "/" in config.sorting_file or "\\" in config.sorting_file:
        raise UserError(
            f"--sorting_file {config.sorting_file!r} must be a file name inside --input_dir, not a path "
            "(it becomes part of the output file names)"
        )
    if not 0 <= config.noise_percent_labels <= 100:
        raise UserError(f"--noise_percent_labels must be in 0..100, got {config.noise_percent_labels}")
    if not isinstance(config, CifarConfig):
        return
    if config.optimizer not in ("sgd", "adam"):
        raise UserError(f"--optimizer {config.optimizer!r} is not known; use sgd or adam")
    if not 0 <= config.noise_percent_pixels <= 100:
        raise UserError(f"--noise_percent_pixels must be in 0..100, got {config.noise_percent_pixels}")
    if config.noise_std_pixels < 0:
        raise UserError(f"--noise_std_pixels must be >= 0, got {config.noise_std_pixels}")
    if config.remove_subsample and config.sorting_file == "none" and config.keep_lowest_n >= 0:
        raise UserError("--remove_subsample needs a --sorting_file (it thins the lowest-ranked block)")
    if config.n_holes < 0 or config.length < 0:
        raise UserError("--n_holes and --length must be >= 0")


def parse_mnist(argv: Sequence[str] | None = None) -> tuple[MnistConfig, bool]:
    """``(config, print_config)`` of a ``run_mnist.py`` command line."""
    args = mnist_parser().parse_args(argv)
    return resolved(MnistConfig.from_namespace(args)), args.print_config


def parse_cifar(argv: Sequence[str] | None = None) -> tuple[CifarConfig, bool]:
    """``(config, print_config)`` of a ``run_cifar.py`` command line."""
    args = cifar_parser().parse_args(argv)
    return resolved(CifarConfig.from_namespace(args)), args.print_config


def parse_order(argv: Sequence[str] | None = None) -> tuple[OrderConfig, bool]:
    """``(config, print_config)`` of an ``order_examples_by_forgetting.py`` command line."""
    args = order_parser().parse_args(argv)
    return OrderConfig.from_namespace(args), args.print_config


def print_config(config: _Flags) -> None:
    """``--print_config``: one JSON object under the original names (reads and writes nothing)."""
    maybe_print_config({"print_config": True}, config=config.to_dict())


def mnist_main(argv: Sequence[str] | None = None):
    config, print_only = parse_mnist(argv)
    if print_only:
        return print_config(config)
    from example_forgetting.train import train

    return train(config)


def cifar_main(argv: Sequence[str] | None = None):
    config, print_only = parse_cifar(argv)
    if print_only:
        return print_config(config)
    from example_forgetting.train import train

    return train(config)


def order_main(argv: Sequence[str] | None = None):
    config, print_only = parse_order(argv)
    if print_only:
        return print_config(config)
    from example_forgetting.order import order

    return order(config)
