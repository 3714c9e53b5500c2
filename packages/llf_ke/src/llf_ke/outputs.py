"""The original's CSV and log file, written safely."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from forgetting_common.atomic import atomic_write_text

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


def close_logger() -> None:
    logger = logging.getLogger("llf_ke")
    for handler in list(logger.handlers):
        handler.close()
        logger.removeHandler(handler)
