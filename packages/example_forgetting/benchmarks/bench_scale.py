"""Speed and peak memory at the paper's scale, each beside the straightforward baseline, in one run.

Cases (each in its own process, its peak memory the process's max RSS as the kernel reports it
to the parent through ``wait4``, from start to exit):

* ``mnist_ours``: ``run_mnist.py --dataset mnist --no_dropout`` on the full MNIST (60,000 / 10,000),
  the seed command as the README gives it (200 epochs); stopped with SIGTERM once its first
  epoch (training, statistics, evaluation, the statistics pickle) is written.
* ``mnist_baseline``: one epoch of the original's way on the same data: one dataset item at a
  time through torchvision's ``ToTensor`` and ``Normalize``, the per-example statistics loop
  (sort, ``.item()``, a dict of lists), evaluation, the statistics pickle
  (``bench_epoch.py --case mnist_baseline``).
* ``order_ours`` / ``order_baseline``: ``order_examples_by_forgetting.py`` over 5 statistics files
  of 60,000 examples x 200 epochs in the original's format (NumPy int64 ids, protocol 4, 'train'
  after the first minibatch), generated here first; the baseline is the original's per-example
  algorithm (:func:`example_forgetting.baseline.loop_forgetting_totals`: unpickle, one NumPy search
  per example, a Python sum over runs), run without torch, as the original script ran.

Usage (``OMP_NUM_THREADS=1`` as in the issue's measurements)::

    cd packages/example_forgetting
    OMP_NUM_THREADS=1 uv run python benchmarks/bench_scale.py --data_root ../../../shared/data [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
FILTER = ["dataset", "mnist", "no_dropout", "True", "sorting_file", "none", "remove_n", "0", "keep_lowest_n", "0"]


def measured(cmd: list[str], stop_after: str | None = None, timeout: float = 1800) -> dict:
    """Run ``cmd``; SIGTERM it once a stdout line matches ``stop_after``. Wall time, CPU time and
    max RSS of the process (``wait4``), and its stdout."""
    start = time.time()
    errors = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, cwd=PACKAGE, stdout=subprocess.PIPE, stderr=errors, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if stop_after and re.search(stop_after, line):
            proc.send_signal(signal.SIGTERM)
        if time.time() - start > timeout:
            proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    errors.seek(0)
    stderr = errors.read()
    if proc.returncode not in (0, 143):
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {stderr.strip().splitlines()[-3:]}")
    return {"wall_s": time.time() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024, "stdout": "".join(lines)}


def generate_stats_files(folder: Path, runs: int, n: int, epochs: int) -> None:
    """Statistics files as the original scripts wrote them (random accuracies, ~90 % correct)."""
    import numpy as np

    for seed in range(1, runs + 1):
        rng = np.random.RandomState(seed)
        order = rng.permutation(n)
        acc = (rng.rand(n, epochs) < rng.rand(n, 1) ** 0.05).astype(np.int64)
        loss = rng.rand(n, epochs).astype(np.float32).astype(np.float64)
        margin = rng.randn(n, epochs)
        stats: dict = {}
        for k, i in enumerate(order.tolist()):
            if k == 64:
                stats["train"] = [[], (100 * rng.rand(938 * epochs)).tolist()]
            stats[np.int64(i)] = [loss[i].tolist(), acc[i].tolist(), margin[i].tolist()]
        stats["test"] = [[], (100 * rng.rand(epochs)).tolist()]
        name = f"dataset_mnist__no_dropout_True__seed_{seed}__sorting_file_none__remove_n_0__keep_lowest_n_0__stats_dict.pkl"
        with open(folder / name, "wb") as f:
            pickle.dump(stats, f, protocol=4)  # Python 3.8+'s default protocol
        del stats


BASELINE_ORDER = """
import pickle, sys, numpy as np
from pathlib import Path
from example_forgetting.baseline import loop_forgetting_totals
folder, out, epochs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
paths = sorted(folder.glob("*stats_dict.pkl"))
ids, totals, unforgettable = loop_forgetting_totals(paths, epochs)
canonical = np.argsort(ids, kind="stable")
rank = np.empty(len(ids), dtype=np.int64)
rank[canonical] = np.random.RandomState(0).permutation(len(ids))
order = np.lexsort((rank, totals))
print(f"Number of unforgettable examples: {unforgettable}")
with open(out, "wb") as f:
    pickle.dump({"indices": ids[order], "forgetting counts": totals[order]}, f)
"""


COMPARE = """
import pickle, sys
a, b = (pickle.loads(open(p, "rb").read()) for p in sys.argv[1:3])
print(all(a[k].dtype == b[k].dtype and (a[k] == b[k]).all() for k in ("indices", "forgetting counts")))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_root", default=os.environ.get("FORGETTING_DATA"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--skip", nargs="*", default=[], choices=["mnist", "order"])
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--generate", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.generate:
        return generate_stats_files(Path(args.generate), args.runs, args.n, args.epochs)
    py = sys.executable
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {threads}, load average at start {os.getloadavg()[0]:.1f}")
    results: dict = {}
    work = Path(tempfile.mkdtemp(prefix="ef_bench_"))
    try:
        if "mnist" not in args.skip:
            if not args.data_root:
                sys.exit("the MNIST cases need --data_root or FORGETTING_DATA (full MNIST)")
            ours = measured([py, "run_mnist.py", "--dataset", "mnist", "--no_dropout", "--output_dir",
                             str(work / "mnist"), "--seed", "1", "--data_root", args.data_root, "--device", "cpu",
                             "--quiet", "--no_download"], stop_after=r"^\| Epoch 0/")
            epoch_s = float(re.search(r"\| Epoch 0/.*\(([\d.]+)s\)", ours["stdout"]).group(1))
            results["mnist_ours"] = {**ours, "seconds": epoch_s, "examples": 60000}
            base = measured([py, "benchmarks/bench_epoch.py", "--case", "mnist_baseline", "--data_root",
                             args.data_root, "--mnist_n", "60000", "--test_n", "10000"])
            results["mnist_baseline"] = {**base, "seconds": json.loads(base["stdout"].splitlines()[-1])["seconds"],
                                         "examples": 60000}
        if "order" not in args.skip:
            stats_dir = work / "stats"
            stats_dir.mkdir()
            t = time.time()
            # In a child: a forked process's max RSS starts at its parent's, so the parent stays small.
            subprocess.run([py, __file__, "--generate", str(stats_dir), "--runs", str(args.runs), "--n", str(args.n),
                            "--epochs", str(args.epochs)], check=True)
            size = sum(f.stat().st_size for f in stats_dir.iterdir()) / 2**20
            print(f"generated {args.runs} statistics files of {args.n} examples x {args.epochs} epochs "
                  f"({size:.0f} MiB) in {time.time() - t:.0f} s")
            ours = measured([py, "order_examples_by_forgetting.py", "--input_dir", str(stats_dir), "--output_dir",
                             str(work), "--output_name", "ours", "--input_fname_args", *FILTER, "--epochs",
                             str(args.epochs), "--no_plot", "--quiet"])
            base = measured([py, "-c", BASELINE_ORDER, str(stats_dir), str(work / "baseline.pkl"), str(args.epochs)])
            same = subprocess.run([py, "-c", COMPARE, str(work / "ours.pkl"), str(work / "baseline.pkl")],
                                  capture_output=True, text=True).stdout.strip() == "True"
            print(f"order outputs identical: {same}")
            for name, r in (("order_ours", ours), ("order_baseline", base)):
                results[name] = {**r, "seconds": r["wall_s"], "examples": args.runs * args.n}
            results["order_outputs_identical"] = same
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'case':<16}{'examples/s':>12}{'seconds':>9}{'CPU s':>8}{'peak MiB':>10}")
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:<16}{r['examples'] / r['seconds']:>12.0f}{r['seconds']:>9.1f}{r['cpu_s']:>8.1f}"
                  f"{r['peak_mib']:>10.0f}")
    for kind in ("mnist", "order"):
        a, b = results.get(f"{kind}_ours"), results.get(f"{kind}_baseline")
        if a and b:
            print(f"{kind}: {b['seconds'] / a['seconds']:.1f}x faster, peak memory {a['peak_mib'] / b['peak_mib']:.2f}x "
                  "the baseline's")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "stdout"}
                                                   if isinstance(v, dict) else v) for k, v in results.items()},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
