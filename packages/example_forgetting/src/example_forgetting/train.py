"""The training-and-recording loop shared by ``run_mnist.py`` and ``run_cifar.py``.

Data live on the device as tensors and are batched by index (no DataLoader, no per-example
transform); CIFAR augmentation (crop with zero padding, flip, Cutout) runs on whole batches.
Per-example statistics are scattered from the training forward pass into preallocated tensors
(:class:`~example_forgetting.stats.StatsRecorder`). After every epoch the original outputs are
rewritten atomically: ``<save_fname>__stats_dict.pkl`` and ``<save_fname>__best_acc.txt`` (and,
for CIFAR, ``checkpoint/<dataset>/<save_fname>.t7``). The run folder ``runs/<save_fname>/``
holds ``config.json``, ``metrics.jsonl`` and TensorBoard scalars under ``train/``, ``test/``
and ``stats/`` (forgetting so far), one point per epoch; with ``--track`` also the shared
trackers' values (``track/<key>``) and, at the end, ``tracked.npz``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from forgetting_common import distributed
from forgetting_common.atomic import atomic_pickle_dict, atomic_torch_save, atomic_write_text
from forgetting_common.data import normalize, permute_pixels, pixel_permutation
from forgetting_common.device import resolve_device
from forgetting_common.distributed import Dist
from forgetting_common.errors import Terminated, UserError
from forgetting_common.runlog import EMPTY_STATE, RunLog, progress
from forgetting_common.seeding import make_generator
from forgetting_common.stopping import DeferredStop
from forgetting_common.trackers import COMPACT_FILE, TrackerSet, build_trackers, check_data_parallel

from example_forgetting import checkpoint as ckpt
from example_forgetting import data as D
from example_forgetting import parallel
from example_forgetting.cli import CifarConfig, Config, MnistConfig, validate
from example_forgetting.inputs import BatchInputs
from example_forgetting.models import MnistNet, build_cifar_model
from example_forgetting.naming import BEST_ACC_SUFFIX, CHANGED_LABELS_SUFFIX, STATS_SUFFIX
from example_forgetting.order import load_sorting
from example_forgetting.stats import StatsRecorder

#: The prefix of the --track values in metrics.jsonl and TensorBoard (track/forgetting_events ...).
TRACK_PREFIX = "track/"

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


@dataclass
class TrainingSet:
    """What removal and noise left to train on (position space), and the test split."""

    train_indx: np.ndarray  # original ids
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64, after label noise
    changed: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    test: D.Split


def _sorting_path(input_dir: str, name: str) -> Path:
    base = Path(input_dir) / name
    with_suffix = Path(str(base) + ".pkl")
    if with_suffix.is_file():
        return with_suffix
    if base.is_file():
        return base
    raise UserError(f"sorting file not found: looked for {with_suffix} and {base} (set --input_dir / --sorting_file)")


def training_set(config: Config, rng: np.random.RandomState, verbose: bool = True) -> TrainingSet:
    """Load the data and draw the removal and the noise, from ``rng`` in the original's order."""
    ordered, sorting_path = None, None
    if config.sorting_file != "none":
        sorting_path = _sorting_path(config.input_dir, config.sorting_file)
        ordered, _ = load_sorting(sorting_path)
    train, test = D.load_splits(config.dataset, config.data_source, D.data_root(config.data_root),
                                config.train_limit, config.test_limit, download=not config.no_download)
    if ordered is not None:
        D.check_sorting_ids(ordered, len(train), str(sorting_path))
    subsample = config.remove_subsample if isinstance(config, CifarConfig) else 0
    train_indx = D.select_training_indices(len(train), rng, ordered, config.remove_n, config.keep_lowest_n, subsample)
    full = len(train_indx) == len(train) and np.array_equal(train_indx, np.arange(len(train)))
    images = train.images.numpy() if full else train.images.numpy()[train_indx]  # no copy of the whole set
    labels = train.labels.numpy()[train_indx].astype(np.int64)
    if isinstance(config, CifarConfig) and config.noise_percent_pixels:
        images = D.add_pixel_noise(images, config.noise_percent_pixels, config.noise_std_pixels, rng,
                                   mean=config.pixel_noise_mean, clip=config.pixel_noise_clip)
    changed = None
    if config.noise_percent_labels:
        labels, positions, old, new = D.add_label_noise(labels, config.noise_percent_labels, rng)
        changed = (train_indx[positions], old, new)
        if verbose:
            print(f"flipping {len(positions)} labels")
    return TrainingSet(train_indx, images, labels, changed, test)


def model_and_optimizer(config: Config) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    num_classes = D.NUM_CLASSES[config.dataset]
    if isinstance(config, MnistConfig):
        model = MnistNet(dropout=not config.no_dropout, num_classes=num_classes)
        return model, torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    model = build_cifar_model(config.model, num_classes)
    if config.optimizer == "adam":
        return model, torch.optim.Adam(model.parameters(), lr=0.001)
    return model, torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9, nesterov=True,
                                  weight_decay=5e-4)


def train(config: Config) -> RunResult:
    """Train and record one run of ``run_mnist.py`` or ``run_cifar.py``.

    Under ``torchrun --nproc_per_node N`` the same run is data-parallel (see "Several GPUs" in
    the README): every rank draws the same data, permutation and augmentation, takes its share
    of each global minibatch, and rank 0 alone writes; a backend error (another rank died) is
    one line.
    """
    validate(config)
    device = torch.device("cpu") if config.no_cuda else resolve_device(config.device)
    dist = distributed.init(device)
    with distributed.collective_failures(dist):
        result = _train(config, dist)
    distributed.shutdown()  # not on failure: the process exits, torchrun cleans up
    return result


def _train(config: Config, dist: Dist) -> RunResult:
    name = config.save_fname
    out_dir = Path(config.output_dir)
    stats_path = out_dir / (name + STATS_SUFFIX)
    run_dir = out_dir / "runs" / name
    ckpt_path = run_dir / ckpt.CHECKPOINT_NAME
    parallel.say(dist, f"output folder: {out_dir} (run {name})", flush=True)
    check_data_parallel(config.track, dist.world_size, dist.is_main)  # before anything is written
    resumed = parallel.prepare_output(config, stats_path, run_dir, dist)
    device = dist.device
    is_cifar = isinstance(config, CifarConfig)
    main = dist.is_main

    # Seeding in the original's order: torch (model init, dropout), then NumPy (data stream).
    torch.manual_seed(config.seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(config.seed)
    rng = np.random.RandomState(config.seed % 2**32)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    permutation = None
    if config.dataset == "permuted_mnist":
        # Default: the first draw of torch's global RNG right after seeding, as in the original.
        seed = config.permutation_seed
        permutation = torch.randperm(28 * 28) if seed is None else pixel_permutation(seed, 28 * 28)

    with parallel.rank0_first(dist):
        data = training_set(config, rng, verbose=dist.is_main)
    labels = data.labels
    parallel.say(dist, f"Training on {len(labels)} examples")
    model, optimizer = model_and_optimizer(config)
    model = model.to(device)
    # --track: built on the starting weights (init_distance measures from them); reads only.
    # Indices are training positions; ids map them to the full training set (runs can be matched).
    trackers = build_trackers(config.track, n_examples=len(labels), model=model, device=device, ids=data.train_indx)

    mean, std = (D.CIFAR_MEAN, D.CIFAR_STD) if is_cifar else (D.MNIST_MEAN, D.MNIST_STD)
    y_train = torch.from_numpy(labels).to(device)
    x_test = data.test.images.to(device)  # uint8, normalised per batch (the same values, a quarter of the memory)
    y_test = data.test.labels.to(device)

    def test_inputs(x: torch.Tensor) -> torch.Tensor:
        x = normalize(x, mean, std)
        return x if permutation is None else permute_pixels(x, permutation)

    aug_gen = make_generator(config.seed, "augment")
    batch_inputs = BatchInputs(config, data.images, device, permutation, aug_gen)

    run_config = config.to_dict()
    run_config.pop("resume", None)  # an action, not configuration: a resumed run's config.json is the same
    run_config.update(save_fname=name, train_size=len(labels), device_resolved=str(device))
    if dist.enabled:
        run_config["world_size"] = dist.world_size
    fingerprint = ckpt.data_fingerprint(data.train_indx, labels, data.images)
    recorder = StatsRecorder(data.train_indx, config.epochs, device)
    n = len(labels)
    batch_size = config.batch_size
    n_batches = max(1, (n + batch_size - 1) // batch_size)
    best_acc, start_epoch, start_batch, seconds_before = 0.0, 0, 0, 0.0
    perm = None
    loss_sum = torch.zeros((), device=device)
    if resumed is not None:
        ckpt.check_compatible(resumed, run_config, ckpt_path)
        ckpt.check_same_data(resumed, fingerprint, ckpt_path)
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        recorder.load_state_dict(resumed["recorder"])
        trackers.load_state_dict(resumed.get("trackers", {}))
        ckpt.restore_random_states(resumed["random"], rng, aug_gen)
        best_acc, seconds_before = float(resumed["best_acc"]), float(resumed["train_seconds"])
        start_epoch, start_batch = int(resumed["epoch"]), int(resumed["batch"])
        if start_batch:
            perm = resumed["perm"].numpy()
            # the sum over ranks was saved: one rank carries it on
            loss_sum = resumed["loss_sum"].to(device) if main else torch.zeros((), device=device)
        if main:
            print(f"resuming from {ckpt_path}: epoch {start_epoch}, minibatch {start_batch}", file=sys.stderr)
    net = distributed.wrap_model(model, dist, sync_bn=config.sync_bn)
    model = distributed.unwrap(net)  # state_dict keys and evaluation as in one process

    log = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log = RunLog.create(
            run_dir, run_config, overwrite=config.overwrite, resume=config.resume,
            resume_state=(resumed["runlog"] if resumed is not None else EMPTY_STATE),
            tensorboard=not config.no_tensorboard, quiet=config.quiet,
            exists_hint="pass --overwrite to replace it, or --resume to continue it",
        )
        if data.changed is not None:
            atomic_write_text(out_dir / (name + CHANGED_LABELS_SUFFIX), D.changed_labels_text(*data.changed))

    result = RunResult(name, out_dir, data.train_indx, labels, recorder, recorder.test_acc, data.changed)
    start = time.time()

    def summed(t: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(t.detach().clone(), dist) if dist.enabled else t

    def save_checkpoint(epoch: int, batch: int) -> None:
        # every rank (collectives), then rank 0 writes
        if batch:
            recorder.merge_ranks(epoch, dist)
        saved_loss = summed(loss_sum)
        if not main:
            return
        with ckpt.naming(run_dir):
            ckpt.save(
                ckpt_path, config=ckpt.comparable_config(run_config), epoch=epoch, batch=batch,
                perm=None if not batch else torch.from_numpy(perm.copy()), loss_sum=saved_loss.detach().cpu(),
                model=model.state_dict(), optimizer=optimizer.state_dict(), recorder=recorder.state_dict(),
                trackers=trackers.state_dict(),
                best_acc=best_acc, random=ckpt.random_states(rng, aug_gen), data=fingerprint,
                runlog=log.checkpoint_state(), train_seconds=seconds_before + time.time() - start,
            )

    def stop(stopper: DeferredStop, epoch: int, batch: int) -> None:
        if main:
            _stopped(ckpt_path, epoch, batch)
        stopper.stop()
        raise Terminated()  # another rank got the signal: this one stops with it

    try:
        with DeferredStop(unit="minibatch") as stopper:
            for epoch in range(start_epoch, config.epochs):
                t0 = time.time()
                if is_cifar and config.optimizer == "sgd":
                    for group in optimizer.param_groups:
                        group["lr"] = cifar_lr(config.learning_rate, epoch, config.fix_lr_offbyone)
                lr_now = optimizer.param_groups[0]["lr"]
                net.train()
                first = start_batch if epoch == start_epoch else 0
                parallel.reseed_rank_dropout(config.seed, dist, epoch, first)
                if not first:
                    perm = rng.permutation(np.arange(n))
                    loss_sum = torch.zeros((), device=device)
                perm_t = torch.from_numpy(perm).to(device)
                recorder.set_first_order(perm, min(batch_size, n))
                bar = (log.progress if main else progress)(range(first, n_batches), desc=f"epoch {epoch}",
                                                           leave=False, initial=first, total=n_batches,
                                                           **({} if main else {"quiet": True}))
                for b in bar:
                    pos = perm_t[b * batch_size : (b + 1) * batch_size]
                    if dist.enabled:
                        share = distributed.rank_share(len(pos), dist)
                        x, local = batch_inputs.share(pos, share), pos[share]
                    else:
                        x, local = batch_inputs(pos), pos
                    y = y_train[local]
                    optimizer.zero_grad(set_to_none=True)
                    outputs = net(x)
                    losses = F.cross_entropy(outputs, y, reduction="none")
                    recorder.record(epoch, local, outputs, y, losses)
                    if dist.enabled:
                        # DDP averages over ranks: sum / global size x world gives the global mean's
                        # gradient, for unequal (even empty) shares too
                        loss = losses.sum() * (dist.world_size / len(pos))
                        loss_sum += loss.detach() / dist.world_size
                    else:
                        loss = losses.mean()
                        loss_sum += loss.detach()
                    loss.backward()
                    optimizer.step()
                    if trackers:  # after the step (plasticity reads the updated network); every rank's share
                        trackers.on_batch(*distributed.gather_batch(local, outputs, y, dist), model=model, inputs=x)
                    if not config.quiet and b % 50 == 49 and not bar.disable:
                        bar.set_postfix(loss=f"{loss.item():.4f}")
                    if distributed.any_rank(stopper.requested, dist) and b + 1 < n_batches:
                        save_checkpoint(epoch, b + 1)
                        stop(stopper, epoch, b + 1)
                recorder.merge_ranks(epoch, dist)
                distributed.sync_buffers(net, dist)
                test_acc, test_loss = evaluate(model, x_test, y_test, batch_size=config.test_batch_size,
                                              prepare=test_inputs, dist=dist, trackers=trackers)
                tracked = trackers.end_epoch(epoch) if trackers else {}
                running = recorder.end_epoch(test_acc)
                train_loss = float(summed(loss_sum)) / n_batches
                if main:
                    # Outputs after every epoch, so an interrupted run leaves valid files.
                    with ckpt.naming(out_dir):
                        atomic_pickle_dict(recorder.items(), stats_path)  # never the whole dict: about 1 GB at epoch 200
                        atomic_write_text(out_dir / (name + BEST_ACC_SUFFIX), recorder.best_acc_text())
                        if is_cifar and test_acc > best_acc:
                            state = {"acc": test_acc, "epoch": epoch}
                            if config.save_weights:
                                state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                            atomic_torch_save(state, out_dir / "checkpoint" / config.dataset / (name + ".t7"))
                if is_cifar and test_acc > best_acc:
                    best_acc = test_acc
                epoch_time = time.time() - t0
                # Wall-clock time is the row's `time` column only, so that a resumed run's rows
                # equal an uninterrupted run's.
                if main:
                    log.log({"train/acc": running[-1], "train/loss": train_loss, "train/lr": lr_now,
                             "test/acc": test_acc, "test/loss": test_loss,
                             **{f"stats/{k}": v for k, v in recorder.epoch_summary().items()},
                             **{TRACK_PREFIX + k: v for k, v in tracked.items()}}, step=epoch)
                parallel.say(
                    dist,
                    f"| Epoch {epoch}/{config.epochs}  train loss {train_loss:.4f} acc {running[-1]:.3f}%  "
                    f"| Validation loss {test_loss:.4f} Acc@1 {test_acc:.2f}%  ({epoch_time:.1f}s)",
                    flush=True,
                )
                if epoch + 1 < config.epochs:
                    save_checkpoint(epoch + 1, 0)
                    if distributed.any_rank(stopper.requested, dist):
                        stop(stopper, epoch + 1, 0)
    finally:
        if log is not None:
            log.close()
    result.timings["train_s"] = seconds_before + time.time() - start
    if main:
        if trackers:
            trackers.save_compact(run_dir / COMPACT_FILE)
        log.write_json("result.json", {
            "save_fname": name, "train_size": n, "test_acc": recorder.test_acc,
            "best_train_acc": max(recorder.train_running) if recorder.train_running else None,
            "best_test_acc": max(recorder.test_acc) if recorder.test_acc else None,
            "train_seconds": result.timings["train_s"],
        })
        ckpt_path.unlink(missing_ok=True)  # finished: nothing to resume
    distributed.barrier(dist)  # nobody leaves before the outputs are complete
    return result


def _stopped(path: Path, epoch: int, batch: int) -> None:
    print(f"stopped at epoch {epoch}, minibatch {batch}; checkpoint {path}; run the same command with "
          "--resume to continue", file=sys.stderr, flush=True)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 32,
             prepare=None, dist: Dist | None = None, trackers: TrackerSet | None = None) -> tuple[float, float]:
    """Test accuracy (%) and mean loss in eval mode, over the whole set in order; ``prepare``
    turns a slice of ``x`` into network inputs (normalisation of uint8 images). Under several
    ranks each takes a contiguous shard and the sums are reduced (``model``: the unwrapped one,
    so the ranks' different numbers of batches need no collective). ``trackers`` (``--track``)
    are given the whole test set's logits once (every rank's shard, gathered)."""
    model.eval()
    shard = range(0, len(y)) if dist is None else distributed.shard_indices(len(y), dist)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    outs: list[torch.Tensor] = []
    for begin in range(shard.start, shard.stop, batch_size):
        end = min(begin + batch_size, shard.stop)
        batch = x[begin:end]
        out = model(batch if prepare is None else prepare(batch))
        target = y[begin:end]
        correct += (torch.max(out, 1)[1] == target).sum()
        loss += F.cross_entropy(out, target, reduction="sum").double()
        if trackers:
            outs.append(out)
    if trackers and len(y):
        # a rank whose shard is empty (fewer test images than ranks) still joins the gather
        logits = torch.cat(outs) if outs else model(x[:1] if prepare is None else prepare(x[:1]))[:0]
        index = torch.arange(shard.start, shard.stop, device=x.device)
        trackers.on_eval(*distributed.gather_batch(index, logits, y[shard.start:shard.stop], dist)[1:], model=model)
    if dist is not None and dist.enabled:
        distributed.all_reduce_sum(correct, dist)
        distributed.all_reduce_sum(loss, dist)
    total = max(1, len(y))
    return 100.0 * int(correct) / float(total), float(loss) / total
