"""The plotting/summary command over finished run folders (``plot_mixed_groups.py``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from forgetting_common.cli import OneLineErrorParser, add_print_config_flag, maybe_print_config
from forgetting_common.errors import UserError
from forgetting_common.runlog import read_metrics

from targeted_forgetting.plotting import plot_runs, summarize


def clean(obj):
    """NaN → None, so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    return obj


def make_plot_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="plot_mixed_groups.py",
                           description="Per-group accuracy before/after forgetting, averaged over runs.")
    p.add_argument("runs", nargs="+", help="run folders written by mixed_group_training.py")
    p.add_argument("--out", required=True, help="PNG to write (refuses to overwrite without --force)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--title", default="")
    p.add_argument("--from_iter", type=float, default=None,
                   help="summary over probes after this iteration (default: the second half)")
    add_print_config_flag(p)
    return p


def load_run(folder: str) -> tuple[list[dict], dict]:
    path = Path(folder)
    if not (path / "metrics.jsonl").is_file() or not (path / "config.json").is_file():
        raise UserError(f"{folder} is not a run folder (expected config.json and metrics.jsonl in it)")
    records = [r for r in read_metrics(path) if "Iter" in r]
    if not records:
        raise UserError(f"{folder}/metrics.jsonl holds no probe records")
    config = json.loads((path / "config.json").read_text())
    return records, config


def plot_main(argv: list[str] | None = None) -> dict:
    args = make_plot_parser().parse_args(argv)
    if maybe_print_config(args):
        return {}
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to overwrite it or choose another --out")
    loaded = [load_run(folder) for folder in args.runs]
    margins = {bool(cfg.get("margin_groups")) for _, cfg in loaded}
    if len(margins) > 1:
        raise UserError("the runs mix --margin_groups and label-noise groups; plot them separately")
    runs = [records for records, _ in loaded]
    plot_runs(runs, out, margin_groups=margins.pop(), title=args.title)
    result = {}
    for folder, records in zip(args.runs, runs):
        start = args.from_iter if args.from_iter is not None else records[-1]["Iter"] / 2
        result[folder] = summarize(records, start)
    keys = [k for k in next(iter(result.values())) if k.startswith("group") or k == "drop_gap"]
    mean = {k: sum(r[k] for r in result.values()) / len(result) for k in keys}
    result["mean"] = mean
    print(json.dumps(clean(result), indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return result
