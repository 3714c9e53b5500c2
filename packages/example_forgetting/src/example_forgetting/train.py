"""The training-and-recording loop shared by ``run_mnist.py`` and ``run_cifar.py``.

Data live on the device as tensors and are batched by index (no DataLoader, no per-example
transform); CIFAR augmentation (crop with zero padding, flip, Cutout) runs on whole batches.
Per-example statistics are scattered from the training forward pass into preallocated tensors
(:class:`~example_forgetting.stats.StatsRecorder`). After every epoch the original outputs are
rewritten atomically: ``<save_fname>__stats_dict.pkl`` and ``<save_fname>__best_acc.txt`` (and,
for CIFAR, ``checkpoint/<dataset>/<save_fname>.t7``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common.atomic import atomic_pickle_dump, atomic_torch_save, atomic_write_text
from forgetting_common.cli import config_dict
from forgetting_common.data import normalize, permute_pixels, pixel_permutation
from forgetting_common.data.tensors import cutout, random_crop, random_flip
from forgetting_common.device import resolve_device
from forgetting_common.errors import UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog
from forgetting_common.seeding import make_generator

from example_forgetting import checkpoint as ckpt
from example_forgetting import data as D
from example_forgetting.models import MnistNet, build_cifar_model
from example_forgetting.naming import (
    BEST_ACC_SUFFIX,
    CHANGED_LABELS_SUFFIX,
    CIFAR_NAME_ARGS,
    MNIST_NAME_ARGS,
    STATS_SUFFIX,
    save_fname,
)
from example_forgetting.order import load_sorting
from example_forgetting.stats import StatsRecorder

CIFAR_MILESTONES = (60, 120, 160)
CIFAR_GAMMA = 0.2


def cifar_lr(base: float, epoch: int, fix_offbyone: bool = False) -> float:
    """The SGD learning rate in effect during 0-based ``epoch``.

    The original steps ``MultiStepLR`` at the *end* of epoch ``e`` with ``e`` passed explicitly,
    so the decay lands one epoch late: 0.1 for epochs 0-60, 0.02 for 61-120, 0.004 for 121-160,
    0.0008 after. ``fix_offbyone`` gives the intended 0-59 / 60-119 / 120-159 / 160+.
    """
    ref = epoch if fix_offbyone else epoch - 1
    return base * CIFAR_GAMMA ** sum(1 for m in CIFAR_MILESTONES if m <= ref)


@dataclass
class RunResult:
    save_fname: str
    output_dir: Path
    train_indx: np.ndarray
    labels: np.ndarray  # training labels used (after label noise), position space
    recorder: StatsRecorder
    test_acc: list[float]
    changed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (orig ids, old, new)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def stats_path(self) -> Path:
        return self.output_dir / (self.save_fname + STATS_SUFFIX)


def _sorting_path(input_dir: str, name: str) -> Path:
    base = Path(input_dir) / name
    with_suffix = Path(str(base) + ".pkl")
    if with_suffix.is_file():
        return with_suffix
    if base.is_file():
        return base
    raise UserError(f"sorting file not found: looked for {with_suffix} and {base} (set --input_dir / --sorting_file)")


def validate(args: argparse.Namespace, kind: str) -> None:
    """Checks that need no data: flag ranges and the output name."""
    for name in ("batch_size", "epochs"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.remove_n < 0:
        raise UserError(f"--remove_n must be >= 0, got {args.remove_n}")
    if "/" in args.sorting_file or "\\" in args.sorting_file:
        raise UserError(
            f"--sorting_file {args.sorting_file!r} must be a file name inside --input_dir, not a path "
            "(it becomes part of the output file names)"
        )
    if kind == "cifar":
        if args.optimizer not in ("sgd", "adam"):
            raise UserError(f"--optimizer {args.optimizer!r} is not known; use sgd or adam")
        if not 0 <= args.noise_percent_labels <= 100:
            raise UserError(f"--noise_percent_labels must be in 0..100, got {args.noise_percent_labels}")
        if not 0 <= args.noise_percent_pixels <= 100:
            raise UserError(f"--noise_percent_pixels must be in 0..100, got {args.noise_percent_pixels}")
        if args.noise_std_pixels < 0:
            raise UserError(f"--noise_std_pixels must be >= 0, got {args.noise_std_pixels}")
        if args.remove_subsample and args.sorting_file == "none" and args.keep_lowest_n >= 0:
            raise UserError("--remove_subsample needs a --sorting_file (it thins the lowest-ranked block)")
        if args.n_holes < 0 or args.length < 0:
            raise UserError("--n_holes and --length must be >= 0")


def run_training(args: argparse.Namespace, kind: str) -> RunResult:
    """Train one run as ``run_mnist.py`` (``kind='mnist'``) or ``run_cifar.py`` (``'cifar'``)."""
    validate(args, kind)
    name = save_fname(vars(args), MNIST_NAME_ARGS if kind == "mnist" else CIFAR_NAME_ARGS)
    out_dir = Path(args.output_dir)
    stats_path = out_dir / (name + STATS_SUFFIX)
    run_dir = out_dir / "runs" / name
    ckpt_path = run_dir / ckpt.CHECKPOINT_NAME
    print(f"output folder: {out_dir} (run {name})", flush=True)
    resumed = ckpt.prepare_output(args, stats_path, run_dir)
    overwrite = getattr(args, "overwrite", False)
    device = torch.device("cpu") if args.no_cuda else resolve_device(args.device)
    quiet = getattr(args, "quiet", False)

    # Seeding in the original's order: torch (model init, dropout), then NumPy (data stream).
    torch.manual_seed(args.seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(args.seed)
    rng = np.random.RandomState(args.seed % 2**32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    permutation = None
    if kind == "mnist" and args.dataset == "permuted_mnist":
        pseed = getattr(args, "permutation_seed", None)
        # Default: the first draw of torch's global RNG right after seeding, as in the original.
        permutation = torch.randperm(28 * 28) if pseed is None else pixel_permutation(pseed, 28 * 28)

    ordered = None
    sorting_path = None
    if args.sorting_file != "none":
        sorting_path = _sorting_path(args.input_dir, args.sorting_file)
        ordered, _ = load_sorting(sorting_path)

    root = D.data_root(getattr(args, "data_root", None))
    train, test = D.load_splits(
        args.dataset, args.data_source, root, args.train_limit, args.test_limit,
        download=not getattr(args, "no_download", False),
    )
    n_orig = len(train)
    if ordered is not None:
        D.check_sorting_ids(ordered, n_orig, str(sorting_path))
    train_indx = D.select_training_indices(
        n_orig, rng, ordered, args.remove_n, args.keep_lowest_n, getattr(args, "remove_subsample", 0)
    )
    images = train.images.numpy()[train_indx]
    labels = train.labels.numpy()[train_indx].astype(np.int64)

    if getattr(args, "noise_percent_pixels", 0):
        images = D.add_pixel_noise(
            images, args.noise_percent_pixels, args.noise_std_pixels, rng,
            mean=getattr(args, "pixel_noise_mean", 120.0), clip=getattr(args, "pixel_noise_clip", False),
        )
    changed = None
    if getattr(args, "noise_percent_labels", 0):
        labels, positions, old, new = D.add_label_noise(labels, args.noise_percent_labels, rng)
        changed = (train_indx[positions], old, new)
        print(f"flipping {len(positions)} labels")
    print(f"Training on {len(labels)} examples")

    num_classes = D.NUM_CLASSES[args.dataset]
    if kind == "mnist":
        model = MnistNet(dropout=not args.no_dropout, num_classes=num_classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        mean, std = D.MNIST_MEAN, D.MNIST_STD
    else:
        model = build_cifar_model(args.model, num_classes)
        if args.optimizer == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
        else:
            optimizer = torch.optim.SGD(
                model.parameters(), lr=args.learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-4
            )
        mean, std = D.CIFAR_MEAN, D.CIFAR_STD
    model = model.to(device)

    # Data on the device. MNIST: normalised once (then permuted; normalisation is per pixel and
    # identical, so the order does not matter). CIFAR train: uint8, converted per batch so that
    # the crop pads with black (0 before normalisation) as torchvision's RandomCrop does.
    y_train = torch.from_numpy(labels).to(device)
    x_test = normalize(test.images, mean, std).to(device)
    y_test = test.labels.to(device)
    if kind == "mnist":
        x_train = normalize(torch.from_numpy(images), mean, std).to(device)
        if permutation is not None:
            x_train = permute_pixels(x_train, permutation)
            x_test = permute_pixels(x_test, permutation)
    else:
        x_train = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    aug_gen = make_generator(args.seed, "augment")

    def batch_inputs(pos: torch.Tensor) -> torch.Tensor:
        if kind == "mnist":
            return x_train[pos]
        x = x_train[pos].to(torch.float32) / 255.0
        if args.data_augmentation:
            x = random_flip(random_crop(x, 4, aug_gen), aug_gen)
        x = (x - mean_t) / std_t
        if args.cutout:
            x = cutout(x, args.length, aug_gen, args.n_holes)
        return x

    config = config_dict(args)
    config.pop("resume", None)  # an action, not configuration: a resumed run's config.json is the same
    config.update(save_fname=name, train_size=len(labels), device_resolved=str(device))
    fingerprint = ckpt.data_fingerprint(train_indx, labels, images)
    recorder = StatsRecorder(train_indx, args.epochs, device)
    n = len(labels)
    n_batches = max(1, (n + args.batch_size - 1) // args.batch_size)
    best_acc, start_epoch, start_batch, seconds_before = 0.0, 0, 0, 0.0
    perm = None
    loss_sum = torch.zeros((), device=device)
    if resumed is not None:
        ckpt.check_compatible(resumed, config, ckpt_path)
        ckpt.check_same_data(resumed, fingerprint, ckpt_path)
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        recorder.load_state_dict(resumed["recorder"])
        ckpt.restore_random_states(resumed["random"], rng, aug_gen)
        best_acc, seconds_before = float(resumed["best_acc"]), float(resumed["train_seconds"])
        start_epoch, start_batch = int(resumed["epoch"]), int(resumed["batch"])
        if start_batch:
            perm = resumed["perm"].numpy()
            loss_sum = resumed["loss_sum"].to(device)
        print(f"resuming from {ckpt_path}: epoch {start_epoch}, minibatch {start_batch}", file=sys.stderr)

    out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog.create(
        run_dir, config, overwrite=overwrite, resume=getattr(args, "resume", False),
        resume_state=(resumed["runlog"] if resumed is not None else EMPTY_STATE),
        tensorboard=not getattr(args, "no_tensorboard", False), quiet=quiet,
        exists_hint="pass --overwrite to replace it, or --resume to continue it",
    )
    if changed is not None:
        atomic_write_text(out_dir / (name + CHANGED_LABELS_SUFFIX), D.changed_labels_text(*changed))

    result = RunResult(name, out_dir, train_indx, labels, recorder, recorder.test_acc, changed)
    start = time.time()

    def save_checkpoint(epoch: int, batch: int) -> None:
        with ckpt.naming(run_dir):
            _save_checkpoint(epoch, batch)

    def _save_checkpoint(epoch: int, batch: int) -> None:
        ckpt.save(
            ckpt_path, config=ckpt.comparable_config(config), epoch=epoch, batch=batch,
            perm=None if not batch else torch.from_numpy(perm.copy()), loss_sum=loss_sum.detach().cpu(),
            model=model.state_dict(), optimizer=optimizer.state_dict(), recorder=recorder.state_dict(),
            best_acc=best_acc, random=ckpt.random_states(rng, aug_gen), data=fingerprint,
            runlog=log.checkpoint_state(), train_seconds=seconds_before + time.time() - start,
        )

    try:
        with ckpt.DeferredStop() as stopper:
            for epoch in range(start_epoch, args.epochs):
                t0 = time.time()
                if kind == "cifar" and args.optimizer == "sgd":
                    lr = cifar_lr(args.learning_rate, epoch, getattr(args, "fix_lr_offbyone", False))
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                lr_now = optimizer.param_groups[0]["lr"]
                model.train()
                first = start_batch if epoch == start_epoch else 0
                if not first:
                    perm = rng.permutation(np.arange(n))
                    loss_sum = torch.zeros((), device=device)
                perm_t = torch.from_numpy(perm).to(device)
                recorder.set_first_order(perm, min(args.batch_size, n))
                bar = log.progress(range(first, n_batches), desc=f"epoch {epoch}", leave=False,
                                   initial=first, total=n_batches)
                for b in bar:
                    pos = perm_t[b * args.batch_size : (b + 1) * args.batch_size]
                    x = batch_inputs(pos)
                    y = y_train[pos]
                    optimizer.zero_grad(set_to_none=True)
                    outputs = model(x)
                    losses = F.cross_entropy(outputs, y, reduction="none")
                    recorder.record(epoch, pos, outputs, y, losses)
                    loss = losses.mean()
                    loss_sum += loss.detach()
                    loss.backward()
                    optimizer.step()
                    if not quiet and b % 50 == 49 and not bar.disable:
                        bar.set_postfix(loss=f"{loss.item():.4f}")
                    if stopper.requested and b + 1 < n_batches:
                        save_checkpoint(epoch, b + 1)
                        _stopped(ckpt_path, epoch, b + 1)
                        stopper.stop()
                test_acc, test_loss = evaluate(model, x_test, y_test, batch_size=getattr(args, "test_batch_size", 32))
                running = recorder.end_epoch(test_acc)
                train_loss = float(loss_sum) / n_batches
                # Outputs after every epoch, so an interrupted run leaves valid files.
                with ckpt.naming(out_dir):
                    atomic_pickle_dump(recorder.to_dict(), stats_path)
                    atomic_write_text(out_dir / (name + BEST_ACC_SUFFIX), recorder.best_acc_text())
                    if kind == "cifar" and test_acc > best_acc:
                        best_acc = test_acc
                        state = {"acc": test_acc, "epoch": epoch}
                        if getattr(args, "save_weights", False):
                            state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                        atomic_torch_save(state, out_dir / "checkpoint" / args.dataset / (name + ".t7"))
                epoch_time = time.time() - t0
                # Wall-clock time is the row's `time` column only, so that a resumed run's rows
                # equal an uninterrupted run's.
                log.log({"train_acc": running[-1], "train_loss": train_loss, "test_acc": test_acc,
                         "test_loss": test_loss, "lr": lr_now}, step=epoch)
                print(
                    f"| Epoch {epoch}/{args.epochs}  train loss {train_loss:.4f} acc {running[-1]:.3f}%  "
                    f"| Validation loss {test_loss:.4f} Acc@1 {test_acc:.2f}%  ({epoch_time:.1f}s)",
                    flush=True,
                )
                if epoch + 1 < args.epochs:
                    save_checkpoint(epoch + 1, 0)
                    if stopper.requested:
                        _stopped(ckpt_path, epoch + 1, 0)
                        stopper.stop()
    finally:
        log.close()
    result.timings["train_s"] = seconds_before + time.time() - start
    log.write_json("result.json", {
        "save_fname": name, "train_size": n, "test_acc": recorder.test_acc,
        "best_train_acc": max(recorder.train_running) if recorder.train_running else None,
        "best_test_acc": max(recorder.test_acc) if recorder.test_acc else None,
        "train_seconds": result.timings["train_s"],
    })
    ckpt_path.unlink(missing_ok=True)  # finished: nothing to resume
    return result


def _stopped(path: Path, epoch: int, batch: int) -> None:
    print(f"stopped at epoch {epoch}, minibatch {batch}; checkpoint {path}; run the same command with "
          "--resume to continue", file=sys.stderr, flush=True)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32) -> tuple[float, float]:
    """Test accuracy (%) and mean loss in eval mode, over the whole set in order."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    for begin in range(0, len(y), batch_size):
        out = model(x[begin : begin + batch_size])
        target = y[begin : begin + batch_size]
        correct += (torch.max(out, 1)[1] == target).sum()
        loss += F.cross_entropy(out, target, reduction="sum").double()
    total = max(1, len(y))
    return 100.0 * int(correct) / float(total), float(loss) / total
