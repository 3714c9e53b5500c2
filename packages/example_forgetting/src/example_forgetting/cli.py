"""Command lines of the three original scripts: every original flag with its default, plus the
shared extension flags (``--device``, ``--print_config``, ``--quiet``, ``--data_source`` with
``--train_limit``/``--test_limit``, ``--data_root``) that keep the original behaviour by default."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from forgetting_common.atomic import atomic_pickle_dump
from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    maybe_print_config,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from forgetting_common.errors import UserError
from forgetting_common.runlog import progress

from example_forgetting import data as D


def finite_float(value: str) -> float:
    """An argparse type for any finite number (nan and inf are refused)."""
    try:
        number = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}") from err
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def _extension_flags(parser: argparse.ArgumentParser) -> None:
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
    _extension_flags(p)
    return p


def _resolve_data_root(args: argparse.Namespace) -> None:
    if args.data_source == "real":
        args.data_root = str(D.data_root(args.data_root))


def mnist_main(argv: Sequence[str] | None = None):
    args = mnist_parser().parse_args(argv)
    _resolve_data_root(args)
    if maybe_print_config(args):
        return None
    from example_forgetting.train import run_training

    return run_training(args, "mnist")


def cifar_main(argv: Sequence[str] | None = None):
    args = cifar_parser().parse_args(argv)
    _resolve_data_root(args)
    if maybe_print_config(args):
        return None
    from example_forgetting.train import run_training

    return run_training(args, "cifar")


def order_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="order_examples_by_forgetting.py", description="Options")
    p.add_argument("--input_dir", type=str, required=True, help="searched recursively")
    p.add_argument("--input_fname_args", nargs="+",
                   help="arguments and values that file names must contain, i.e. arg1 val1 arg2 val2")
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
    return p


def order_main(argv: Sequence[str] | None = None):
    from example_forgetting.order import (
        find_stats_files,
        load_stats,
        order_examples,
        run_forgetting,
    )

    args = order_parser().parse_args(argv)
    if maybe_print_config(args):
        return None
    if args.epochs <= 0:
        raise UserError(f"--epochs must be a positive integer, got {args.epochs}")
    pairs = args.input_fname_args
    if pairs is not None and len(pairs) % 2:
        raise UserError(
            f"--input_fname_args takes name value pairs, got an odd number of tokens: {' '.join(pairs)}"
        )
    name = args.output_name if args.output_name.endswith(".pkl") else args.output_name + ".pkl"
    if "/" in name:
        raise UserError(f"--output_name {args.output_name!r} must be a file name, not a path (use --output_dir)")
    target = Path(args.output_dir) / name
    if target.exists() and not args.overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it or choose another --output_name")
    if not Path(args.input_dir).is_dir():
        raise UserError(f"--input_dir {args.input_dir} is not a folder")
    print(f"output: {target}", flush=True)
    print(vars(args))
    included, skipped = find_stats_files(args.input_dir, pairs)
    if not args.quiet:
        for path in skipped:
            print(f"skipping file: {path.name}")
    runs = []
    for path in included:
        print(f"including file: {path.name}")
    for path in progress(included, quiet=args.quiet, desc="counting", unit="file"):
        runs.append(run_forgetting(load_stats(path), args.epochs, source=str(path)))
    if not runs:
        raise UserError(f"No input files found in {args.input_dir} that match {pairs}")
    ordering = order_examples(runs, args.epochs, args.tie_seed)
    print(f"Number of unforgettable examples: {ordering.unforgettable}")
    atomic_pickle_dump(ordering.as_pickle_dict(), target)
    print(f"wrote {target} ({len(ordering.indices)} examples from {len(runs)} runs)", file=sys.stderr)
    return ordering
