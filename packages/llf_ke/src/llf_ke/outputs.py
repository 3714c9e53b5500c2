"""The original's run-folder files, written safely: the CSV, ``train_log.txt``, the
per-generation ``gen_<g>/<random>/<NNNN>_g<gpu>/`` folders with ``settings.txt`` and the
``--save_model`` state files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgetting_common.atomic import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    import torch

    from llf_ke.cli import Config

CSV_HEADER = ("Date Finished, Name, Split Rate, Bias Split Rate, Current Val Top 1, Current Val Top 5, "
              "Best Val Top 1, Best Val Top 5, Current Tst Top 1, Current Tst Top 5, Best Tst Top 1, "
              "Best Tst Top 5, Best Trn Top 1, Best Trn Top 5")
CSV_NUMBERS = ("curr_val_top1", "curr_val_top5", "best_val_top1", "best_val_top5", "curr_tst_top1",
               "curr_tst_top5", "best_tst_top1", "best_tst_top5", "best_trn_top1", "best_trn_top5")


def csv_row(name: str, split_rate: float, bias_split_rate: float, numbers: dict[str, float],
            when: float | None = None) -> str:
    """One CSV row: date, run name (trailing slash kept), rates, then ten numbers with 2 decimals."""
    date = time.strftime("%m-%d-%y_%H:%M:%S", time.localtime(when))
    values = [f"{float(numbers.get(k) or 0.0):.2f}" for k in CSV_NUMBERS]
    return ", ".join([date, name, str(split_rate), str(bias_split_rate), *values])


def append_csv_row(path: Path, row: str) -> None:
    """Append a row (with the header if the file is new); the file is rewritten atomically."""
    old = path.read_text(encoding="utf-8") if path.exists() else CSV_HEADER + "\n"
    atomic_write_text(path, old + row + "\n")


def read_csv(path: Path) -> list[dict[str, str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    header = lines[0].split(", ")
    return [dict(zip(header, ln.split(", "))) for ln in lines[1:]]


def setup_logger(log_path: Path, append: bool) -> logging.Logger:
    """Logger to stderr and to ``log_path`` (rewritten, or appended to when resuming)."""
    logger = logging.getLogger("llf_ke")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(log_path, mode="a" if append else "w", encoding="utf-8")
    file_handler.setFormatter(fmt)
    file_handler.setLevel(logging.DEBUG)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream.setLevel(logging.INFO)
    logger.addHandler(file_handler)
    logger.addHandler(stream)
    return logger


def silent_logger() -> logging.Logger:
    """The logger of a rank other than 0 under torchrun: rank 0 alone writes the log."""
    logger = logging.getLogger("llf_ke")
    close_logger()
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


def close_logger() -> None:
    logger = logging.getLogger("llf_ke")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)


def new_run_dir(root: Path, generation: int, gpu: int) -> Path:
    """``<root>/gen_<g>/<random 0..10^6>/<NNNN>_g<gpu>/``, named as the original named them
    (the random folder draws from Python's global RNG, as the original did)."""
    base = root / f"gen_{generation}" / str(random.randint(0, 1000000))
    base.mkdir(parents=True, exist_ok=True)
    index = 0
    while (base / f"{index:04d}_g{gpu}").exists():
        index += 1
    path = base / f"{index:04d}_g{gpu}"
    path.mkdir()
    return path


def write_settings(run_dir: Path, cfg: Config) -> None:
    """``settings.txt``: the configuration printed as the original printed its argparse Namespace."""
    atomic_write_text(run_dir / "settings.txt", str(argparse.Namespace(**cfg.as_dict())) + "\n")


def save_model_files(run_dir: Path, state: dict[str, Any], *, epoch: int, epochs: int, save_every: int,
                     is_best: bool) -> None:
    """``--save_model``: ``epoch_<e>.state`` at the last epoch (and every ``--save_every``),
    ``model_best.pth`` on a new best validation top-1."""
    ckpt = run_dir / "checkpoints"
    written = None
    if epoch == epochs - 1 or (save_every > 0 and (epoch + 1) % save_every == 0):
        written = atomic_torch_save(state, ckpt / f"epoch_{epoch}.state")
    if is_best:
        if written is not None:  # the same bytes: link instead of serialising twice
            tmp = ckpt / ".model_best.pth.link"
            tmp.unlink(missing_ok=True)
            os.link(written, tmp)
            os.replace(tmp, ckpt / "model_best.pth")
        else:
            atomic_torch_save(state, ckpt / "model_best.pth")


def log_header(log: logging.Logger, cfg: Config, config: dict, restart: bool, splits, loaders: dict, model: torch.nn.Module,
               dist, llf_percent: float | None, pretrained_note: str | None) -> None:
    """The log's first lines of a new (or restarted) run: folder, configuration, data, processes, parameters."""
    log.info("output folder %s: %s", cfg.exp_dir, "restarting (no checkpoint to resume)" if restart else "new run")
    log.info("config: %s", json.dumps(config, sort_keys=True))
    log.info("device %s; %d train / %d val / %s test images, %d classes", dist.device, len(splits.train),
             len(splits.val), len(splits.test) if loaders["test"] is not None else "no", cfg.num_cls)
    if dist.enabled:
        log.info("%d processes (torchrun), each a share of every batch of %d%s", dist.world_size,
                 cfg.batch_size, "; BatchNorm over the global batch (--sync_bn)" if cfg.sync_bn else "")
    log.info("parameters (Split-Mask included): %d", sum(p.numel() for p in model.parameters()))
    if llf_percent is not None:
        log.info("RESETTING ENTIRE LAYERS from %r%s", cfg.reset_layer_name, " (reverse)" if cfg.reverse_reset else "")
        log.info("resetting %.3f percent of parameters", llf_percent)
    if pretrained_note is not None:
        log.info("%s", pretrained_note)
