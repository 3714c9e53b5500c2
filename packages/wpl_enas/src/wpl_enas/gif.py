"""``generate_gif.py``: the drawings in ``{log_dir}/{model_name}/networks/*.png`` → an animated GIF."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from forgetting_common.cli import OneLineErrorParser, add_common_flags, config_dict
from forgetting_common.errors import UserError

from wpl_enas.plots import make_gif


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog="generate_gif.py", description="GIF of the sampled cells of a run")
    parser.add_argument("--model_name", type=str, default=None, help="run folder under --log_dir")
    parser.add_argument("--max_frame", type=int, default=50)
    parser.add_argument("--output", type=str, default="sampe.gif")
    parser.add_argument("--title", type=str, default="")
    parser.add_argument("--log_dir", type=str, default="logs", help="(new) folder holding the runs")
    add_common_flags(parser, device=False)
    return parser


def main(argv: list[str] | None = None) -> Path | None:
    args = build_parser().parse_args(argv)
    if args.print_config:
        print(json.dumps(config_dict(args), sort_keys=True))
        return None
    if not args.model_name:
        raise UserError("--model_name is required (a run folder under --log_dir, e.g. ptb_2018-02-15_11-20-02)")
    if args.max_frame <= 0:
        raise UserError(f"--max_frame must be positive, got {args.max_frame}")
    print(f"generate_gif.py: drawings of {Path(args.log_dir) / args.model_name} -> {args.output}", file=sys.stderr)
    out = make_gif(Path(args.log_dir) / args.model_name, args.output, args.max_frame, args.title)
    if not args.quiet:
        print(f"wrote {out}", file=sys.stderr)
    logging.getLogger("wpl_enas").info("wrote %s", out)
    return out
