"""Test accuracy per generation (LLF, KE, the long baseline) from run folders, as a PNG.

    python -m llf_ke.plot --run LLF=<exp_dir> --run KE=<exp_dir> --run long=<exp_dir> --out fig.png

A run with several generations gives its end-of-generation test top-1; a single-generation
run with ``--eval_intermediate_tst`` gives its intermediate tests at the equivalent generations.
"""

from __future__ import annotations

import sys
from pathlib import Path

from forgetting_common.cli import OneLineErrorParser
from forgetting_common.errors import UserError, run_main
from forgetting_common.runlog import read_metrics


def test_curve(exp_dir: str | Path) -> list[tuple[float, float]]:
    """(generation or equivalent generation, test top-1) points of one run folder."""
    path = Path(exp_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{exp_dir}: no metrics.jsonl (not a train_KE_cls.py run folder)")
    points = []
    for r in read_metrics(path):
        if "test/top1" in r:
            top1 = r["test/top1"]
        elif r.get("split") == "test":  # run folders written before one row per epoch
            top1 = r["top1"]
        else:
            continue
        x = r["equivalent_generation"] if "equivalent_generation" in r else r["generation"]
        points.append((float(x), float(top1)))
    return points


def plot_runs(runs: dict[str, list[str | Path]], out: str | Path, title: str = "") -> Path:
    """One line per label; several folders under one label are averaged point by point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from forgetting_common.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, dirs in runs.items():
        curves = [dict(test_curve(d)) for d in dirs]
        xs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        ys = [sum(c[x] for c in curves) / len(curves) for x in xs]
        ax.plot(xs, ys, marker="o", label=f"{label} (n={len(dirs)})")
    ax.set_xlabel("generation (long baseline: equivalent generation)")
    ax.set_ylabel("test top-1 (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    p = OneLineErrorParser(prog="llf_ke.plot", description="plot test top-1 per generation")
    p.add_argument("--run", action="append", required=True, help="LABEL=EXP_DIR (repeat; same label = averaged)")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    runs: dict[str, list[str]] = {}
    for item in a.run:
        if "=" not in item:
            raise UserError(f"--run {item!r}: expected LABEL=EXP_DIR")
        label, path = item.split("=", 1)
        runs.setdefault(label, []).append(path)
    print(plot_runs(runs, a.out, a.title))


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="llf_ke.plot")
