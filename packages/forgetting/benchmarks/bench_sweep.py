"""What the sweep machinery costs per run, beside a plain loop of subprocesses.

Both sides run the same N tiny scripts (each writes one JSON value) with the same N-at-a-time
pool; ours goes through ``LocalLauncher`` and ``execute_run`` (state files, stderr log, reading
the outputs, the finished marker), the baseline through ``subprocess.run`` alone. Each side runs in
its own process, so its peak memory (max RSS, from ``wait4``) is its own.

    uv run python benchmarks/bench_sweep.py [--runs 40] [--jobs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCRIPT = "import json, sys; open(sys.argv[2], 'w').write(json.dumps({'value': 7}))\n"


def plain(root: Path, runs: int, jobs: int) -> None:
    (root / "tiny.py").write_text(SCRIPT)

    def one(i: int) -> None:
        out = root / f"r{i}.json"
        subprocess.run([sys.executable, str(root / "tiny.py"), "--out", str(out)], check=True)
        json.loads(out.read_text())

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, range(runs)))


def ours(root: Path, runs: int, jobs: int) -> None:
    from forgetting import execute
    from forgetting.claims import Claim, Sweep, rule
    from forgetting.launch import LocalLauncher
    from forgetting.sweep import SweepDir

    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "tiny.py").write_text(SCRIPT.replace("sys.argv[2]", "sys.argv[2] + '/v.json'")
                                 .replace("import json, sys;", "import json, os, sys; os.makedirs(sys.argv[2], exist_ok=True);"))
    grid = lambda: [{"name": f"r{i}", "script": "tiny.py", "args": ["--out", "{out}"]} for i in range(runs)]  # noqa: E731
    read = lambda run, out: json.loads((out / "v.json").read_text())  # noqa: E731
    claim = Claim(id="bench.c", paper="bench", statement="s", source="-", paper_value="7",
                  verdict=rule(("within", "value", 7, 0)),
                  sweep=Sweep(id="bench.s", package_dir=pkg, grids={"smoke": grid}, read=read, resume_args=()),
                  measure=lambda v: {"value": 7})
    execute.find = lambda cid: claim  # in this benchmark process only
    sd = SweepDir(root / "sweep")
    sd.create_or_check(claim, "smoke", claim.sweep.runs("smoke"), "")
    states: list[str] = []
    LocalLauncher(jobs=jobs).launch(sd, [r.name for r in claim.sweep.runs("smoke")], lambda n, s: states.append(s))
    assert states.count("finished") == runs, states


def child(kind: str, runs: int, jobs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        (ours if kind == "ours" else plain)(Path(tmp), runs, jobs)
        print(json.dumps({"seconds": time.perf_counter() - start}))


def measure(kind: str, runs: int, jobs: int) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, "--runs", str(runs), "--jobs", str(jobs)],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"bench_sweep.py: the {kind} side failed (status {status})")
    seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
    return {"seconds": seconds, "runs_per_s": runs / seconds, "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--child", choices=["ours", "plain"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.runs < 1 or a.jobs < 1:
        p.error("--runs and --jobs must be at least 1")
    if a.child:
        child(a.child, a.runs, a.jobs)
        return
    base, mine = measure("plain", a.runs, a.jobs), measure("ours", a.runs, a.jobs)
    overhead_ms = (mine["seconds"] - base["seconds"]) / a.runs * 1000 * a.jobs
    print(f"{a.runs} tiny runs, {a.jobs} at a time; load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':34s} {'runs/s':>8s} {'seconds':>8s} {'peak MiB':>9s}")
    print(f"{'plain subprocess loop':34s} {base['runs_per_s']:8.2f} {base['seconds']:8.2f} {base['peak_mib']:9.0f}")
    print(f"{'LocalLauncher + execute_run':34s} {mine['runs_per_s']:8.2f} {mine['seconds']:8.2f} {mine['peak_mib']:9.0f}")
    print(f"ratio (ours / plain, runs/s): {mine['runs_per_s'] / base['runs_per_s']:.2f}; "
          f"overhead per run: {overhead_ms:.0f} ms of a slot")
    if a.json:
        rows = [{"case": "sweep of tiny runs (LocalLauncher vs subprocess loop)", "ours": mine["runs_per_s"],
                 "baseline": base["runs_per_s"], "unit": "runs/s", "peak_mib": mine["peak_mib"],
                 "baseline_peak_mib": base["peak_mib"]}]
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
