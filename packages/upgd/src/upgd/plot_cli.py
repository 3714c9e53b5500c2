"""Command line of ``core/plot/plot_stats.py``."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from forgetting_common.cli import (
    OneLineErrorParser,
    add_print_config_flag,
    add_quiet_flag,
    config_dict,
    positive_int,
)
from forgetting_common.errors import run_main

from upgd.metrics import format_table, results_table
from upgd.plots import PANELS, plot_results


def build_parser() -> OneLineErrorParser:
    p = OneLineErrorParser(prog="plot_stats.py", description=__doc__)
    p.add_argument("paths", nargs="+", help="result JSON files or folders (searched recursively)")
    p.add_argument("--out", default="figures", help="folder for the figures (default: figures)")
    p.add_argument("--format", default="png", choices=("png", "pdf", "svg"))
    p.add_argument("--stats", nargs="*", default=None, choices=[k for k, _ in PANELS],
                   help="which panels (default: all three)")
    p.add_argument("--smooth", type=positive_int, default=1, help="moving average over this many tasks")
    p.add_argument("--table", action="store_true", help="also print the student notebook's metrics table")
    p.add_argument("--table_json", default=None, help="write the table rows to this JSON file")
    p.add_argument("--no_plot", action="store_true", help="only the table")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
    add_print_config_flag(p)
    add_quiet_flag(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return 0
    if args.table or args.table_json:
        rows = results_table(args.paths)
        if args.table:
            print(format_table(rows))
        if args.table_json:
            from forgetting_common.atomic import atomic_write_json

            atomic_write_json(args.table_json, rows)
    if not args.no_plot:
        for path in plot_results(args.paths, args.out, args.stats, args.format, args.overwrite, args.smooth):
            if not args.quiet:
                print(f"wrote {path}", file=sys.stderr)
    return 0


def entry() -> None:
    run_main(lambda: main(sys.argv[1:]), prog="plot_stats.py")
