"""The small real-data reproduction: LLF vs KE vs the long baseline on a few-shot real image set.

    python -m llf_ke.reproduce --out runs/repro [--source digits] [--generations 6] [--epochs 30]
        [--image_size 16] [--seeds 0 1] [--arms llf ke long]

Exports the data (``python -m llf_ke.prepare_folder``) into ``OUT/data`` if absent, then runs
``train_KE_cls.py`` in-process once per arm and seed with the seed lines' flags (Split_ResNet18,
weight decay 1e-4, the default lr 0.256, batch 32, cosine schedule, label smoothing 0.1):

* ``llf``:  ``--reset_layer_name layer4 --num_generations G --epochs E``
* ``ke``:   ``--split_rate 0.8 --split_mode kels --num_generations G --epochs E``
* ``long``: ``--reset_layer_name layer4 --num_generations 1 --epochs G*E --eval_intermediate_tst E``

and writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/test_acc_per_generation.png``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from forgetting_common.atomic import atomic_write_json, atomic_write_text
from forgetting_common.cli import OneLineErrorParser
from forgetting_common.errors import run_main

from llf_ke.plot import plot_runs, test_curve


def arm_argv(arm: str, data: Path, ckpt: Path, generations: int, epochs: int, image_size: int, seed: int,
             device: str, extra: list[str]) -> list[str]:
    common = ["--weight_decay", "0.0001", "--arch", "Split_ResNet18", "--set", "Folder", "--data", str(data),
              "--no_wandb", "--device", device, "--image_size", str(image_size), "-t", "0", "--no_flip",
              "--checkpoints_dir", str(ckpt), "--init_seed", str(seed), "--quiet", *extra]
    if arm == "llf":
        return ["--epochs", str(epochs), "--num_generations", str(generations), "--name", f"repro_llf_s{seed}",
                "--reset_layer_name", "layer4", *common]
    if arm == "ke":
        return ["--epochs", str(epochs), "--num_generations", str(generations), "--name", f"repro_ke_s{seed}",
                "--split_rate", "0.8", "--split_mode", "kels", *common]
    if arm == "long":
        return ["--epochs", str(epochs * generations), "--num_generations", "1", "--name", f"repro_long_s{seed}",
                "--reset_layer_name", "layer4", "--eval_intermediate_tst", str(epochs), *common]
    raise ValueError(arm)


def reproduce(out: str | Path, source: str = "digits", generations: int = 6, epochs: int = 30,
              image_size: int = 16, seeds: list[int] | None = None, arms: list[str] | None = None,
              device: str = "cpu", train_per_class: int = 15, val_per_class: int = 30,
              test_per_class: int | None = None, extra: list[str] | None = None) -> dict:
    from llf_ke.config import parse_args
    from llf_ke.prepare_folder import export_cifar10_jpeg, export_digits
    from llf_ke.runner import run

    out = Path(out)
    data = out / "data"
    if not (data / "Folder").is_dir():
        if source == "digits":
            export_digits(data, train_per_class, val_per_class, 0, test_per_class)
        else:
            export_cifar10_jpeg(None, data, train_per_class, val_per_class, test_per_class)
    seeds = seeds or [0]
    arms = arms or ["llf", "ke", "long"]
    results: dict = {"source": source, "generations": generations, "epochs": epochs, "image_size": image_size,
                     "seeds": seeds, "arms": {}}
    dirs: dict[str, list[str]] = {}
    for arm in arms:
        for seed in seeds:
            args = parse_args(arm_argv(arm, data, out / "checkpoints", generations, epochs, image_size, seed,
                                       device, extra or []))
            start = time.time()
            ran = False
            if not (Path(args.exp_dir) / "summary.json").is_file() or \
                    not json.loads((Path(args.exp_dir) / "summary.json").read_text()).get("finished"):
                if (Path(args.exp_dir) / "config.json").exists():
                    args.resume = "auto"
                run(args)
                ran = True
            curve = test_curve(args.exp_dir)
            results["arms"].setdefault(arm, []).append({"seed": seed, "exp_dir": args.exp_dir, "curve": curve,
                                                        "seconds": round(time.time() - start, 1) if ran else None})
            dirs.setdefault(arm.upper() if arm != "long" else "long baseline", []).append(args.exp_dir)
            atomic_write_json(out / "results.json", results)
    plot_runs(dirs, out / "test_acc_per_generation.png", title=f"{source}: test top-1 per generation")
    atomic_write_text(out / "results.md", results_table(results))
    return results


def results_table(results: dict) -> str:
    """Markdown: mean test top-1 per (equivalent) generation and arm."""
    arms = results["arms"]
    xs = sorted({x for runs in arms.values() for r in runs for x, _ in r["curve"]})
    lines = ["| arm | " + " | ".join(f"gen {x:g}" for x in xs) + " |", "|---" * (len(xs) + 1) + "|"]
    for arm, runs in arms.items():
        cells = []
        for x in xs:
            vals = [dict(r["curve"]).get(x) for r in runs]
            vals = [v for v in vals if v is not None]
            cells.append(f"{sum(vals) / len(vals):.2f}" if vals else "")
        lines.append(f"| {arm} (seeds {','.join(str(r['seed']) for r in runs)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = OneLineErrorParser(prog="llf_ke.reproduce", description="LLF vs KE vs long baseline on a few-shot real set")
    p.add_argument("--out", required=True)
    p.add_argument("--source", choices=["digits", "cifar10-jpeg"], default="digits")
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--image_size", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--arms", nargs="+", choices=["llf", "ke", "long"], default=["llf", "ke", "long"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train_per_class", type=int, default=15)
    p.add_argument("--val_per_class", type=int, default=30)
    p.add_argument("--test_per_class", type=int, default=None)
    a = p.parse_args(argv)
    res = reproduce(a.out, a.source, a.generations, a.epochs, a.image_size, a.seeds, a.arms, a.device,
                    a.train_per_class, a.val_per_class, a.test_per_class)
    print(results_table(res), end="")


if __name__ == "__main__":
    run_main(lambda: main(sys.argv[1:]), prog="llf_ke.reproduce")
