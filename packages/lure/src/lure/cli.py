"""Command lines of ``LURE_main.py`` and ``ALMA.py``: every original flag with its spelling, plus extensions.

The flags are parsed once, here, into a frozen :class:`Config`; the rest of the package reads
that. :meth:`Config.original` gives the configuration under the original dest names, in the
parser's order, as ``--print_config`` prints it and ``config.json`` records it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

from forgetting_common.cli import (
    OneLineErrorParser,
    add_common_flags,
    fraction,
    maybe_print_config,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from forgetting_common.data import resolve_root
from forgetting_common.errors import UserError
from forgetting_common.trackers import TRACKER_NAMES, check_data_parallel, track_argument

from lure.data import DATASETS, DataSpec
from lure.models import ARCHS
from lure.replay import replay_mode


def build_parser(alma: bool = False) -> argparse.ArgumentParser:
    prog = "ALMA.py" if alma else "LURE_main.py"
    desc = ("Anytime learning (ALMA) with warm starting" if alma
            else "Learn, Unlearn and Relearn (LURE) in the anytime learning protocol")
    p = OneLineErrorParser(prog=prog, description=desc)
    g = p.add_argument_group("dataset and architecture (original)")
    g.add_argument("--data", default=None,
                   help="dataset root (default: $FORGETTING_DATA, else ../data); CIFAR in torchvision's layout "
                        "or JPEG CIFAR-10 (cifar10-jpeg/cifar10-jpeg.zip), MNIST in ROOT/MNIST/raw")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS,
                   help="cifar10, cifar100, restricted_imagenet (original); mnist, mnist5k (extensions)")
    g.add_argument("--meta_batch_size", type=positive_int, default=5000, help="examples per state (90%% train, 10%% val)")
    g.add_argument("--meta_batch_number", type=positive_int, default=10, help="number of states")
    g.add_argument("--arch", default="resnet20s", choices=ARCHS, help="model architecture")
    g.add_argument("--imagenet_arch", action="store_true", help="ImageNet stem (7x7 conv + max-pool)")
    g.add_argument("--imagenet_path", default="../imagenet",
                   help="restricted ImageNet root: <path>/{train,val}/<super-class>/<images>")

    g = p.add_argument_group("general (original)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: unseeded)")
    g.add_argument("--gpu", type=int, default=0, help="CUDA device index (used when --device is cuda)")
    g.add_argument("--workers", type=non_negative_int, default=2 if alma else 0,
                   help="accepted; data are batched by index on the device, so no loader workers are used")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --save_dir from its last checkpoint (written after every epoch); "
                        "restarts from the beginning if none was written yet")
    g.add_argument("--checkpoint", default=None,
                   help="resume file for --resume (default: <save_dir>/anytime_state.pth.tar; loaded without running code)")
    g.add_argument("--save_dir", default=None, help="where checkpoints and results go (required)")
    g.add_argument("-no_replay", action="store_true", help="train on the current chunk only")
    g.add_argument("-one_replay", action="store_true", help="train on the current and the previous chunk")
    g.add_argument("-buffer_replay", action="store_true", help="current chunk plus a growing random buffer")
    g.add_argument("--buffer_size_train", type=non_negative_int, default=182, help="train ids added to the buffer per state")
    g.add_argument("--buffer_size_val", type=non_negative_int, default=182, help="val ids added to the buffer per state")
    g.add_argument("-snip_no_replay", action="store_true", help="SNIP data from the current chunk only")
    g.add_argument("-few_shot", action="store_true", help="restricted ImageNet few-shot regime")
    g.add_argument("--n_shots", type=positive_int, default=100, help="examples per class in few-shot mode")

    g = p.add_argument_group("training (original)")
    g.add_argument("--batch_size", type=positive_int, default=128, help="batch size (train, val and test)")
    g.add_argument("--lr", type=positive_float, default=0.1, help="learning rate of the first state")
    g.add_argument("--momentum", type=non_negative_float, default=0.9, help="SGD momentum")
    g.add_argument("--weight_decay", type=non_negative_float, default=1e-4, help="weight decay")
    if not alma:
        g.add_argument("--gamma", type=positive_float, default=1.0, help="LR decay factor at each milestone, within a state")
    g.add_argument("--epochs", type=positive_int, default=182, help="epochs per state")
    g.add_argument("--warmup", type=non_negative_int, default=0, help="linear warm-up epochs (per state)")
    g.add_argument("--print_freq", type=positive_int, default=50, help="print every N iterations")
    g.add_argument("--decreasing_lr", default="91,136", help="LR milestones in epochs within a state, comma-separated")

    g = p.add_argument_group("unlearning and baselines (original)")
    g.add_argument("--snip_size", type=fraction, default=0.20, help="fraction of parameters re-initialised (SNIP)")
    g.add_argument("--sparsity_level", type=float, default=0 if alma else 1, help="accepted; unused (as in the original)")
    if alma:
        g.add_argument("--tickets_mask", default=None, help="accepted; unused (as in the original)")
        g.add_argument("--tickets_init", default=None, help="accepted; unused (as in the original)")
        g.add_argument("--pruner", default="snip", help="accepted; unused (as in the original)")
        g.add_argument("--scope", default="global", help="accepted; unused (as in the original)")
    else:
        g.add_argument("--use_snip", action="store_true", help="LURE: SNIP-ranked re-initialisation at each new state")
        g.add_argument("--use_randinit", action="store_true", help="from scratch: restart from the initial weights")
        g.add_argument("--weight_pruning", action="store_true", help="accepted; unused (as in the original)")
        g.add_argument("--use_llf", action="store_true", help="later-layer forgetting baseline")
        g.add_argument("--use_fc", action="store_true", help="classifier reset baseline (a no-op by default, see --fc_layer_name)")
        g.add_argument("--use_shrink_perturb", action="store_true", help="shrink and perturb baseline")
        g.add_argument("--shrink", type=non_negative_float, default=0.3, help="shrink factor")
        g.add_argument("--perturb", type=non_negative_float, default=0.001, help="perturbation scale")

    g = p.add_argument_group("logging (original)")
    g.add_argument("-wb", action="store_true", help="log to W&B too (when installed); the offline log is always written")
    g.add_argument("--project_name", default="APP", help="W&B project")
    g.add_argument("--run", default="Anytime_fixed" if alma else "snip_fs-fr-im", help="run name")
    g.add_argument("--log-dir", "--log_dir", dest="log_dir", default=None,
                   help="local log folder (the README passes it; the original rejected it); "
                        "default <save_dir>/wb_offline")

    g = p.add_argument_group("extensions (defaults keep the original behaviour)")
    add_common_flags(g, device=True, data_source=True, limits=False)
    g.add_argument("--test_limit", type=positive_int, default=None, help="use at most this many test images (smoke runs)")
    g.add_argument("--image_size", type=positive_int, default=None,
                   help="image side for synthetic data and restricted ImageNet (default 32, 28 for MNIST, 224 for R-ImageNet)")
    g.add_argument("--val_offset", type=non_negative_int, default=None,
                   help="first id of the validation pool (default: 45000 CIFAR, 80565 R-ImageNet, 6800 few-shot, "
                        "55000 MNIST, 3600 MNIST-5k)")
    g.add_argument("--order_seed", type=int, default=0,
                   help="seed of the fixed example order where the files lost it (JPEG CIFAR-10, image folders, MNIST-5k)")
    g.add_argument("--clean_val", action="store_true", help="evaluate validation without training augmentation")
    g.add_argument("--state_lr", type=positive_float, default=0.1, help="LR at the start of every state after the first")
    g.add_argument("--reset_optimizer", action="store_true", help="clear SGD momentum at every new state")
    g.add_argument("--save_start_weights", action="store_true",
                   help="also save each state's starting weights (after unlearning) as <save_dir>/start_<k>.pth.tar")
    g.add_argument("--corruption_eval", action="store_true",
                   help="after the last state, test accuracy under 5 CIFAR-10-C corruptions x 5 severities")
    g.add_argument("--overwrite", action="store_true", help="allow replacing the results of a finished run in --save_dir")
    g.add_argument("--sync_bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over the global batch, as one process computes them")
    g.add_argument("--track", type=track_argument, default=None, metavar="NAME[,NAME...]",
                   help="also measure these on the training steps and validations, per epoch, into metrics.jsonl, "
                        "TensorBoard and <save_dir>/tracked.npz (never changes what is trained): "
                        + ", ".join(TRACKER_NAMES))
    if alma:
        g.add_argument("--alma_gamma", type=positive_float, default=None, help="LR decay at milestones (original: none, i.e. 1)")
    else:
        g.add_argument("--snip_examples", type=positive_int, default=None,
                       help="number of SNIP examples (default: the original's 128 on CIFAR-10/MNIST, M*snip_size otherwise)")
        g.add_argument("--snip_batches", type=positive_int, default=None,
                       help="SNIP batches of 100 to use (default: the original's ceil(#batches/32))")
        g.add_argument("--snip_on_new_chunk", action="store_true", help="take the SNIP data from the new chunk")
        g.add_argument("--snip_train_mode", action="store_true", help="compute SNIP gradients in train mode")
        g.add_argument("--snip_skip_norm", action="store_true", help="never re-initialise normalisation weights")
        g.add_argument("--llf_by_stage", action="store_true",
                       help="--use_llf keeps conv1 and all of layer1/layer2 (any depth) instead of the original's nine "
                            "ResNet-18 names (which reset the later blocks of layer1/layer2 in deeper models)")
        g.add_argument("--fc_layer_name", default="linear",
                       help="name fragment --use_fc resets (original: 'linear', a no-op for these models; use 'fc')")
        g.add_argument("--no_epoch_test", action="store_true", help="skip the per-epoch test evaluation (logs only)")
    return p


#: What ALMA.py fixes, in the order its configuration lists them (after its own flags): it has none of
#: the LURE interventions and never decays the LR (gamma 1, unless --alma_gamma).
ALMA_FIXED = {
    "use_snip": False, "use_randinit": False, "use_llf": False, "use_fc": False, "use_shrink_perturb": False,
    "snip_on_new_chunk": False, "snip_train_mode": False, "snip_skip_norm": False,
    "no_epoch_test": True,  # ALMA.py evaluates the test set only at the end of each state
    "llf_by_stage": False, "shrink": 0.3, "perturb": 0.001, "fc_layer_name": "linear",
    "snip_examples": None, "snip_batches": None,
}


@dataclass(frozen=True)
class Config:
    """Every flag of ``LURE_main.py`` / ``ALMA.py``, parsed once (fields in the parser's order)."""

    alma: bool  # which script: ALMA.py (warm start, no interventions) or LURE_main.py
    # dataset and architecture (original)
    data: str | None
    dataset: str
    meta_batch_size: int
    meta_batch_number: int
    arch: str
    imagenet_arch: bool
    imagenet_path: str
    # general (original)
    seed: int | None
    gpu: int
    workers: int
    resume: bool
    checkpoint: str | None
    save_dir: str | None
    no_replay: bool
    one_replay: bool
    buffer_replay: bool
    buffer_size_train: int
    buffer_size_val: int
    snip_no_replay: bool
    few_shot: bool
    n_shots: int
    # training (original)
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    gamma: float
    epochs: int
    warmup: int
    print_freq: int
    decreasing_lr: str
    # unlearning and baselines (original)
    snip_size: float
    sparsity_level: float
    use_snip: bool
    use_randinit: bool
    use_llf: bool
    use_fc: bool
    use_shrink_perturb: bool
    shrink: float
    perturb: float
    # logging (original; --log-dir is the README's)
    wb: bool
    project_name: str
    run: str
    log_dir: str | None
    # extensions
    device: str
    print_config: bool
    quiet: bool
    data_source: str
    test_limit: int | None
    image_size: int | None
    val_offset: int | None
    order_seed: int
    clean_val: bool
    state_lr: float
    reset_optimizer: bool
    save_start_weights: bool
    corruption_eval: bool
    overwrite: bool
    sync_bn: bool
    snip_examples: int | None
    snip_batches: int | None
    snip_on_new_chunk: bool
    snip_train_mode: bool
    snip_skip_norm: bool
    llf_by_stage: bool
    fc_layer_name: str
    no_epoch_test: bool
    # one script's flags only: the other script's Config holds these placeholders, never shown
    weight_pruning: bool = False
    tickets_mask: str | None = None
    tickets_init: str | None = None
    pruner: str = "snip"
    scope: str = "global"
    alma_gamma: float | None = None
    track: str | None = None  # --track (extension): the shared trackers, see lure.tracking

    @property
    def prog(self) -> str:
        return "ALMA.py" if self.alma else "LURE_main.py"

    @property
    def milestones(self) -> list[int]:
        return parse_milestones(self.decreasing_lr)

    def data_spec(self) -> DataSpec:
        return DataSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DataSpec)})

    def original(self) -> dict:
        """The flags under their original dest names, in the order the script's own parser defines them."""
        values = dataclasses.asdict(self)
        names = [*_dests(self.alma), *(("gamma", *ALMA_FIXED) if self.alma else ())]
        return {name: values[name] for name in names}


@functools.cache
def _dests(alma: bool) -> tuple[str, ...]:
    """The script's own flags (argparse destinations), in the parser's order."""
    return tuple(vars(build_parser(alma).parse_args([])))


def parse_milestones(text: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip() != ""]
    except ValueError as err:
        raise UserError(f"--decreasing_lr {text!r}: expected comma-separated integers such as 91,136") from err
    if any(v < 0 for v in values):
        raise UserError(f"--decreasing_lr {text!r}: milestones must be non-negative epochs")
    return values


def parse_args(argv: Sequence[str] | None = None, alma: bool = False) -> Config:
    values = vars(build_parser(alma).parse_args(argv))
    if alma:
        values.update(ALMA_FIXED, gamma=1.0 if values["alma_gamma"] is None else values["alma_gamma"])
    return Config(alma=alma, **values)


def resolved_config(cfg: Config) -> dict:
    """The configuration as printed by ``--print_config``: original dest names, resolved data root."""
    return {**cfg.original(), "data": str(resolve_root(cfg.data, "../data"))}


def validate(cfg: Config) -> None:
    """Flag-level checks that need no data (one line and exit 2 on failure)."""
    if not cfg.save_dir:
        raise UserError("--save_dir is required: the folder for checkpoints and results (the original crashed without it)")
    if os.path.exists(cfg.save_dir) and not os.path.isdir(cfg.save_dir):
        raise UserError(f"--save_dir {cfg.save_dir} exists and is not a folder")
    parse_milestones(cfg.decreasing_lr)
    replay_mode(cfg)
    if cfg.lr <= 0 or cfg.state_lr <= 0:
        raise UserError("--lr and --state_lr must be positive")
    if cfg.gamma <= 0:
        raise UserError("--gamma must be positive")
    check_data_parallel(cfg.track, int(os.environ.get("WORLD_SIZE") or 1))  # torchrun's world, before anything is written
    if cfg.arch == "mnistnet" and cfg.dataset not in ("mnist", "mnist5k"):
        raise UserError(f"--arch mnistnet is for 1-channel 28x28 digits (--dataset mnist or mnist5k), not {cfg.dataset}")


def main(argv: Sequence[str] | None = None, alma: bool = False) -> dict | None:
    """``LURE_main.py`` / ``ALMA.py``: parse the original flags and run; ``--print_config`` prints and returns."""
    cfg = parse_args(argv, alma=alma)
    if cfg.print_config:
        maybe_print_config({**resolved_config(cfg), "print_config": True})
        return None
    validate(cfg)
    from lure.train import run_anytime  # here, not at the top: train imports this module

    return run_anytime(cfg)
