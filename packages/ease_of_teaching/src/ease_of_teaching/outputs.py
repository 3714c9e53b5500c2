"""Small helpers shared by the scripts: atomic array files, W&B run names, thread settings."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from forgetting_common.atomic import atomic_write_bytes
from forgetting_common.errors import UserError
from forgetting_common.runlog import wandb_available


def save_npy(path: Path, array: Any, allow_pickle: bool = False) -> Path:
    """``np.save`` through a temporary file and a rename."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return atomic_write_bytes(path, buf.getvalue())


def save_npz(path: Path, **arrays: Any) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def save_h5(path: Path, attrs: dict[str, Any] | None = None, **datasets: Any) -> Path:
    """An HDF5 file with the given datasets and attributes, written beside the target and renamed."""
    import os
    import tempfile

    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            for key, value in datasets.items():
                f.create_dataset(key, data=np.asarray(value))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def group_name(args, group_vars) -> str:
    """The original run name ``var1<val1>_var2<val2>...`` built from ``--group_vars``."""
    return "_".join(f"{var}{getattr(args, var)}" for var in group_vars)


def check_group_vars(args, group_vars) -> None:
    unknown = [v for v in group_vars if not hasattr(args, v)]
    if unknown:
        raise UserError(f"--group_vars names unknown option(s): {', '.join(unknown)}")


def wandb_settings(args, project: str) -> dict | None:
    """W&B as the original: only without ``--no_wandb`` and with ``--group_vars``; skipped
    with a note when wandb is not installed (the run still writes its local outputs)."""
    if args.no_wandb or not args.group_vars:
        return None
    if not wandb_available():
        print("note: wandb is not installed; logging locally only (pass --no_wandb to silence this)",
              file=sys.stderr)
        return None
    return {"project": project, "group": args.fname, "name": group_name(args, args.group_vars)}


def clear_old_tensorboard(folder: Path, overwrite: bool) -> None:
    """With ``--overwrite``, drop the replaced run's TensorBoard events (RunLog.create only
    removes its ``metrics.jsonl``, so old and new curves would otherwise mix)."""
    tb = Path(folder) / "tensorboard"
    if overwrite and (Path(folder) / "config.json").exists() and tb.is_dir():
        for event in tb.glob("events.out.tfevents.*"):
            event.unlink()


def set_threads(device: torch.device, num_threads: int | None) -> None:
    """On the CPU the game's tiny models run fastest on one thread (kernel overhead dominates)."""
    if device.type == "cpu" and num_threads:
        torch.set_num_threads(num_threads)
