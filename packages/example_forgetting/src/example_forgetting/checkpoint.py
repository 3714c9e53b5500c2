"""Checkpoint and resume for ``run_mnist.py`` / ``run_cifar.py`` (extension flag ``--resume``).

A run writes ``<output_dir>/runs/<save_fname>/checkpoint.pt`` atomically after every epoch,
and, when stopped by Ctrl-C or SIGTERM, at the end of the minibatch in progress. It holds the
model and optimizer, the statistics recorded so far, the epoch's presentation order, every
random state (Python, NumPy and torch globals, the run's NumPy data stream, the augmentation
generator), the training set drawn by removal and noise (to check a resume sees the same
one) and the logs' position (``RunLog.checkpoint_state``). Only tensors and plain values, so it
loads with ``weights_only=True``. ``--resume`` continues from it; the outputs then equal those
of an uninterrupted run bit for bit on CPU. The checkpoint is removed when the run finishes.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from forgetting_common.atomic import atomic_torch_save
from forgetting_common.errors import UserError
from forgetting_common.safeload import load_checkpoint
from forgetting_common.seeding import get_rng_state, set_rng_state

from example_forgetting.cli import RunConfig

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1
# Flags that do not change what a run computes; a resume may differ in them.
NOT_COMPARED = frozenset({"resume", "overwrite", "quiet", "print_config", "device", "no_cuda",
                          "data_root", "device_resolved", "no_download", "world_size"})
# Flags added after checkpoints were already written: such a checkpoint ran with the default.
ADDED_LATER = {"sync_bn": False, "track": None}


def prepare_output(config: RunConfig, stats_path: Path, run_dir: Path) -> dict[str, Any] | None:
    """Decide between a fresh run, a resume and a refusal, before anything is written.

    Returns the checkpoint to resume from, or None to start from the beginning (after removing
    what an earlier attempt left when that is what the flags ask for).
    """
    resume, overwrite = config.resume, config.overwrite
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other; pass one of them")
    ckpt_path = run_dir / CHECKPOINT_NAME
    out_dir = stats_path.parent
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output_dir {out_dir} exists and is not a folder")
    _remove_torn_writes(out_dir, run_dir, config.dataset)
    if resume:
        if ckpt_path.exists():
            return load_checkpoint(ckpt_path, what="checkpoint")
        if (run_dir / "result.json").exists():
            raise UserError(f"{run_dir} holds a finished run (result.json) and nothing to resume; "
                            "pass --overwrite to train it again")
        print(f"note: no checkpoint in {run_dir}; starting this run from the beginning", file=sys.stderr)
    elif not overwrite:
        hint = "pass --overwrite to replace it or choose another --output_dir"
        if ckpt_path.exists():
            raise UserError(f"{run_dir} holds an interrupted run ({CHECKPOINT_NAME}); pass --resume to "
                            f"continue it, or {hint}")
        if stats_path.exists():
            raise UserError(f"{stats_path} already exists (a finished or interrupted run); {hint}")
        if (run_dir / "config.json").exists():
            raise UserError(f"{run_dir} holds an earlier run of this configuration; {hint}")
    # Starting from the beginning: an earlier attempt's checkpoint or result must not survive it.
    ckpt_path.unlink(missing_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)
    return None


def _remove_torn_writes(out_dir: Path, run_dir: Path, dataset: str) -> None:
    """Temporary files of this run's atomic writes that a SIGKILL left behind (never the
    finished files, never other runs' files)."""
    name = glob.escape(run_dir.name)
    patterns = [(out_dir, f".{name}_*.tmp"), (run_dir, ".*.tmp"),
                (out_dir / "checkpoint" / dataset, f".{name}.t7.*.tmp")]
    for folder, pattern in patterns:
        if folder.is_dir():
            for leftover in folder.glob(pattern):
                leftover.unlink(missing_ok=True)


def comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in NOT_COMPARED}


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    """The checkpoint must come from this script, format and configuration."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a checkpoint of this script (format {FORMAT})")
    saved, now = ckpt["config"], comparable_config(config)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key, ADDED_LATER.get(key)) != now.get(key, ADDED_LATER.get(key)):
            raise UserError(
                f"checkpoint {path} was written with {key}={saved.get(key)!r}, this command has "
                f"{key}={now.get(key)!r}; resume with the original flags or pass --overwrite"
            )


def data_fingerprint(train_indx: np.ndarray, labels: np.ndarray, images: np.ndarray) -> dict[str, Any]:
    """What removal and noise drew: the kept ids and labels, and a digest of the pixels."""
    return {
        "train_indx": torch.from_numpy(np.asarray(train_indx, dtype=np.int64).copy()),
        "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()),
        "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
    }


def check_same_data(ckpt: dict[str, Any], fingerprint: dict[str, Any], path: Path) -> None:
    saved = ckpt["data"]
    same = (torch.equal(saved["train_indx"], fingerprint["train_indx"])
            and torch.equal(saved["labels"], fingerprint["labels"])
            and saved["images_sha256"] == fingerprint["images_sha256"])
    if not same:
        raise UserError(
            f"checkpoint {path} was trained on another training set than this command draws (the data, "
            "the sorting file or the noise changed); resume with the same inputs or pass --overwrite"
        )


def numpy_stream_state(rng: np.random.RandomState) -> tuple:
    kind, keys, pos, has_gauss, cached = rng.get_state()
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def set_numpy_stream_state(rng: np.random.RandomState, state: tuple) -> None:
    kind, keys, pos, has_gauss, cached = state
    rng.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))


def save(path: Path, **parts: Any) -> None:
    """Write a checkpoint atomically (``parts``: what the training loop saves, see the module doc)."""
    atomic_torch_save({"format": FORMAT, **parts}, path)


def random_states(rng: np.random.RandomState, aug_gen: torch.Generator) -> dict[str, Any]:
    return {"global": get_rng_state(), "numpy_stream": numpy_stream_state(rng), "augment": aug_gen.get_state()}


def restore_random_states(state: dict[str, Any], rng: np.random.RandomState, aug_gen: torch.Generator) -> None:
    set_rng_state(state["global"])
    set_numpy_stream_state(rng, state["numpy_stream"])
    aug_gen.set_state(state["augment"])


@contextlib.contextmanager
def naming(folder: Path) -> Iterator[None]:
    """A full disk reports ``ENOSPC`` without a file name; say which folder was being written."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(folder)) from err
        raise
