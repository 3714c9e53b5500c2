"""Writing the statistics pickle at the paper's scale: streamed pair by pair against the whole dict.

A recorder of ``--examples`` examples x ``--epochs`` epochs (random values; the cost does not depend
on them) is written twice, each in its own process so that the peak memory is its own:

* ``ours``: ``atomic_pickle_dict(recorder.items(), path)``, as ``run_mnist.py`` / ``run_cifar.py``
  write it after every epoch;
* ``baseline``: ``pickle.dump(recorder.to_dict(), f)``, the dict built whole first (what the
  original does, and this package did before).

Prints one JSON row per case (seconds to write, the process's peak RSS before and after writing)
and the ratios, and checks that both files load as the same dict.

    uv run python benchmarks/bench_pickle_write.py [--examples 60000] [--epochs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time


def write_once(case: str, examples: int, epochs: int, path: str) -> dict:
    import numpy as np
    import torch
    from example_forgetting.stats import StatsRecorder
    from forgetting_common.atomic import atomic_open, atomic_pickle_dict

    rec = StatsRecorder(np.arange(examples), epochs=epochs)
    g = torch.Generator().manual_seed(0)
    rec.loss.copy_(torch.rand(epochs, examples, generator=g))
    rec.margin.copy_(torch.rand(epochs, examples, generator=g, dtype=torch.float64))
    rec.acc.copy_(torch.rand(epochs, examples, generator=g) > 0.1)
    rec.completed, rec._open = epochs, epochs - 1
    rec.train_running = [99.0] * (epochs * ((examples + 127) // 128))
    rec.test_acc = [99.0] * epochs
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if case == "ours":
        atomic_pickle_dict(rec.items(), path)
    else:
        with atomic_open(path) as handle:
            pickle.dump(rec.to_dict(), handle, protocol=5)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "seconds": round(seconds, 2), "peak_mib_before": round(before), "peak_mib": round(after),
            "bytes": os.path.getsize(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--case", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.examples < 1 or args.epochs < 1:
        parser.error("--examples and --epochs must be at least 1")
    if args.case:
        print(json.dumps(write_once(args.case, args.examples, args.epochs, args.path)))
        return
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("ours", "baseline"):
            path = os.path.join(tmp, f"{case}.pkl")
            done = subprocess.run([sys.executable, __file__, "--case", case, "--path", path, "--examples",
                                   str(args.examples), "--epochs", str(args.epochs)],
                                  check=True, capture_output=True, text=True)
            rows[case] = json.loads(done.stdout)
            print(done.stdout.strip(), flush=True)
        with open(os.path.join(tmp, "ours.pkl"), "rb") as a, open(os.path.join(tmp, "baseline.pkl"), "rb") as b:
            same = pickle.load(a) == pickle.load(b)  # files this script wrote itself
    ours, base = rows["ours"], rows["baseline"]
    print(json.dumps({"examples": args.examples, "epochs": args.epochs, "same_dict": same,
                      "speedup": round(base["seconds"] / max(ours["seconds"], 1e-9), 2),
                      "added_mib_ours": ours["peak_mib"] - ours["peak_mib_before"],
                      "added_mib_baseline": base["peak_mib"] - base["peak_mib_before"],
                      "load_average": [round(v, 2) for v in os.getloadavg()]}))
    if not same:
        sys.exit("the two files do not load as the same dict")


if __name__ == "__main__":
    main()
